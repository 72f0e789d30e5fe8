//! The `r1serve` command line.

use clap::{Parser, Subcommand};

mod pull;

#[derive(Parser)]
#[command(
    name = "r1serve",
    version,
    about = "Inference engine and OpenAI-compatible server for the DeepSeek-R1 family"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model from the Hugging Face hub (or a mirror set by HF_ENDPOINT).
    Pull(pull::PullArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pull(args) => pull::run(&args),
    }
}
