//! The `r1serve` command line.

use clap::{Parser, Subcommand};

mod bench;
mod bench_offline;
mod bench_serve;
mod bench_serve_report;
mod generate;
mod inspect;
mod keys;
mod load;
mod observability;
mod perplexity;
mod perplexity_kld;
mod pull;
mod quantize;
mod quantize_ftype;
mod quantize_hf;
mod quantize_imatrix;
mod quantize_mix;
mod serve;
mod serve_overload;
mod serve_security;

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
    /// Highest instruction set the kernels may use (default: the best this CPU has). Results
    /// are the same at every level; lower ones are slower (for tests and comparisons).
    #[arg(long, global = true, value_enum, env = "R1SERVE_ISA")]
    isa: Option<IsaCap>,
}

/// The `--isa` levels, named as `R1SERVE_ISA` takes them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum IsaCap {
    Scalar,
    Avx2,
    Avx512,
    /// ARM NEON (aarch64 only; the `sdot` kernels where the CPU has them).
    Neon,
}

/// Cap the kernels' ISA before anything asks for it (the kernels read `R1SERVE_ISA` once),
/// and say which one runs.
fn apply_isa_cap(cap: Option<IsaCap>) {
    use r1_model::quant::Isa;
    if let Some(cap) = cap {
        let name = match cap {
            IsaCap::Scalar => "scalar",
            IsaCap::Avx2 => "avx2",
            IsaCap::Avx512 => "avx512",
            IsaCap::Neon => "neon",
        };
        // Single-threaded here: no thread has started yet.
        std::env::set_var("R1SERVE_ISA", name);
    }
    let best = Isa::best();
    tracing::debug!(isa = ?best, available = ?Isa::available(), "kernel instruction set");
    let asked = match cap {
        Some(IsaCap::Avx512) => Some(Isa::Avx512),
        Some(IsaCap::Avx2) => Some(Isa::Avx2),
        #[cfg(target_arch = "aarch64")]
        Some(IsaCap::Neon) => Some(Isa::Neon),
        #[cfg(not(target_arch = "aarch64"))]
        Some(IsaCap::Neon) => {
            tracing::warn!(running = ?best, "--isa neon: this is not an ARM CPU");
            None
        }
        _ => None,
    };
    if let Some(asked) = asked.filter(|&a| a != best) {
        tracing::warn!(asked = ?asked, running = ?best, "--isa: this CPU lacks the asked instruction set");
    }
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
    Serve(Box<serve::ServeArgs>),
    /// Manage API keys: add (prints the key once), list, revoke.
    Keys(keys::KeysArgs),
    /// Quantize a GGUF model, or a Hugging Face directory (BF16/FP16/FP32/FP8), to a GGUF
    /// of another type (llama-quantize's types, mixes and bytes).
    Quantize(quantize::QuantizeArgs),
    /// Perplexity of a model on a text, and KL divergence against saved log-probabilities
    /// (as llama-perplexity).
    Perplexity(perplexity::PerplexityArgs),
}

fn main() {
    // `r1serve bench serve` talks to a server and needs no model, while `bench`'s own flags
    // require one: it has its own parser.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() > 2 && argv[1] == "bench" && argv[2] == "serve" {
        #[cfg(unix)]
        // SAFETY: as below, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        if let Err(e) = bench_serve::main(argv[3..].to_vec()) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let cli = Cli::parse();
    observability::init_logging(cli.log_format);
    apply_isa_cap(cli.isa);
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
        Command::Keys(a) => keys::run(&a),
        Command::Quantize(a) => quantize::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
