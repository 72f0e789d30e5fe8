//! Debug tool: run token ids through a GGUF model and print the top-5 next-token logprobs.
//! With `R1SERVE_DUMP_DIR=DIR` every layer's intermediate tensors are written there, named as
//! llama.cpp's graph names them, for comparison with llama.cpp's eval-callback output.
//!
//!   cargo run --release -p r1-engine --example dump -- models/smollm2.gguf 1604,3987,46477
use r1_engine::session::Session;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: dump MODEL.gguf ID,ID,...".into());
    }
    let (_, m) = r1_model::load_gguf(args[1].as_ref(), 2, &mut |_, _| {})?;
    let ids = args[2]
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut s = Session::new(m.as_ref(), ids.len() + 1);
    let l = s.feed(&ids, 512)?;
    let (_, top) = r1_engine::sampler::logprobs(&l, 0, 5);
    println!("{top:?}");
    Ok(())
}
