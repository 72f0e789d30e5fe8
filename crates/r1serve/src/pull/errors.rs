//! What went wrong with the hub, said so a user can act on it (auth, 404, network).

use super::*;

pub(super) fn describe_api_error(
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

pub(super) fn is_network_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | Interrupted
    ) || e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
}

/// Turns an HTTP failure into a message naming the repo (and file) and what to do about it.
pub(super) fn describe_ureq(
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
