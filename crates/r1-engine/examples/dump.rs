use r1_engine::session::Session;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (_, m) = r1_model::load_gguf(args[1].as_ref(), 2, &mut |_, _| {}).unwrap();
    let ids: Vec<u32> = args[2].split(',').map(|x| x.parse().unwrap()).collect();
    let mut s = Session::new(m.as_ref(), 256);
    let l = s.feed(&ids, 512).unwrap();
    let (_, top) = r1_engine::sampler::logprobs(&l, 0, 5);
    println!("{top:?}");
}
