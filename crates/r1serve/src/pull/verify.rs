//! Checking a file against the hub's size and hash, and linking it into place.

use super::*;

/// Checks a present file against the listing: size always, hash when `hash` is set.
pub(super) fn check_file(path: &Path, sib: &Sibling, hash: bool, mp: &MultiProgress) -> Result<()> {
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

pub(super) fn hash_file(path: &Path, sha256: bool, len: u64, pb: &ProgressBar) -> Result<String> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Deletes a snapshot entry and the blob it points to.
pub(super) fn remove_cached(pointer: &Path) {
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        if blob != pointer {
            let _ = std::fs::remove_file(&blob);
        }
    }
    let _ = std::fs::remove_file(pointer);
}

/// Places the cached file at `dest` (hard link, else copy), via a temporary name and a rename.
pub(super) fn link_into(cached: &Path, dest: &Path) -> Result<()> {
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
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn same_file(_a: &Path, _b: &Path) -> bool {
    false
}
