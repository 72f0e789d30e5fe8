use r1_engine::session::Session;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = &args[1];
    let pi: usize = args[2].parse().unwrap();
    let (_, m) =
        r1_model::load_gguf(format!("models/{name}.gguf").as_ref(), 2, &mut |_, _| {}).unwrap();
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("../shared/fixtures/llamacpp/{name}.json")).unwrap(),
    )
    .unwrap();
    let r = &fx["results"][pi];
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect::<Vec<_>>()
    };
    let prompt = ids(&r["prompt_token_ids_no_special"]);
    let gen = ids(&r["generated_token_ids"]);
    let mut seq = prompt.clone();
    seq.extend_from_slice(&gen[..gen.len() - 1]);
    let mut s = Session::new(m.as_ref(), 256);
    let all = s.feed_all_logits(&seq, 512, true).unwrap();
    for step in 0..gen.len() {
        let l = &all[prompt.len() - 1 + step];
        let (_, top) = r1_engine::sampler::logprobs(l, 0, 3);
        let st = &r["steps"][step]["top5"];
        println!(
            "step {step}: ours {:?} | llama {:?}",
            top.iter()
                .map(|(i, p)| format!("{i}:{p:.4}"))
                .collect::<Vec<_>>(),
            (0..3)
                .map(|j| format!("{}:{:.4}", st[j]["id"], st[j]["logprob"].as_f64().unwrap()))
                .collect::<Vec<_>>()
        );
    }
}
