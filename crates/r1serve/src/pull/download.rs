//! One file's transfer through hf-hub, resumed from its `.part` file, then verified.

use super::*;

/// Downloads one file through hf-hub and verifies it; on a bad copy, deletes it and tries once more.
pub(super) fn fetch_verified(
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
pub(super) fn download_once(
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
pub(super) fn part_path(setup: &Setup, repo: &str, sib: &Sibling) -> Option<PathBuf> {
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
