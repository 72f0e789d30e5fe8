//! Prefix cache: full KV blocks keyed by a hash chain of their tokens, so that a new prompt
//! which starts like an earlier one reuses its blocks instead of computing them again.
//!
//! The key of block `i` of a sequence is `hash(key of block i-1, tokens of block i)`, and the
//! chain starts from a root that hashes the model id and the request's cache salt, so equal
//! keys mean equal prefixes of the same model. Each entry also keeps its parent key and its
//! tokens, and a lookup compares them, so even a 64-bit hash collision cannot serve wrong KV.
//!
//! Only full blocks are cached. A block stays cached while sequences use it and after the last
//! one lets go (it is then *parked* in the [`BlockPool`] and listed here in LRU order); it is
//! evicted only when an allocation finds no free block, least recently released first
//! (vLLM-style). Blocks of one sequence are released tail first, so a chain loses its tail
//! before its head.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hasher};

use crate::block_pool::{BlockError, BlockId, BlockPool};

/// Key of a cached block: a hash of the whole prefix up to and including it.
pub type BlockHash = u64;

/// Counters of the prefix cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Lookups recorded (one per admitted sequence).
    pub queries: u64,
    /// Prompt tokens looked up.
    pub query_tokens: u64,
    /// Of those, tokens served from the cache.
    pub hit_tokens: u64,
    /// Blocks currently registered (in use or parked).
    pub cached_blocks: usize,
    /// Registered blocks no sequence uses (evictable).
    pub evictable_blocks: usize,
    /// Blocks evicted so far.
    pub evictions: u64,
}

impl PrefixCacheStats {
    /// `hit_tokens / query_tokens` (0 before any query).
    pub fn hit_rate(&self) -> f64 {
        if self.query_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.query_tokens as f64
        }
    }
}

/// Result of a lookup: the longest cached prefix of full blocks. Taking it (with
/// [`PrefixCache::acquire`]) adds a reference to each block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixHit {
    pub blocks: Vec<BlockId>,
    pub hashes: Vec<BlockHash>,
    /// How many of `blocks` are parked (reviving them uses up free blocks).
    pub n_parked: usize,
}

impl PrefixHit {
    pub fn num_tokens(&self, block_size: usize) -> usize {
        self.blocks.len() * block_size
    }
}

#[derive(Clone, Debug)]
struct Entry {
    hash: BlockHash,
    parent: BlockHash,
    tokens: Box<[u32]>,
    /// Position in the LRU list while parked.
    lru_tick: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct PrefixCache {
    enabled: bool,
    model_salt: u64,
    block_size: usize,
    map: HashMap<BlockHash, BlockId>,
    entries: Vec<Option<Entry>>,
    lru: BTreeMap<u64, BlockId>,
    tick: u64,
    stats: PrefixCacheStats,
}

impl PrefixCache {
    /// A cache over a pool of `n_blocks` blocks. `model_salt` identifies the model (weights,
    /// dtype) so that two models never share keys; a disabled cache never hits or registers.
    pub fn new(n_blocks: usize, block_size: usize, model_salt: u64, enabled: bool) -> Self {
        PrefixCache {
            enabled,
            model_salt,
            block_size: block_size.max(1),
            map: HashMap::new(),
            entries: vec![None; n_blocks],
            lru: BTreeMap::new(),
            tick: 0,
            stats: PrefixCacheStats::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Root of the hash chain for a request with `cache_salt` (0 when the request has none).
    pub fn root_hash(&self, cache_salt: u64) -> BlockHash {
        let mut h = DefaultHasher::new();
        h.write_u64(0x7231_7365_7276_6521);
        h.write_u64(self.model_salt);
        h.write_u64(cache_salt);
        h.finish()
    }

    /// Key of a block holding `tokens` after the prefix whose key is `parent`.
    pub fn hash_block(parent: BlockHash, tokens: &[u32]) -> BlockHash {
        let mut h = DefaultHasher::new();
        h.write_u64(parent);
        h.write_usize(tokens.len());
        for &t in tokens {
            h.write_u32(t);
        }
        h.finish()
    }

    /// The longest cached run of full blocks at the start of `tokens`, leaving at least one
    /// token uncovered (the caller needs the logits of the last one). No side effects.
    pub fn lookup(&self, root: BlockHash, tokens: &[u32]) -> PrefixHit {
        let mut hit = PrefixHit::default();
        if !self.enabled || tokens.is_empty() {
            return hit;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = root;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let h = Self::hash_block(parent, chunk);
            let Some(&b) = self.map.get(&h) else { break };
            let Some(e) = self.entries.get(b as usize).and_then(Option::as_ref) else {
                break;
            };
            if e.hash != h || e.parent != parent || *e.tokens != *chunk {
                break; // hash collision: not our prefix
            }
            hit.blocks.push(b);
            hit.hashes.push(h);
            if e.lru_tick.is_some() {
                hit.n_parked += 1;
            }
            parent = h;
        }
        hit
    }

    /// Take a reference to every block of `hit` (reviving parked ones).
    pub fn acquire(&mut self, pool: &mut BlockPool, hit: &PrefixHit) -> Result<(), BlockError> {
        for (i, &b) in hit.blocks.iter().enumerate() {
            let parked = self.entry_mut(b).and_then(|e| e.lru_tick.take());
            let r = match parked {
                Some(t) => {
                    self.lru.remove(&t);
                    pool.revive(b)
                }
                None => pool.retain(b),
            };
            if let Err(e) = r {
                // Give back what was taken so far, so a failure leaves no reference behind.
                for &taken in hit.blocks[..i].iter().rev() {
                    let _ = self.release(pool, taken);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Record one admitted lookup: `query_tokens` looked up, `hit_tokens` served.
    pub fn record_query(&mut self, query_tokens: usize, hit_tokens: usize) {
        self.stats.queries += 1;
        self.stats.query_tokens += query_tokens as u64;
        self.stats.hit_tokens += hit_tokens as u64;
    }

    /// Allocate a block, evicting the least recently released cached block when the free
    /// list is empty.
    pub fn allocate(&mut self, pool: &mut BlockPool) -> Result<BlockId, BlockError> {
        if pool.num_clean_free() == 0 {
            let Some((_, b)) = self.lru.pop_first() else {
                return Err(BlockError::Exhausted(pool.num_blocks()));
            };
            if let Some(e) = self.entries.get_mut(b as usize).and_then(Option::take) {
                self.map.remove(&e.hash);
            }
            self.stats.evictions += 1;
            pool.unpark(b)?;
        }
        pool.allocate()
    }

    /// Drop a sequence's reference to `block`; a cached block whose last reference goes is
    /// parked (evictable, still reusable), any other returns to the free list.
    pub fn release(&mut self, pool: &mut BlockPool, block: BlockId) -> Result<(), BlockError> {
        let cached = self.entry_mut(block).is_some();
        if pool.release(block, cached)? == 0 && cached {
            let t = self.tick;
            self.tick += 1;
            if let Some(e) = self.entry_mut(block) {
                e.lru_tick = Some(t);
            }
            self.lru.insert(t, block);
        }
        Ok(())
    }

    /// Register `block`, now full of `tokens` computed after the prefix `parent`, and return
    /// its key. A block already registered keeps its entry; if another block already caches
    /// the same prefix, this one stays unregistered (it returns to the free list when freed).
    pub fn insert(&mut self, block: BlockId, parent: BlockHash, tokens: &[u32]) -> BlockHash {
        let h = Self::hash_block(parent, tokens);
        if !self.enabled || tokens.len() != self.block_size {
            return h;
        }
        if let Some(e) = self.entries.get(block as usize).and_then(Option::as_ref) {
            return e.hash;
        }
        if block as usize >= self.entries.len() || self.map.contains_key(&h) {
            return h;
        }
        self.map.insert(h, block);
        self.entries[block as usize] = Some(Entry {
            hash: h,
            parent,
            tokens: tokens.into(),
            lru_tick: None,
        });
        h
    }

    /// Whether `block` is registered in the cache.
    pub fn is_cached(&self, block: BlockId) -> bool {
        self.entries
            .get(block as usize)
            .is_some_and(|e| e.is_some())
    }

    pub fn stats(&self) -> PrefixCacheStats {
        PrefixCacheStats {
            cached_blocks: self.map.len(),
            evictable_blocks: self.lru.len(),
            ..self.stats
        }
    }

    /// Check that the cache agrees with the pool (for tests and debug checks).
    pub fn check_invariants(&self, pool: &BlockPool) -> Result<(), String> {
        if self.entries.len() != pool.num_blocks() {
            return Err("cache and pool disagree on the number of blocks".into());
        }
        let mut n_entries = 0;
        for (i, e) in self.entries.iter().enumerate() {
            let b = i as BlockId;
            let parked = pool.is_parked(b).map_err(|e| e.to_string())?;
            match e {
                None if parked => return Err(format!("block {b} is parked but not cached")),
                None => {}
                Some(e) => {
                    n_entries += 1;
                    if self.map.get(&e.hash) != Some(&b) {
                        return Err(format!("block {b}'s key does not map back to it"));
                    }
                    match e.lru_tick {
                        Some(t) if !parked || self.lru.get(&t) != Some(&b) => {
                            return Err(format!("block {b}: LRU entry and pool disagree"))
                        }
                        None if parked => {
                            return Err(format!("parked block {b} is missing from the LRU"))
                        }
                        _ => {}
                    }
                }
            }
        }
        if n_entries != self.map.len() || self.lru.len() != pool.num_parked() {
            return Err("cache map, LRU and pool counts disagree".into());
        }
        Ok(())
    }

    fn entry_mut(&mut self, block: BlockId) -> Option<&mut Entry> {
        self.entries
            .get_mut(block as usize)
            .and_then(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: usize = 4;

    /// Allocate and register the full blocks of `tokens` as one sequence would.
    fn fill(
        cache: &mut PrefixCache,
        pool: &mut BlockPool,
        root: BlockHash,
        tokens: &[u32],
    ) -> Vec<BlockId> {
        let mut parent = root;
        let mut blocks = Vec::new();
        for chunk in tokens.chunks(BS) {
            let b = cache.allocate(pool).unwrap();
            if chunk.len() == BS {
                parent = cache.insert(b, parent, chunk);
            }
            blocks.push(b);
        }
        blocks
    }

    fn release_all(cache: &mut PrefixCache, pool: &mut BlockPool, blocks: &[BlockId]) {
        for &b in blocks.iter().rev() {
            cache.release(pool, b).unwrap();
        }
    }

    #[test]
    fn longest_prefix_of_full_blocks_never_the_whole_prompt() {
        let mut pool = BlockPool::new(8, BS).unwrap();
        let mut c = PrefixCache::new(8, BS, 1, true);
        let root = c.root_hash(0);
        let a: Vec<u32> = (0..10).collect(); // 2 full blocks + 2 tokens
        let blocks = fill(&mut c, &mut pool, root, &a);
        // Same first 9 tokens: both full blocks hit.
        let mut b: Vec<u32> = (0..9).collect();
        b.push(99);
        let hit = c.lookup(root, &b);
        assert_eq!(hit.blocks, blocks[..2]);
        assert_eq!(hit.n_parked, 0);
        // A prompt of exactly 8 tokens may only hit 1 block: one token must be computed.
        let hit = c.lookup(root, &a[..8]);
        assert_eq!(hit.blocks.len(), 1);
        // Differs inside block 1: only block 0.
        let mut d = a.clone();
        d[5] = 77;
        assert_eq!(c.lookup(root, &d).blocks, blocks[..1]);
        // Another salt or model: nothing.
        assert!(c.lookup(c.root_hash(5), &a).blocks.is_empty());
        let other = PrefixCache::new(8, BS, 2, true);
        assert_ne!(other.root_hash(0), root);
        c.check_invariants(&pool).unwrap();
    }

    #[test]
    fn released_blocks_stay_reusable_until_evicted_lru() {
        let mut pool = BlockPool::new(4, BS).unwrap();
        let mut c = PrefixCache::new(4, BS, 0, true);
        let root = c.root_hash(0);
        let a: Vec<u32> = (0..8).collect();
        let ba = fill(&mut c, &mut pool, root, &a);
        release_all(&mut c, &mut pool, &ba);
        assert_eq!(pool.num_free(), 4);
        assert_eq!(c.stats().evictable_blocks, 2);
        let q: Vec<u32> = (0..9).collect();
        let hit = c.lookup(root, &q);
        assert_eq!((hit.blocks.len(), hit.n_parked), (2, 2));
        c.acquire(&mut pool, &hit).unwrap();
        assert_eq!(pool.num_used(), 2);
        assert_eq!(c.stats().evictable_blocks, 0);
        release_all(&mut c, &mut pool, &hit.blocks);
        c.check_invariants(&pool).unwrap();

        // Fill the pool with other content: clean blocks go first, then the LRU tail block.
        let x = c.allocate(&mut pool).unwrap();
        let y = c.allocate(&mut pool).unwrap();
        assert!(!ba.contains(&x) && !ba.contains(&y));
        assert_eq!(c.stats().evictions, 0);
        let z = c.allocate(&mut pool).unwrap();
        assert_eq!(z, ba[1], "the tail of the chain is evicted first");
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.lookup(root, &q).blocks, ba[..1]);
        let w = c.allocate(&mut pool).unwrap();
        assert_eq!(w, ba[0]);
        assert!(c.lookup(root, &q).blocks.is_empty());
        assert_eq!(c.allocate(&mut pool), Err(BlockError::Exhausted(4)));
        c.check_invariants(&pool).unwrap();
    }

    #[test]
    fn duplicate_content_is_registered_once() {
        let mut pool = BlockPool::new(4, BS).unwrap();
        let mut c = PrefixCache::new(4, BS, 0, true);
        let root = c.root_hash(0);
        let t = [1, 2, 3, 4];
        let b1 = c.allocate(&mut pool).unwrap();
        let b2 = c.allocate(&mut pool).unwrap();
        let h1 = c.insert(b1, root, &t);
        let h2 = c.insert(b2, root, &t);
        assert_eq!(h1, h2);
        assert!(c.is_cached(b1) && !c.is_cached(b2));
        assert_eq!(c.insert(b1, root, &t), h1, "re-registering is a no-op");
        c.release(&mut pool, b2).unwrap();
        assert_eq!(pool.num_clean_free(), 3);
        c.release(&mut pool, b1).unwrap();
        assert_eq!(pool.num_parked(), 1);
        assert_eq!(c.release(&mut pool, b1), Err(BlockError::DoubleFree(b1)));
        c.check_invariants(&pool).unwrap();
    }

    #[test]
    fn disabled_cache_never_hits() {
        let mut pool = BlockPool::new(4, BS).unwrap();
        let mut c = PrefixCache::new(4, BS, 0, false);
        let root = c.root_hash(0);
        let a: Vec<u32> = (0..8).collect();
        let ba = fill(&mut c, &mut pool, root, &a);
        release_all(&mut c, &mut pool, &ba);
        assert!(c.lookup(root, &a).blocks.is_empty());
        assert_eq!(pool.num_clean_free(), 4);
        assert_eq!(c.stats().cached_blocks, 0);
    }

    #[test]
    fn stats_count_queries_and_hits() {
        let mut c = PrefixCache::new(4, BS, 0, true);
        c.record_query(10, 8);
        c.record_query(6, 0);
        let s = c.stats();
        assert_eq!((s.queries, s.query_tokens, s.hit_tokens), (2, 16, 8));
        assert!((s.hit_rate() - 0.5).abs() < 1e-12);
        assert_eq!(PrefixCacheStats::default().hit_rate(), 0.0);
    }

    #[test]
    fn failed_acquire_leaves_no_reference() {
        let mut pool = BlockPool::new(4, BS).unwrap();
        let mut c = PrefixCache::new(4, BS, 0, true);
        let root = c.root_hash(0);
        let a: Vec<u32> = (0..8).collect();
        let ba = fill(&mut c, &mut pool, root, &a);
        let hit = c.lookup(root, &[a.clone(), vec![5]].concat());
        let mut bad = hit.clone();
        bad.blocks.push(3); // a free block cannot be retained
        assert!(c.acquire(&mut pool, &bad).is_err());
        assert_eq!(pool.ref_count(ba[0]).unwrap(), 1);
        assert_eq!(pool.ref_count(ba[1]).unwrap(), 1);
        c.check_invariants(&pool).unwrap();
    }
}
