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

fn select_files(args: &PullArgs, listing: &RepoListing) -> Result<Vec<Sibling>> {
    let what = format!("{}@{}", args.repo, args.revision);
    let names = || {
        let mut all: Vec<&str> = listing
            .siblings
            .iter()
            .map(|s| s.rfilename.as_str())
            .collect();
        all.sort();
        let n = all.len();
        let mut s = all.into_iter().take(20).collect::<Vec<_>>().join(", ");
        if n > 20 {
            s.push_str(&format!(", … ({} more)", n - 20));
        }
        if s.is_empty() {
            s = "no files at all".into();
        }
        s
    };
    let mut chosen: Vec<Sibling> = Vec::new();
    fn take(chosen: &mut Vec<Sibling>, s: &Sibling) {
        if !chosen.iter().any(|c| c.rfilename == s.rfilename) {
            chosen.push(s.clone());
        }
    }

    if args.files.is_empty() && args.include.is_empty() {
        for s in &listing.siblings {
            let top_level = !s.rfilename.contains('/');
            if top_level && DEFAULT_FILES.iter().any(|p| glob_match(p, &s.rfilename)) {
                take(&mut chosen, s);
            }
        }
        let has_weights = chosen.iter().any(|s| s.rfilename.ends_with(".safetensors"));
        if !has_weights {
            let ggufs: Vec<&str> = listing
                .siblings
                .iter()
                .map(|s| s.rfilename.as_str())
                .filter(|n| n.ends_with(".gguf"))
                .collect();
            if !ggufs.is_empty() {
                let list: Vec<&str> = ggufs.iter().take(12).copied().collect();
                bail!(
                    "{what} has no *.safetensors weights but {} GGUF file{} ({}{}); \
                     pick one with --file NAME or --include GLOB",
                    ggufs.len(),
                    if ggufs.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    if ggufs.len() > 12 { ", …" } else { "" }
                );
            }
            bail!(
                "{what} has no *.safetensors or *.gguf weights (files: {}); \
                 choose files with --include GLOB or --file NAME",
                names()
            );
        }
    } else {
        for f in &args.files {
            match listing.siblings.iter().find(|s| &s.rfilename == f) {
                Some(s) => take(&mut chosen, s),
                None => bail!("{what} has no file {f:?} (files: {})", names()),
            }
        }
        for pat in &args.include {
            let before = chosen.len();
            let mut matched = false;
            for s in &listing.siblings {
                if glob_match(pat, &s.rfilename) {
                    matched = true;
                    take(&mut chosen, s);
                }
            }
            if !matched && chosen.len() == before {
                bail!(
                    "no file in {what} matches --include {pat:?} (files: {})",
                    names()
                );
            }
        }
    }
    // A model split by llama.cpp's gguf-split is useless without all its parts: asking for
    // one of them (`--file X-00001-of-00003.gguf`, or a glob matching it) fetches them all.
    let splits: Vec<(String, u16)> = chosen
        .iter()
        .filter_map(|s| parse_split_name(&s.rfilename))
        .filter(|&(_, _, count)| count > 1)
        .map(|(prefix, _, count)| (prefix.to_string(), count))
        .collect();
    for (prefix, count) in splits {
        for no in 1..=count {
            let name = split_file_name(&prefix, no, count);
            match listing.siblings.iter().find(|s| s.rfilename == name) {
                Some(s) => take(&mut chosen, s),
                None => bail!(
                    "{what} has no {name}: the split model {} needs all {count} parts",
                    split_file_name(&prefix, 1, count)
                ),
            }
        }
    }
    for s in &chosen {
        if !is_safe_file_name(&s.rfilename) {
            bail!(
                "{what}: refusing to write the file name {:?} (absolute or contains '..')",
                s.rfilename
            );
        }
    }
    Ok(chosen)
}

/// Where `files` are exactly the parts of one split model, the index of its first part.
fn first_part_of_one_split(files: &[Sibling]) -> Option<usize> {
    let names: Vec<(&str, u16, u16)> = files
        .iter()
        .map(|s| parse_split_name(&s.rfilename))
        .collect::<Option<_>>()?;
    let (prefix, _, count) = *names.first()?;
    let same = names.iter().all(|&(p, _, c)| p == prefix && c == count);
    (same && names.len() == usize::from(count))
        .then(|| names.iter().position(|&(_, no, _)| no == 1))
        .flatten()
}

/// fnmatch-style glob as huggingface_hub uses it (`globset`): `*` matches any run (including
/// `/`), `?` one character, `[...]` a class, everything else itself. A pattern globset
/// cannot read matches only the name spelled the same.
fn glob_match(pattern: &str, name: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(pattern == name)
}

/// Downloads one file through hf-hub and verifies it; on a bad copy, deletes it and tries once more.
fn fetch_verified(
    api_repo: &ApiRepo,
    sib: &Sibling,
    pointer: &Path,
    mp: &MultiProgress,
    repo: &str,
    revision: &str,
    setup: &Setup,
) -> Result<()> {
    let what = format!("{repo}@{revision}");
    let mut last_err = None;
    for attempt in 0..2 {
        let got = download_once(api_repo, sib, mp, repo, revision, setup)?;
        if got != pointer {
            remove_cached(&got);
            bail!(
                "pull {what}: the revision moved while downloading {} (now at {}); run the pull again",
                sib.rfilename,
                got.display()
            );
        }
        match check_file(pointer, sib, true, mp) {
            Ok(()) => return Ok(()),
            Err(e) => {
                remove_cached(pointer);
                if attempt == 0 {
                    say(
                        mp,
                        format!("{}: {e}; deleted it, downloading again", sib.rfilename),
                    );
                }
                last_err = Some(e);
            }
        }
    }
    Err(anyhow!(
        "pull {what}: {} failed verification twice: {}; the bad copy was deleted",
        sib.rfilename,
        last_err.expect("two attempts failed")
    ))
}

/// One hf-hub download with a progress bar. hf-hub's own internal assertions become errors.
fn download_once(
    api_repo: &ApiRepo,
    sib: &Sibling,
    mp: &MultiProgress,
    repo: &str,
    revision: &str,
    setup: &Setup,
) -> Result<PathBuf> {
    let what = format!("{repo}@{revision}");
    let mut cleared_bad_part = false;
    if let Some(len) = part_path(setup, repo, sib)
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .filter(|&l| l > 0)
    {
        say(
            mp,
            format!(
                "{}: resuming a partial download at {}",
                sib.rfilename,
                HumanBytes(len)
            ),
        );
    }
    loop {
        let pb = mp.add(ProgressBar::new(sib.expected_size().unwrap_or(0)));
        pb.set_style(ProgressStyle::default_bar());
        let prev_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            api_repo.download_with_progress(&sib.rfilename, pb.clone())
        }));
        std::panic::set_hook(prev_hook);
        pb.finish_and_clear();
        mp.remove(&pb);
        match res {
            Ok(Ok(path)) => return Ok(path),
            Ok(Err(ApiError::InvalidResume)) if !cleared_bad_part => {
                // A `.part` longer than the file: it cannot be resumed; start it over.
                if let Some(part) = part_path(setup, repo, sib) {
                    let _ = std::fs::remove_file(part);
                }
                cleared_bad_part = true;
            }
            Ok(Err(e)) => return Err(describe_api_error(e, repo, revision, setup, &sib.rfilename)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown failure".into());
                bail!(
                    "pull {what}: downloading {} from {} failed inside hf-hub: {msg}",
                    sib.rfilename,
                    setup.endpoint
                );
            }
        }
    }
}

/// Where hf-hub keeps the partial download of `sib`: `blobs/<etag>.part`, the etag being the
/// sha256 for LFS files and the git blob id for the rest.
fn part_path(setup: &Setup, repo: &str, sib: &Sibling) -> Option<PathBuf> {
    let etag = match (&sib.lfs, &sib.blob_id) {
        (Some(lfs), _) => lfs.sha256.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => return None,
    };
    if !is_safe_component(&etag) {
        return None;
    }
    Some(
        setup
            .cache_dir
            .join(Repo::model(repo.to_string()).folder_name())
            .join("blobs")
            .join(format!("{etag}.part")),
    )
}

fn describe_api_error(
    e: ApiError,
    repo: &str,
    revision: &str,
    setup: &Setup,
    file: &str,
) -> anyhow::Error {
    let what = format!("{repo}@{revision}");
    match e {
        ApiError::RequestError(err) => describe_ureq(*err, repo, revision, setup, Some(file)),
        ApiError::TooManyRetries(inner) => {
            let cause = describe_api_error(*inner, repo, revision, setup, file);
            anyhow!(
                "{cause}; gave up after 3 retries; run the pull again to resume from the partial file"
            )
        }
        ApiError::MissingHeader(h) => anyhow!(
            "pull {what}: {} sent no `{h}` header for {file}; is HF_ENDPOINT a Hugging Face hub?",
            setup.endpoint
        ),
        ApiError::InvalidHeader(h) => anyhow!(
            "pull {what}: {} sent an invalid `{h}` header for {file}",
            setup.endpoint
        ),
        ApiError::ParseIntError(e) => anyhow!(
            "pull {what}: {} sent an unparsable file size for {file}: {e}",
            setup.endpoint
        ),
        ApiError::IoError(e) if is_network_io(&e) => anyhow!(
            "pull {what}: the connection to {} broke while downloading {file}: {e}",
            setup.endpoint
        ),
        ApiError::IoError(e) => anyhow!(
            "pull {what}: saving {file} under {}: {e}",
            setup.cache_dir.display()
        ),
        ApiError::LockAcquisition(p) => anyhow!(
            "pull {what}: another process is downloading {file} (lock {} is held); wait and retry",
            p.display()
        ),
        ApiError::InvalidResume => anyhow!(
            "pull {what}: the partial download of {file} cannot be resumed; delete the *.part files under {}",
            setup.cache_dir.display()
        ),
        #[allow(unreachable_patterns)] // variants behind hf-hub features (native-tls)
        other => anyhow!("pull {what}: downloading {file}: {other}"),
    }
}

fn is_network_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | Interrupted
    ) || e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
}

/// Turns an HTTP failure into a message naming the repo (and file) and what to do about it.
fn describe_ureq(
    err: ureq::Error,
    repo: &str,
    revision: &str,
    setup: &Setup,
    file: Option<&str>,
) -> anyhow::Error {
    let what = format!("{repo}@{revision}");
    let endpoint = &setup.endpoint;
    let target = match file {
        Some(f) => format!("{f} from {what}"),
        None => format!("the file list of {what}"),
    };
    match err {
        ureq::Error::Status(code, resp) => {
            let ecode = resp.header("x-error-code").unwrap_or("").to_string();
            let emsg = resp.header("x-error-message").unwrap_or("").to_string();
            let detail = if emsg.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {emsg}")
            };
            match (code, ecode.as_str()) {
                (_, "GatedRepo") => anyhow!(
                    "repository {repo} is gated ({detail}): accept its terms at {endpoint}/{repo} \
                     and set HF_TOKEN to a token of that account"
                ),
                (_, "RevisionNotFound") => {
                    anyhow!(
                        "revision {} not found in repository {repo} ({detail})",
                        revision
                    )
                }
                (_, "EntryNotFound") => anyhow!(
                    "file {} not found in repository {repo} at {} ({detail})",
                    file.unwrap_or("?"),
                    revision
                ),
                (404, _)
                    if file.is_none()
                        || ecode == "RepoNotFound"
                        || ecode == "RepositoryNotFound" =>
                {
                    anyhow!("repository {repo} not found at {endpoint} ({detail})")
                }
                (404, _) => anyhow!(
                    "file {} not found in repository {repo} at {} ({detail})",
                    file.unwrap_or("?"),
                    revision
                ),
                (401 | 403, _) if setup.token.is_some() => anyhow!(
                    "access to repository {repo} denied ({detail}): it does not exist or \
                     your HF_TOKEN cannot read it"
                ),
                (401 | 403, _) => anyhow!(
                    "repository {repo} not found, or it is private or gated ({detail}): \
                     check the name, or set HF_TOKEN to a token that can read it"
                ),
                (429, _) => anyhow!(
                    "{endpoint} is rate-limiting requests for {target} ({detail}); wait and retry, \
                     or set HF_TOKEN"
                ),
                (500..=599, _) => {
                    anyhow!("{endpoint} failed while serving {target} ({detail}); try again later")
                }
                _ => anyhow!("fetching {target}: {endpoint} answered {detail}"),
            }
        }
        ureq::Error::Transport(t) => anyhow!(
            "cannot reach {endpoint} while fetching {target}: {t} \
             (check the network, a proxy, or HF_ENDPOINT)"
        ),
    }
}

/// Checks a present file against the listing: size always, hash when `hash` is set.
fn check_file(path: &Path, sib: &Sibling, hash: bool, mp: &MultiProgress) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(want) = sib.expected_size() {
        if meta.len() != want {
            bail!(
                "size mismatch: {} bytes on disk, the hub lists {want}",
                meta.len()
            );
        }
    }
    if !hash {
        return Ok(());
    }
    let (kind, want) = match (&sib.lfs, &sib.blob_id) {
        (Some(lfs), _) => ("sha256", lfs.sha256.to_ascii_lowercase()),
        (None, Some(id)) => ("git sha1", id.to_ascii_lowercase()),
        (None, None) => return Ok(()),
    };
    let pb = mp.add(ProgressBar::new(meta.len()));
    pb.set_style(
        ProgressStyle::with_template("verifying {msg} [{wide_bar}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(sib.rfilename.clone());
    let got = hash_file(path, kind == "sha256", meta.len(), &pb);
    pb.finish_and_clear();
    mp.remove(&pb);
    let got = got?;
    if got != want {
        bail!("{kind} mismatch: got {got}, the hub lists {want}");
    }
    Ok(())
}

fn hash_file(path: &Path, sha256: bool, len: u64, pb: &ProgressBar) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h256 = Sha256::new();
    let mut h1 = Sha1::new();
    if !sha256 {
        h1.update(format!("blob {len}\0").as_bytes());
    }
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if sha256 {
            h256.update(&buf[..n]);
        } else {
            h1.update(&buf[..n]);
        }
        pb.inc(n as u64);
    }
    Ok(if sha256 {
        hex(&h256.finalize())
    } else {
        hex(&h1.finalize())
    })
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Deletes a snapshot entry and the blob it points to.
fn remove_cached(pointer: &Path) {
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        if blob != pointer {
            let _ = std::fs::remove_file(&blob);
        }
    }
    let _ = std::fs::remove_file(pointer);
}

/// Places the cached file at `dest` (hard link, else copy), via a temporary name and a rename.
fn link_into(cached: &Path, dest: &Path) -> Result<()> {
    let blob =
        std::fs::canonicalize(cached).with_context(|| format!("resolving {}", cached.display()))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if same_file(&blob, dest) {
        return Ok(());
    }
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".r1serve-part");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&blob, &tmp).is_err() {
        std::fs::copy(&blob, &tmp).with_context(|| {
            let _ = std::fs::remove_file(&tmp);
            format!("copying {} to {}", blob.display(), tmp.display())
        })?;
    }
    std::fs::rename(&tmp, dest).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), dest.display())
    })
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_a: &Path, _b: &Path) -> bool {
    false
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
