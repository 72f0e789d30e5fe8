//! The KV block pool: a fixed number of blocks of `block_size` token slots, handed out with
//! reference counts so that prompt blocks can be shared (prefix-cache hits, `n > 1` forks).
//!
//! A block is in one of three states:
//! - **free**: on the free list, no content worth keeping;
//! - **used**: referenced by one or more sequences (reference count ≥ 1);
//! - **parked**: no sequence references it, but the prefix cache keeps its content for reuse.
//!   A parked block counts as free (the prefix cache evicts it on demand, see
//!   [`crate::prefix_cache::PrefixCache::allocate`]); the pool itself only hands out blocks
//!   from the free list.
//!
//! Every misuse (freeing a free block, sharing a block nobody holds, an id out of range)
//! returns a [`BlockError`]; the pool never panics and never corrupts its counts.
//!
//! This file also sizes the pool from the `--kv-cache-mem` option: [`KvCacheMem`] parses
//! `"2GiB"`, `"512MiB"`, `"1073741824"` (bytes) or `"0.3"` / `"30%"` (a fraction of RAM), and
//! [`num_blocks_for_budget`] turns bytes into a block count.

use std::fmt;
use std::str::FromStr;

/// Index of a KV block (the model's `KvCache` addresses blocks by this id).
pub type BlockId = u32;

/// Tokens per block unless configured otherwise.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {block} does not exist (the pool has {n_blocks} blocks)")]
    OutOfRange { block: BlockId, n_blocks: usize },
    #[error("block {0} freed twice (it is not in use)")]
    DoubleFree(BlockId),
    #[error("block {0} is not in use, so it cannot be shared")]
    NotInUse(BlockId),
    #[error("block {0} is not parked in the prefix cache")]
    NotParked(BlockId),
    #[error("no free KV block left (all {0} blocks are in use)")]
    Exhausted(usize),
    #[error("invalid block pool: {0}")]
    Config(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Used(u32),
    Parked,
}

/// Reference-counted allocator of KV blocks.
#[derive(Clone, Debug)]
pub struct BlockPool {
    block_size: usize,
    state: Vec<State>,
    /// Free blocks, popped from the end (a freed block is reused first).
    free: Vec<BlockId>,
    n_parked: usize,
    n_used: usize,
}

impl BlockPool {
    /// A pool of `n_blocks` blocks of `block_size` tokens, all free.
    pub fn new(n_blocks: usize, block_size: usize) -> Result<Self, BlockError> {
        if block_size == 0 {
            return Err(BlockError::Config("block size must be at least 1".into()));
        }
        if n_blocks == 0 {
            return Err(BlockError::Config("the pool needs at least 1 block".into()));
        }
        if n_blocks > BlockId::MAX as usize {
            return Err(BlockError::Config(format!(
                "{n_blocks} blocks exceed the maximum of {}",
                BlockId::MAX
            )));
        }
        Ok(BlockPool {
            block_size,
            state: vec![State::Free; n_blocks],
            // Reversed so that block 0 is handed out first.
            free: (0..n_blocks as BlockId).rev().collect(),
            n_parked: 0,
            n_used: 0,
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.state.len()
    }

    /// Blocks available for allocation: free ones plus parked (evictable) ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.n_parked
    }

    /// Blocks on the free list only (allocatable without evicting cached content).
    pub fn num_clean_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.n_used
    }

    /// Blocks with no reference whose content the prefix cache keeps.
    pub fn num_parked(&self) -> usize {
        self.n_parked
    }

    /// Fraction of blocks referenced by sequences, in `[0, 1]`.
    pub fn usage(&self) -> f64 {
        self.n_used as f64 / self.state.len() as f64
    }

    /// Blocks needed to hold `tokens` token slots.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Reference count of `block` (0 for a free or parked block).
    pub fn ref_count(&self, block: BlockId) -> Result<u32, BlockError> {
        Ok(match self.get(block)? {
            State::Used(n) => n,
            State::Free | State::Parked => 0,
        })
    }

    pub fn is_parked(&self, block: BlockId) -> Result<bool, BlockError> {
        Ok(self.get(block)? == State::Parked)
    }

    /// Take a block from the free list with reference count 1. Parked blocks are not taken:
    /// evict one through the prefix cache first when the free list is empty.
    pub fn allocate(&mut self) -> Result<BlockId, BlockError> {
        let b = self
            .free
            .pop()
            .ok_or(BlockError::Exhausted(self.state.len()))?;
        self.state[b as usize] = State::Used(1);
        self.n_used += 1;
        Ok(b)
    }

    /// Add a reference to a block in use (sharing it with another sequence).
    pub fn retain(&mut self, block: BlockId) -> Result<(), BlockError> {
        match self.get(block)? {
            State::Used(n) => {
                self.state[block as usize] = State::Used(n + 1);
                Ok(())
            }
            State::Free | State::Parked => Err(BlockError::NotInUse(block)),
        }
    }

    /// Drop one reference. When the last one goes, the block is parked if `park` (its content
    /// stays for the prefix cache) or returned to the free list. Returns the references left.
    pub fn release(&mut self, block: BlockId, park: bool) -> Result<u32, BlockError> {
        match self.get(block)? {
            State::Used(1) => {
                self.n_used -= 1;
                if park {
                    self.state[block as usize] = State::Parked;
                    self.n_parked += 1;
                } else {
                    self.state[block as usize] = State::Free;
                    self.free.push(block);
                }
                Ok(0)
            }
            State::Used(n) => {
                self.state[block as usize] = State::Used(n - 1);
                Ok(n - 1)
            }
            State::Free | State::Parked => Err(BlockError::DoubleFree(block)),
        }
    }

    /// Reuse a parked block (a prefix-cache hit): it becomes used with reference count 1.
    pub fn revive(&mut self, block: BlockId) -> Result<(), BlockError> {
        if self.get(block)? != State::Parked {
            return Err(BlockError::NotParked(block));
        }
        self.state[block as usize] = State::Used(1);
        self.n_parked -= 1;
        self.n_used += 1;
        Ok(())
    }

    /// Drop a parked block's content (prefix-cache eviction): it goes to the free list.
    pub fn unpark(&mut self, block: BlockId) -> Result<(), BlockError> {
        if self.get(block)? != State::Parked {
            return Err(BlockError::NotParked(block));
        }
        self.state[block as usize] = State::Free;
        self.n_parked -= 1;
        self.free.push(block);
        Ok(())
    }

    /// Check the internal counts; `Err` describes the first inconsistency (for tests and
    /// debug checks).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut on_free_list = vec![false; self.state.len()];
        for &b in &self.free {
            let i = b as usize;
            if i >= self.state.len() {
                return Err(format!("free list holds out-of-range block {b}"));
            }
            if on_free_list[i] {
                return Err(format!("block {b} is on the free list twice"));
            }
            on_free_list[i] = true;
        }
        let (mut used, mut parked) = (0, 0);
        for (i, s) in self.state.iter().enumerate() {
            match s {
                State::Free if !on_free_list[i] => {
                    return Err(format!("free block {i} is missing from the free list"))
                }
                State::Used(_) | State::Parked if on_free_list[i] => {
                    return Err(format!("block {i} is on the free list but not free"))
                }
                State::Used(0) => return Err(format!("block {i} is used with 0 references")),
                State::Used(_) => used += 1,
                State::Parked => parked += 1,
                State::Free => {}
            }
        }
        if used != self.n_used || parked != self.n_parked {
            return Err(format!(
                "counters say {} used / {} parked, states say {used} / {parked}",
                self.n_used, self.n_parked
            ));
        }
        if self.free.len() + used + parked != self.state.len() {
            return Err("free + used + parked != total".into());
        }
        Ok(())
    }

    fn get(&self, block: BlockId) -> Result<State, BlockError> {
        self.state
            .get(block as usize)
            .copied()
            .ok_or(BlockError::OutOfRange {
                block,
                n_blocks: self.state.len(),
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Sizing the pool: --kv-cache-mem

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KvMemError {
    #[error("--kv-cache-mem is empty; give bytes (\"2GiB\", \"512MiB\", \"1073741824\") or a fraction of RAM (\"0.3\", \"30%\")")]
    Empty,
    #[error("--kv-cache-mem `{input}`: {reason}; give bytes (\"2GiB\", \"512MiB\", \"1073741824\") or a fraction of RAM (\"0.3\", \"30%\")")]
    Invalid { input: String, reason: String },
    #[error("--kv-cache-mem: cannot read the machine's total RAM to take a fraction of it; give a size in bytes instead (e.g. \"2GiB\")")]
    RamUnknown,
    #[error("--kv-cache-mem: {budget} bytes hold less than one KV block ({block_bytes} bytes = {block_size} tokens × {bytes_per_token} bytes per token)")]
    TooSmall {
        budget: u64,
        block_bytes: u64,
        block_size: usize,
        bytes_per_token: usize,
    },
    #[error("--kv-cache-mem: bytes per token and block size must be positive")]
    BadLayout,
}

/// A `--kv-cache-mem` value: bytes, or a fraction of total RAM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvCacheMem {
    Bytes(u64),
    FractionOfRam(f64),
}

impl fmt::Display for KvCacheMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCacheMem::Bytes(b) => write!(f, "{b} bytes"),
            KvCacheMem::FractionOfRam(x) => write!(f, "{:.1}% of RAM", x * 100.0),
        }
    }
}

impl FromStr for KvCacheMem {
    type Err = KvMemError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_kv_cache_mem(s)
    }
}

impl KvCacheMem {
    /// Bytes this value stands for on a machine with `total_ram` bytes.
    pub fn resolve(self, total_ram: u64) -> u64 {
        match self {
            KvCacheMem::Bytes(b) => b,
            KvCacheMem::FractionOfRam(x) => (total_ram as f64 * x) as u64,
        }
    }

    /// Bytes on this machine (a fraction needs the total RAM, see [`system_ram_bytes`]).
    pub fn resolve_here(self) -> Result<u64, KvMemError> {
        match self {
            KvCacheMem::Bytes(b) => Ok(b),
            KvCacheMem::FractionOfRam(_) => {
                Ok(self.resolve(system_ram_bytes().ok_or(KvMemError::RamUnknown)?))
            }
        }
    }
}

/// Parse `--kv-cache-mem`: an integer is bytes (`"1073741824"`); a number with a unit is bytes
/// (`"2GiB"`, `"1.5G"`, `"512MiB"`, `"800MB"`; KiB/MiB/GiB/TiB and bare K/M/G/T are powers of
/// 1024, KB/MB/GB/TB powers of 1000); a decimal in `(0, 1]` (`"0.3"`) or a percentage
/// (`"30%"`) is a fraction of total RAM.
pub fn parse_kv_cache_mem(s: &str) -> Result<KvCacheMem, KvMemError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(KvMemError::Empty);
    }
    let invalid = |reason: &str| KvMemError::Invalid {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if let Some(p) = t.strip_suffix('%') {
        let x: f64 = p
            .trim()
            .parse()
            .map_err(|_| invalid("not a number before `%`"))?;
        if !(x > 0.0 && x <= 100.0) {
            return Err(invalid("a percentage of RAM must be in (0, 100]"));
        }
        return Ok(KvCacheMem::FractionOfRam(x / 100.0));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() {
        return Err(invalid("it does not start with a number"));
    }
    if unit.is_empty() {
        if let Ok(b) = num.parse::<u64>() {
            if b == 0 {
                return Err(invalid("zero bytes leave no room for the KV cache"));
            }
            return Ok(KvCacheMem::Bytes(b));
        }
        let x: f64 = num.parse().map_err(|_| invalid("not a number"))?;
        if !(x > 0.0 && x <= 1.0) {
            return Err(invalid(
                "a fraction of RAM must be in (0, 1]; add a unit for bytes (e.g. \"1.5GiB\")",
            ));
        }
        return Ok(KvCacheMem::FractionOfRam(x));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(invalid(&format!("unknown unit `{unit}`"))),
    };
    let x: f64 = num.parse().map_err(|_| invalid("not a number"))?;
    let bytes = x * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid("too large"));
    }
    if bytes < 1.0 {
        return Err(invalid("zero bytes leave no room for the KV cache"));
    }
    Ok(KvCacheMem::Bytes(bytes as u64))
}

/// Total RAM of this machine (`MemTotal` of `/proc/meminfo`), if it can be read.
pub fn system_ram_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&text)
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => n.checked_mul(1024),
        Some(_) => None,
    }
}

/// Blocks that fit `budget_bytes` at `bytes_per_token` (see `KvLayout::bytes_per_token`) and
/// `block_size` tokens per block; an error if not even one block fits.
pub fn num_blocks_for_budget(
    budget_bytes: u64,
    bytes_per_token: usize,
    block_size: usize,
) -> Result<usize, KvMemError> {
    if bytes_per_token == 0 || block_size == 0 {
        return Err(KvMemError::BadLayout);
    }
    let block_bytes = (bytes_per_token as u64).saturating_mul(block_size as u64);
    let n = budget_bytes / block_bytes;
    if n == 0 {
        return Err(KvMemError::TooSmall {
            budget: budget_bytes,
            block_bytes,
            block_size,
            bytes_per_token,
        });
    }
    Ok(n.min(BlockId::MAX as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_share_release() {
        let mut p = BlockPool::new(3, 4).unwrap();
        assert_eq!(p.num_free(), 3);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!((a, b), (0, 1));
        p.retain(a).unwrap();
        assert_eq!(p.ref_count(a).unwrap(), 2);
        assert_eq!(p.release(a, false).unwrap(), 1);
        assert_eq!(p.num_used(), 2);
        assert_eq!(p.release(a, false).unwrap(), 0);
        assert_eq!(p.num_free(), 2);
        assert!((p.usage() - 1.0 / 3.0).abs() < 1e-9);
        // The freed block is reused first.
        assert_eq!(p.allocate().unwrap(), a);
        p.check_invariants().unwrap();
    }

    #[test]
    fn double_free_and_bad_ids_are_errors() {
        let mut p = BlockPool::new(2, 4).unwrap();
        let a = p.allocate().unwrap();
        p.release(a, false).unwrap();
        assert_eq!(p.release(a, false), Err(BlockError::DoubleFree(a)));
        assert_eq!(p.retain(a), Err(BlockError::NotInUse(a)));
        assert!(matches!(
            p.release(7, false),
            Err(BlockError::OutOfRange { block: 7, .. })
        ));
        assert_eq!(p.revive(a), Err(BlockError::NotParked(a)));
        p.check_invariants().unwrap();
        assert_eq!(p.num_free(), 2);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut p = BlockPool::new(1, 4).unwrap();
        p.allocate().unwrap();
        assert_eq!(p.allocate(), Err(BlockError::Exhausted(1)));
        assert!(BlockPool::new(0, 4).is_err());
        assert!(BlockPool::new(4, 0).is_err());
    }

    #[test]
    fn parking_keeps_blocks_free_but_off_the_free_list() {
        let mut p = BlockPool::new(2, 4).unwrap();
        let a = p.allocate().unwrap();
        p.release(a, true).unwrap();
        assert_eq!(p.num_free(), 2);
        assert_eq!(p.num_clean_free(), 1);
        assert_eq!(p.num_parked(), 1);
        assert_eq!(p.release(a, true), Err(BlockError::DoubleFree(a)));
        p.revive(a).unwrap();
        assert_eq!(p.ref_count(a).unwrap(), 1);
        p.release(a, true).unwrap();
        p.unpark(a).unwrap();
        assert_eq!(p.num_clean_free(), 2);
        assert_eq!(p.unpark(a), Err(BlockError::NotParked(a)));
        p.check_invariants().unwrap();
    }

    #[test]
    fn kv_cache_mem_parsing() {
        use KvCacheMem::*;
        let ok = |s: &str| parse_kv_cache_mem(s).unwrap();
        assert_eq!(ok("2GiB"), Bytes(2 << 30));
        assert_eq!(ok("2g"), Bytes(2 << 30));
        assert_eq!(ok("512MiB"), Bytes(512 << 20));
        assert_eq!(ok("800 MB"), Bytes(800_000_000));
        assert_eq!(ok("1.5GiB"), Bytes(3 << 29));
        assert_eq!(ok("1073741824"), Bytes(1 << 30));
        assert_eq!(ok(" 4096B "), Bytes(4096));
        assert_eq!(ok("0.3"), FractionOfRam(0.3));
        assert_eq!(ok("1.0"), FractionOfRam(1.0));
        assert_eq!(ok("30%"), FractionOfRam(0.3));
        for bad in [
            "",
            "abc",
            "1.5",
            "0",
            "0.0",
            "-1",
            "2 parsecs",
            "150%",
            "GiB",
            "1..2G",
        ] {
            let e = parse_kv_cache_mem(bad).unwrap_err().to_string();
            assert!(e.contains("--kv-cache-mem"), "{bad}: {e}");
        }
        let e = parse_kv_cache_mem("1.5").unwrap_err().to_string();
        assert!(e.contains("(0, 1]"), "{e}");
        assert_eq!("2GiB".parse::<KvCacheMem>().unwrap(), Bytes(2 << 30));
        assert_eq!(FractionOfRam(0.5).resolve(1000), 500);
        assert_eq!(Bytes(7).resolve(1000), 7);
    }

    #[test]
    fn meminfo_and_block_count() {
        let text = "MemTotal:       16318424 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(16318424 * 1024));
        assert_eq!(parse_meminfo_total("nothing"), None);
        // 2 GiB at 28 layers × (128 + 128) × 4 bytes = 28672 bytes/token, 16 tokens/block.
        assert_eq!(num_blocks_for_budget(2 << 30, 28672, 16).unwrap(), 4681);
        let e = num_blocks_for_budget(1000, 100, 16).unwrap_err();
        assert!(matches!(
            e,
            KvMemError::TooSmall {
                block_bytes: 1600,
                ..
            }
        ));
        assert!(e.to_string().contains("1000 bytes"));
        assert_eq!(num_blocks_for_budget(1, 0, 16), Err(KvMemError::BadLayout));
    }
}
