//! The `r1serve` command line.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "r1serve", version, about = "Inference engine and OpenAI-compatible server for the DeepSeek-R1 family")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
