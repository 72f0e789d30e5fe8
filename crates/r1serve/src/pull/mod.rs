//! `r1serve pull`: download a model repository from the Hugging Face hub (or a mirror named by
//! `HF_ENDPOINT`) into the standard HF cache, or into a plain directory with `--dir`.
//!
//! Transfers go through the `hf-hub` crate (sync API, ureq): it writes each file to
//! `blobs/<etag>.part`, resumes an existing `.part` with a `Range` request, renames it to
//! `blobs/<etag>` only once complete, and links `snapshots/<commit>/<file>` to the blob, so a killed
//! download never leaves a half-written file where a model loader would look. On top of that this
//! module lists the repo (`/api/models/{repo}/revision/{rev}?blobs=true`), picks the files, skips
//! those already in the snapshot, and verifies every downloaded file against the size and hash the
//! hub lists (sha256 for LFS files, the git blob sha1 for the rest); a mismatching copy is deleted.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use r1_model::gguf::split::{parse_split_name, split_file_name};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

mod download;
mod errors;
mod select;
mod verify;

use download::*;
use errors::*;
use select::*;
use verify::*;

/// Files fetched when neither `--include` nor `--file` is given (top-level files only).
const DEFAULT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "*.safetensors",
];

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(clap::Args, Debug, Clone)]
pub struct PullArgs {
    /// Repository id, e.g. `deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`.
    pub repo: String,

    /// Branch, tag or commit to download.
    #[arg(long, default_value = "main")]
    pub revision: String,

    /// Download the files matching this glob (`*` and `?`; repeatable), e.g. `--include '*Q4_K_M.gguf'`.
    /// Default: config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
    /// model.safetensors.index.json and *.safetensors.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,

    /// Download this exact file (repeatable), e.g. `--file model-Q4_K_M.gguf`.
    #[arg(long = "file", value_name = "NAME")]
    pub files: Vec<String>,

    /// Put plain files into DIR (DIR/<file>) instead of the HF cache ($HF_HOME/hub); the
    /// download bookkeeping (blobs, partial files) lives in DIR/.cache/huggingface.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Re-hash files that are already present instead of trusting their size.
    #[arg(long)]
    pub verify: bool,
}

/// `GET /api/models/{repo}/revision/{rev}?blobs=true`, the fields we use.
#[derive(Deserialize, Debug)]
struct RepoListing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize, Debug, Clone)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize, Debug, Clone)]
struct Lfs {
    sha256: String,
    #[serde(default)]
    size: Option<u64>,
}

impl Sibling {
    fn expected_size(&self) -> Option<u64> {
        self.lfs.as_ref().and_then(|l| l.size).or(self.size)
    }
}

/// Where things go, what to send.
struct Setup {
    endpoint: String,
    cache_dir: PathBuf,
    token: Option<String>,
}

pub fn run(args: &PullArgs) -> Result<()> {
    check_repo_id(&args.repo)?;
    if args.revision.is_empty() || args.revision.contains("..") {
        bail!("invalid revision {:?}", args.revision);
    }
    let setup = setup(args)?;
    let repo_desc = format!("{}@{}", args.repo, args.revision);

    let api = ApiBuilder::from_cache(Cache::new(setup.cache_dir.clone()))
        .with_endpoint(setup.endpoint.clone())
        .with_token(setup.token.clone())
        .with_progress(false)
        .with_retries(3)
        .with_user_agent("r1serve", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| anyhow!("pull {repo_desc}: cannot set up the HTTP client: {e}"))?;
    let repo = Repo::with_revision(args.repo.clone(), RepoType::Model, args.revision.clone());
    let folder = setup.cache_dir.join(repo.folder_name());
    let api_repo = api.repo(repo);

    let listing = list_repo(&api_repo, args, &setup)?;
    if !is_safe_component(&listing.sha) {
        bail!(
            "pull {repo_desc}: the hub at {} answered an unusable commit id {:?}",
            setup.endpoint,
            listing.sha
        );
    }
    let selected = select_files(args, &listing)?;
    let snapshot = folder.join("snapshots").join(&listing.sha);

    let total: u64 = selected.iter().filter_map(|s| s.expected_size()).sum();
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let dest_desc = match &args.dir {
        Some(d) => d.display().to_string(),
        None => setup.cache_dir.display().to_string(),
    };
    say(
        &mp,
        format!(
            "pulling {} file{} ({}) from {repo_desc} (commit {}) into {dest_desc}",
            selected.len(),
            if selected.len() == 1 { "" } else { "s" },
            HumanBytes(total),
            short(&listing.sha),
        ),
    );

    let mut outputs = Vec::with_capacity(selected.len());
    for sib in &selected {
        let pointer = snapshot.join(&sib.rfilename);
        let present = pointer.exists() && {
            match check_file(&pointer, sib, args.verify, &mp) {
                Ok(()) => true,
                Err(e) => {
                    say(
                        &mp,
                        format!(
                            "{}: cached copy is bad ({e}); downloading again",
                            sib.rfilename
                        ),
                    );
                    remove_cached(&pointer);
                    false
                }
            }
        };
        if present {
            say(&mp, format!("{}: already present", sib.rfilename));
        } else {
            fetch_verified(
                &api_repo,
                sib,
                &pointer,
                &mp,
                &args.repo,
                &args.revision,
                &setup,
            )?;
            say(
                &mp,
                format!(
                    "{}: downloaded{}",
                    sib.rfilename,
                    sib.expected_size()
                        .map(|s| format!(" ({})", HumanBytes(s)))
                        .unwrap_or_default()
                ),
            );
        }
        let out = match &args.dir {
            Some(dir) => {
                let dest = absolute(dir)?.join(&sib.rfilename);
                link_into(&pointer, &dest).with_context(|| {
                    format!(
                        "pull {repo_desc}: placing {} into {}",
                        sib.rfilename,
                        dir.display()
                    )
                })?;
                dest
            }
            None => pointer,
        };
        outputs.push(out);
    }

    // One file, or the parts of one split model: print the file to load (handy for
    // `--file x.gguf`); else the directory.
    let printed = if outputs.len() == 1 {
        outputs.pop().unwrap()
    } else if let Some(i) = first_part_of_one_split(&selected) {
        outputs.swap_remove(i)
    } else {
        match &args.dir {
            Some(dir) => absolute(dir)?,
            None => snapshot,
        }
    };
    println!("{}", printed.display());
    Ok(())
}

/// Reads the environment: endpoint, cache location (absolute: hf-hub requires it), token.
fn setup(args: &PullArgs) -> Result<Setup> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("HF_ENDPOINT={endpoint:?} is not an http:// or https:// URL");
    }
    let hf_home = hf_home()?;
    let cache_dir = match &args.dir {
        Some(dir) => absolute(dir)?
            .join(".cache")
            .join("huggingface")
            .join("hub"),
        None => match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            Some(c) => absolute(Path::new(&c))?,
            None => hf_home.join("hub"),
        },
    };
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create the download cache {}", cache_dir.display()))?;
    let token = match std::env::var("HF_TOKEN").ok().map(|t| t.trim().to_string()) {
        Some(t) if !t.is_empty() => Some(t),
        _ => std::fs::read_to_string(hf_home.join("token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    };
    Ok(Setup {
        endpoint,
        cache_dir,
        token,
    })
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (as huggingface_hub).
fn hf_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return absolute(Path::new(&h));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(absolute(Path::new(&x))?.join("huggingface"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(absolute(Path::new(&home))?
            .join(".cache")
            .join("huggingface")),
        None => bail!("cannot find the HF cache: set HF_HOME (or HOME), or use --dir DIR"),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve the path {}", p.display()))
}

fn check_repo_id(repo: &str) -> Result<()> {
    let ok = !repo.is_empty()
        && repo.len() <= 200
        && repo.split('/').count() <= 2
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if !ok {
        bail!(
            "invalid repository id {repo:?}: expected NAME or OWNER/NAME \
             (letters, digits, '-', '_', '.'), e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
        );
    }
    Ok(())
}

fn is_safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A repo file name we are willing to write below a directory: relative, no `..`, no `\`.
fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn say(mp: &MultiProgress, msg: String) {
    mp.suspend(|| eprintln!("{msg}"));
}

fn list_repo(api_repo: &ApiRepo, args: &PullArgs, setup: &Setup) -> Result<RepoListing> {
    let what = format!("{}@{}", args.repo, args.revision);
    let response = api_repo
        .info_request()
        .query("blobs", "true")
        .call()
        .map_err(|e| describe_ureq(e, &args.repo, &args.revision, setup, None))?;
    let mut body = String::new();
    response
        .into_reader()
        .take(256 << 20)
        .read_to_string(&mut body)
        .map_err(|e| {
            anyhow!(
                "pull {what}: reading the file list from {}: {e}",
                setup.endpoint
            )
        })?;
    serde_json::from_str(&body).map_err(|e| {
        anyhow!(
            "pull {what}: the hub at {} sent a file list that is not the expected JSON ({e})",
            setup.endpoint
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("*.gguf", "sub/x.gguf"));
        assert!(glob_match("*Q4_K_M.gguf", "DeepSeek-R1-Q4_K_M.gguf"));
        assert!(!glob_match("*Q4_K_M.gguf", "DeepSeek-R1-Q8_0.gguf"));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "xconfig.json"));
        assert!(glob_match("m?del*", "model.bin"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        assert!(glob_match(
            "model-0000[12]-of-*",
            "model-00002-of-00002.safetensors"
        ));
        assert!(glob_match("[bad", "[bad"));
    }

    #[test]
    fn names() {
        assert!(check_repo_id("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").is_ok());
        assert!(check_repo_id("gpt2").is_ok());
        assert!(check_repo_id("a/b/c").is_err());
        assert!(check_repo_id("../x").is_err());
        assert!(check_repo_id("a b").is_err());
        assert!(is_safe_file_name("sub/dir/x.gguf"));
        assert!(!is_safe_file_name("../x"));
        assert!(!is_safe_file_name("/etc/passwd"));
        assert!(!is_safe_file_name("a/../../b"));
    }
}
