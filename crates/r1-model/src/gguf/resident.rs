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

/// Memory this process may still take, in bytes: `MemAvailable` from /proc/meminfo, capped
/// by the headroom of its memory cgroup (a container's or `systemd-run -p MemoryMax=`
/// limit, which /proc/meminfo does not show). A private copy that ignored the cgroup would
/// be anonymous memory the kernel cannot page out: an OOM kill where the file mapping would
/// have run, slower, from the page cache.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let host = kib * 1024;
    Some(match cgroup_headroom() {
        Some(h) => host.min(h),
        None => host,
    })
}

/// The smallest `limit - usage` over this process's memory cgroup and its ancestors
/// (cgroup v2 `memory.max`/`memory.current`, or v1 `memory.limit_in_bytes`/
/// `memory.usage_in_bytes`); `None` where no limit is set or readable.
pub(crate) fn cgroup_headroom() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<u64> = None;
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let (root, limit_file, usage_file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let mut dir = std::path::PathBuf::from(root);
        dir.push(path.trim_start_matches('/'));
        // The cgroup's own limit and every ancestor's apply.
        for d in dir.ancestors().take_while(|d| d.starts_with(root)) {
            let read = |name: &str| -> Option<u64> {
                std::fs::read_to_string(d.join(name))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            // "max" (v2) does not parse; v1 reports "no limit" as a huge number.
            let Some(limit) = read(limit_file).filter(|&l| l < (1u64 << 60)) else {
                continue;
            };
            // Usage counts the page cache too; its inactive part is reclaimed before an
            // OOM kill, so count it as free (the "working set" kubelet evicts by).
            // (v1's usage is hierarchical, so its `total_` figure; v2 has only the one.)
            let stat = std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default();
            let stat_of = |key: &str| {
                stat.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                })
            };
            let inactive = stat_of("total_inactive_file")
                .or_else(|| stat_of("inactive_file"))
                .unwrap_or(0);
            let used = read(usage_file).unwrap_or(0).saturating_sub(inactive);
            let room = limit.saturating_sub(used);
            best = Some(best.map_or(room, |b| b.min(room)));
        }
    }
    best
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
