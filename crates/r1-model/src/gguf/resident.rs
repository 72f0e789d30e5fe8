//! Model bytes copied out of the page cache into anonymous memory backed by 2 MiB pages.
//!
//! Decode streams every weight once per token. From a file mapping those reads walk 4 KiB
//! pages, and the TLB misses cost a measurable share of the bandwidth
//! (`cargo bench -p r1-model --bench gemv_dram` prints both: Q4_K/Q6_K GEMV ran 1.3-1.7x
//! faster from 2 MiB pages). Copying costs a fraction of a second per GB at load, so it is
//! done when the file fits comfortably in free memory; `R1SERVE_MMAP=1` keeps serving from
//! the file mapping (as llama.cpp does by default), and large models always do.

use std::io::Read;
use std::path::Path;

/// Copy the model into huge pages when it takes at most this share of available memory.
const MAX_SHARE_OF_AVAILABLE: f64 = 0.5;

/// Whether a file of `len` bytes should be copied into anonymous huge-page memory.
pub(crate) fn wanted(len: usize) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    if std::env::var("R1SERVE_MMAP").is_ok_and(|v| v == "1" || v == "true") {
        return false;
    }
    match mem_available() {
        Some(avail) => (len as f64) <= avail as f64 * MAX_SHARE_OF_AVAILABLE,
        None => false,
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The whole file in anonymous memory with `MADV_HUGEPAGE`; `None` (after a log line) when
/// anything fails, so the caller keeps its mapping.
pub(crate) fn copy_to_huge_pages(path: &Path, len: usize) -> Option<memmap2::MmapMut> {
    if len == 0 {
        return None;
    }
    let attempt = || -> std::io::Result<memmap2::MmapMut> {
        let mut m = memmap2::MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        m.advise(memmap2::Advice::HugePage)?;
        let mut f = std::fs::File::open(path)?;
        f.read_exact(&mut m[..])?;
        Ok(m)
    };
    match attempt() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(
                "{}: serving from the file mapping ({e} while copying into huge pages)",
                path.display()
            );
            None
        }
    }
}
