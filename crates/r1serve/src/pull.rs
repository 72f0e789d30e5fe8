//! `r1serve pull` (being written).

#[derive(clap::Args)]
pub struct PullArgs {
    /// Repository id, e.g. `deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`.
    pub repo: String,
}

pub fn run(args: &PullArgs) -> anyhow::Result<()> {
    anyhow::bail!("pull {}: not implemented yet", args.repo)
}
