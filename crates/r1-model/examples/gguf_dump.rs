fn main() {
    let p = std::env::args().nth(1).unwrap();
    let f = r1_model::gguf::GgufFile::open(&p).unwrap();
    for (k, v) in f.metadata() {
        let s = format!("{v:?}");
        println!("{k} = {}", &s[..s.len().min(200)]);
    }
    for t in f.tensors().iter().take(20) {
        println!("{} {} {:?}", t.name, t.ty, t.dims);
    }
}
