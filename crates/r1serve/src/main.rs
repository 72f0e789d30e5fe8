//! The `r1serve` command line.

use clap::{Parser, Subcommand};

mod bench;
mod bench_offline;
mod generate;
mod inspect;
mod load;
mod observability;
mod pull;
mod serve;

#[derive(Parser)]
#[command(
    name = "r1serve",
    version,
    about = "Inference engine and OpenAI-compatible server for the DeepSeek-R1 family"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr: text, or json (one object per line, with request ids).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: observability::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a completion for one prompt, streamed to stdout.
    Run(generate::RunArgs),
    /// Interactive multi-turn chat using the model's chat template.
    Chat(generate::ChatArgs),
    /// Print what a model file holds: architecture, sizes, quant types, tokenizer, template.
    Inspect(inspect::InspectArgs),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(bench::BenchArgs),
    /// Download a model from the Hugging Face hub (or a mirror set by HF_ENDPOINT).
    Pull(pull::PullArgs),
    /// Serve the OpenAI/DeepSeek-compatible HTTP API
    Serve(serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    observability::init_logging(cli.log_format);
    if !matches!(cli.command, Command::Serve(_)) {
        // Terminal commands end quietly when their output pipe closes (`| head`), as Unix
        // tools do; Rust ignores SIGPIPE by default and println! would panic instead.
        #[cfg(unix)]
        // SAFETY: restoring the default disposition of a signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run(a) => generate::run(&a),
        Command::Chat(a) => generate::chat(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Pull(a) => pull::run(&a),
        Command::Serve(a) => serve::run(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
