//! MLA attention over the paged latent cache, flash-attention style.
//!
//! For each new token and head: `o = Σ_p softmax_p(scale · q·k_p) · c_p` over positions
//! `0..=pos`, where `q = [q_lat | q_pe]` and the cache row `k_p = [c_p | k_pe_p]`
//! (`kv_lora_rank + qk_rope_head_dim` values).
//!
//! * Positions are walked in tiles of [`TILE`]; the scores of a tile come from a
//!   register-blocked kernel (`mla_scores.rs`: all queries of the task, transposed so the
//!   queries sit in vector lanes, against the tile's cache rows, read straight from the
//!   cache, no copies for an f32 cache), then an online softmax vectorized over the queries
//!   (`mla_softmax.rs`): the running max, sum and latent accumulator are rescaled once per
//!   tile, as flash attention does. Nothing is allocated per position.
//! * A task's queries are every head of a block of consecutive tokens (up to
//!   [`BLOCK_QUERIES`] queries), so in a prefill at depth each cache tile is read once per
//!   block, not once per token per head: the cache traffic of a chunk drops by the block
//!   size and the work becomes compute-bound. The block's earlier tokens see fewer rows of
//!   the last tiles (causality); each token takes exactly its own rows.
//! * Long contexts are cut into segments of [`SEGMENT`] positions, each with its own softmax
//!   state, folded left to right at the end. When a step has few tokens (decode), segments
//!   of one token run as separate tasks (and, with many heads, ranges of 16 heads), so a
//!   single sequence's attention at depth uses every thread.
//!
//! Tile and segment boundaries are absolute positions and the fold is always left to right,
//! so every (token, head) result is the same whatever the batch, the chunking of a prefill,
//! the thread count or the ISA (the score kernel and the FMA update are ISA-invariant).

use std::cell::RefCell;

use super::mla_accumulate::accumulate;
use super::mla_softmax::{tile_step, State};
use super::{mla_scores, DeepSeekConfig};
use crate::batch::Batch;
use crate::f16;
use crate::kv_cache::{KvCache, KvDtype};
use crate::pool::ThreadPool;

/// Positions per softmax rescale.
pub(crate) const TILE: usize = 64;
/// Positions per independent softmax state (a unit of parallel work at depth).
pub(crate) const SEGMENT: usize = 512;
/// Queries (token × head) that share one pass over the cache in a prefill: each cache tile
/// is read once per block of `BLOCK_QUERIES / heads` consecutive tokens, not once per token.
const BLOCK_QUERIES: usize = 128;

/// One layer's cache rows in either storage type.
enum Store<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

#[derive(Default)]
struct Scratch {
    /// Scores, then weights, of one tile: `[TILE, nqp]`.
    scores: Vec<f32>,
    /// An f16 tile's cache rows widened to f32.
    wide: Vec<f32>,
    /// Per query: the tile rows it sees, and its rescale factor.
    seen: Vec<usize>,
    rescale: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Geometry shared by the tasks.
struct Ctx<'a> {
    kv: &'a KvCache,
    store: Store<'a>,
    r: usize,
    kw: usize,
    scale: f32,
}

impl Ctx<'_> {
    /// Positions from `p0` to the end of its segment, for `ends.len()` consecutive tokens of
    /// one sequence (token `t` sees the positions below `ends[t]`) with `nh` heads each
    /// (queries transposed by the caller with `mla_scores::transpose`: `qt` is `[kw, nqp]`),
    /// accumulated into fresh per-query states written to
    /// `ms`, `ls`, `accs` (`[tokens * nh]`, `[tokens * nh]`, `[tokens * nh, r]`).
    ///
    /// The tokens share each tile's cache rows (one pass over the cache for all of them);
    /// each (token, head) still sees exactly its own positions in the same tiles, in the same
    /// order, as when it runs alone.
    fn segment(
        &self,
        block_table: &[u32],
        (p0, ends): (usize, &[usize]),
        nh: usize,
        (qt, nqp): (&[f32], usize),
        (ms, ls, accs): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (kw, r) = (self.kw, self.r);
        let nq = ms.len();
        debug_assert_eq!(nq, ends.len() * nh);
        let last = ends.iter().copied().max().unwrap_or(0);
        let p1 = (p0 - p0 % SEGMENT + SEGMENT).min(last);
        ms.fill(f32::NEG_INFINITY);
        ls.fill(0.0);
        accs.fill(0.0);
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.scores.resize(TILE * nqp, 0.0);
            sc.seen.resize(nq, 0);
            sc.rescale.resize(nq, 0.0);
            let mut t0 = p0;
            while t0 < p1 {
                let t1 = (t0 - t0 % TILE + TILE).min(p1);
                let n = t1 - t0;
                // The tile's cache rows: straight from an f32 cache, widened from an f16 one.
                if let Store::F16(k) = self.store {
                    sc.wide.resize(n * kw, 0.0);
                    for j in 0..n {
                        let slot = self.kv.slot(block_table, t0 + j);
                        f16::widen(
                            &k[slot * kw..(slot + 1) * kw],
                            &mut sc.wide[j * kw..(j + 1) * kw],
                        );
                    }
                }
                let mut rows: [&[f32]; TILE] = [&[]; TILE];
                for (j, row) in rows.iter_mut().take(n).enumerate() {
                    *row = match self.store {
                        Store::F32(k) => {
                            let slot = self.kv.slot(block_table, t0 + j);
                            &k[slot * kw..(slot + 1) * kw]
                        }
                        Store::F16(_) => &sc.wide[j * kw..(j + 1) * kw],
                    };
                }
                let rows = &rows[..n];
                mla_scores::scores(qt, nqp, kw, rows, &mut sc.scores[..n * nqp]);
                // Rows of the tile each token sees (a causal prefill's last tile is cut short
                // for its earlier tokens).
                let seen = |t: usize| ends[t].saturating_sub(t0).min(n);
                for (t, s) in sc.seen.chunks_exact_mut(nh).enumerate() {
                    s.fill(seen(t));
                }
                tile_step(
                    &mut sc.scores,
                    (n, nqp),
                    &sc.seen,
                    self.scale,
                    (&mut *ms, &mut *ls),
                    &mut sc.rescale,
                );
                for (acc, &a) in accs.chunks_exact_mut(r).zip(&sc.rescale) {
                    if a != 1.0 {
                        for x in acc {
                            *x *= a;
                        }
                    }
                }
                // Accumulate the tile: per query, its latent sum stays in registers across
                // the tile's rows; all queries at once when every token sees the whole tile.
                let w = &sc.scores[..n * nqp];
                if (0..ends.len()).all(|t| seen(t) == n) {
                    accumulate(accs, r, (w, nqp), nq, rows);
                } else {
                    for t in 0..ends.len() {
                        let nv = seen(t);
                        if nv > 0 {
                            let acc = &mut accs[t * nh * r..(t + 1) * nh * r];
                            accumulate(acc, r, (&w[t * nh..], nqp), nh, &rows[..nv]);
                        }
                    }
                }
                t0 = t1;
            }
        });
    }
}

/// A unit of work: tokens `i..i + tq` of sequence `seq`, heads `h0..h1`, segments `s0..s1`
/// (split tasks have one token and one segment).
#[derive(Clone, Copy)]
struct Task {
    seq: usize,
    i: usize,
    tq: usize,
    h0: usize,
    h1: usize,
    s0: usize,
    s1: usize,
    /// Where its per-segment partials go in the partial buffer, when split.
    partial: Option<usize>,
}

/// The attention's widths: heads, latent (`kv_lora_rank`) and rope key widths.
#[derive(Clone, Copy)]
pub struct Dims {
    pub heads: usize,
    pub latent: usize,
    pub rope: usize,
}

impl Dims {
    pub(crate) fn of(c: &DeepSeekConfig) -> Dims {
        Dims {
            heads: c.n_heads,
            latent: c.kv_lora_rank,
            rope: c.qk_rope_head_dim,
        }
    }
}

/// `o_lat[t, h] = Σ_p softmax_p(scale · q[t, h] · k_p) · c_p` (see the module docs).
/// `q` is `[T, heads, latent + rope]` (`[q_lat | q_pe]` per head); `o_lat` is
/// `[T, heads, latent]`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    pool: &ThreadPool,
    kv: &KvCache,
    layer: usize,
    batch: &Batch,
    dims: Dims,
    scale: f32,
    q: &[f32],
    o_lat: &mut [f32],
) {
    let (nh, r, kw) = (dims.heads, dims.latent, dims.latent + dims.rope);
    let ctx = Ctx {
        kv,
        store: match kv.dtype() {
            KvDtype::F32 => Store::F32(kv.layer_f32(layer).0),
            KvDtype::F16 => Store::F16(kv.layer(layer).0),
        },
        r,
        kw,
        scale,
    };
    let toks: Vec<(usize, usize)> = batch
        .seqs
        .iter()
        .enumerate()
        .flat_map(|(si, s)| (0..s.len).map(move |i| (si, i)))
        .collect();
    if toks.is_empty() {
        return;
    }
    let target = pool.threads() * 4;
    let n_segs = |(si, i): (usize, usize)| (batch.seqs[si].pos0 + i + 1).div_ceil(SEGMENT);
    // Enough tokens: one task per block of consecutive tokens with all heads (each cache
    // row read once per block). Else split by segment (partials folded afterwards), then
    // by heads.
    let split = toks.len() < target;
    let mut tasks = Vec::new();
    let mut partial_len = 0;
    if !split {
        let tq = (toks.len() / target).clamp(1, (BLOCK_QUERIES / nh).max(1));
        for (si, s) in batch.seqs.iter().enumerate() {
            for i in (0..s.len).step_by(tq) {
                let tq = tq.min(s.len - i);
                tasks.push(Task {
                    seq: si,
                    i,
                    tq,
                    h0: 0,
                    h1: nh,
                    s0: 0,
                    s1: n_segs((si, i + tq - 1)),
                    partial: None,
                });
            }
        }
    } else {
        let units: usize = toks.iter().map(|&t| n_segs(t)).sum();
        // Head ranges in whole vectors of queries (the score kernel pads to them).
        let groups = target.div_ceil(units).clamp(1, nh);
        let hc = nh
            .div_ceil(groups)
            .next_multiple_of(mla_scores::LANES)
            .min(nh);
        for &(si, i) in &toks {
            let segs = n_segs((si, i));
            let base = partial_len;
            partial_len += segs * nh * (r + 2);
            for s in 0..segs {
                for h0 in (0..nh).step_by(hc) {
                    tasks.push(Task {
                        seq: si,
                        i,
                        tq: 1,
                        h0,
                        h1: (h0 + hc).min(nh),
                        s0: s,
                        s1: s + 1,
                        partial: Some(base + s * nh * (r + 2)),
                    });
                }
            }
        }
    }
    // Per split segment: [nh] maxes, [nh] sums, [nh, r] accumulators.
    let mut partials = vec![0.0f32; partial_len];
    let part_ptr = Raw(partials.as_mut_ptr());
    let out_ptr = Raw(o_lat.as_mut_ptr());
    pool.run(tasks.len(), |ti| {
        let tk = tasks[ti];
        let s = &batch.seqs[tk.seq];
        let row = s.start + tk.i;
        let ends: Vec<usize> = (0..tk.tq).map(|t| s.pos0 + tk.i + t + 1).collect();
        let nq = tk.h1 - tk.h0;
        match tk.partial {
            Some(base) => {
                let qh = &q[(row * nh + tk.h0) * kw..(row * nh + tk.h1) * kw];
                // SAFETY: each (token, segment, head range) partial is written by one task.
                let (ms, ls, accs) = unsafe {
                    let p = part_ptr.at(base);
                    (
                        std::slice::from_raw_parts_mut(p.add(tk.h0), nq),
                        std::slice::from_raw_parts_mut(p.add(nh + tk.h0), nq),
                        std::slice::from_raw_parts_mut(p.add(2 * nh + tk.h0 * r), nq * r),
                    )
                };
                let mut qt = Vec::new();
                let nqp = mla_scores::transpose(qh, nq, kw, &mut qt);
                ctx.segment(
                    &s.block_table,
                    (tk.s0 * SEGMENT, &ends),
                    nq,
                    (&qt, nqp),
                    (ms, ls, accs),
                );
            }
            None => {
                // All heads of tokens row..row + tq.
                let nq = tk.tq * nh;
                let qb = &q[row * nh * kw..(row + tk.tq) * nh * kw];
                // SAFETY: each token's heads are written by this task alone.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(out_ptr.at(row * nh * r), nq * r) };
                let (mut ms, mut ls, mut accs) = (vec![0.0; nq], vec![0.0; nq], vec![0.0; nq * r]);
                let mut fm = vec![f32::NEG_INFINITY; nq];
                let mut fl = vec![0.0f32; nq];
                out.fill(0.0);
                // Transposed once for all the task's segments.
                let mut qt = Vec::new();
                let nqp = mla_scores::transpose(qb, nq, kw, &mut qt);
                for seg in tk.s0..tk.s1 {
                    let p0 = seg * SEGMENT;
                    ctx.segment(
                        &s.block_table,
                        (p0, &ends),
                        nh,
                        (&qt, nqp),
                        (&mut ms, &mut ls, &mut accs),
                    );
                    for (t, &end) in ends.iter().enumerate() {
                        if end <= p0 {
                            continue;
                        }
                        for h in t * nh..(t + 1) * nh {
                            let mut st = State {
                                m: fm[h],
                                l: fl[h],
                                acc: &mut out[h * r..(h + 1) * r],
                            };
                            st.fold(ms[h], ls[h], &accs[h * r..(h + 1) * r]);
                            (fm[h], fl[h]) = (st.m, st.l);
                        }
                    }
                }
                for h in 0..nq {
                    let inv = fl[h];
                    for x in &mut out[h * r..(h + 1) * r] {
                        *x /= inv;
                    }
                }
            }
        }
    });
    if !split {
        return;
    }
    // Fold each split token's segments left to right (same order as the inline path).
    let mut base = 0;
    for &(si, i) in &toks {
        let segs = n_segs((si, i));
        let row = batch.seqs[si].start + i;
        for h in 0..nh {
            let out = &mut o_lat[(row * nh + h) * r..(row * nh + h + 1) * r];
            out.fill(0.0);
            let mut st = State {
                m: f32::NEG_INFINITY,
                l: 0.0,
                acc: out,
            };
            for seg in 0..segs {
                let p = &partials[base + seg * nh * (r + 2)..base + (seg + 1) * nh * (r + 2)];
                st.fold(p[h], p[nh + h], &p[2 * nh + h * r..2 * nh + (h + 1) * r]);
            }
            let inv = st.l;
            for x in st.acc.iter_mut() {
                *x /= inv;
            }
        }
        base += segs * nh * (r + 2);
    }
}

/// A buffer the tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct Raw(*mut f32);
// SAFETY: tasks write disjoint elements; `pool.run` returns only when all are done.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Raw {
    /// # Safety
    /// `i` is inside the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvLayout;
    use rand::{Rng, SeedableRng};

    /// Exact softmax-weighted latents in f64.
    fn naive(kv: &KvCache, bt: &[u32], d: Dims, scale: f32, q: &[f32], n: usize) -> Vec<f64> {
        let (r, kw) = (d.latent, d.latent + d.rope);
        let k = kv.layer_f32(0).0;
        let mut out = vec![0.0f64; d.heads * r];
        for h in 0..d.heads {
            let qh = &q[h * kw..(h + 1) * kw];
            let s: Vec<f64> = (0..n)
                .map(|p| {
                    let row = &k[kv.slot(bt, p) * kw..][..kw];
                    qh.iter()
                        .zip(row)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for (p, &sp) in s.iter().enumerate() {
                let w = (sp - m).exp() / z;
                let row = &k[kv.slot(bt, p) * kw..][..r];
                for (o, &c) in out[h * r..(h + 1) * r].iter_mut().zip(row) {
                    *o += w * c as f64;
                }
            }
        }
        out
    }

    #[test]
    fn segments_tiles_and_splits_give_one_answer() {
        let d = Dims {
            heads: 4,
            latent: 32,
            rope: 8,
        };
        let kw = d.latent + d.rope;
        let (bs, n) = (16, 2 * SEGMENT + 100);
        let blocks = n.div_ceil(bs);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let layout = KvLayout {
            n_layers: 1,
            k_width: kw,
            v_width: 0,
        };
        let mut kv = KvCache::with_dtype(layout, bs, blocks + 3, KvDtype::F32);
        for x in kv.layer_f32_mut(0).0.iter_mut() {
            *x = rng.random_range(-1.0f32..1.0);
        }
        // A scrambled block table: pages need not be in order.
        let mut bt: Vec<u32> = (0..blocks as u32)
            .map(|b| (b * 7 + 3) % (blocks as u32 + 3))
            .collect();
        bt.dedup();
        assert_eq!(bt.len(), blocks);
        let scale = 0.3;
        // A prefill of 40 tokens across a segment boundary, and each token alone.
        let (last, pos0) = (40, 2 * SEGMENT - 20);
        let q: Vec<f32> = (0..last * d.heads * kw)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let width = d.heads * d.latent;
        let mut pre = Batch::default();
        pre.push(&vec![0; last], pos0, bt.clone(), true);
        let mut outs = Vec::new();
        // 1 and 3 threads block the prefill's tokens 10 and 3 at a time.
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads);
            let mut o = vec![0.0; last * width];
            attend(&pool, &kv, 0, &pre, d, scale, &q, &mut o);
            outs.push(o);
        }
        // Each token alone (a decode step: split into segment tasks).
        let pool = ThreadPool::new(2);
        let mut alone = vec![0.0; last * width];
        for t in 0..last {
            let mut dec = Batch::default();
            dec.push(&[0], pos0 + t, bt.clone(), true);
            let qt = &q[t * d.heads * kw..(t + 1) * d.heads * kw];
            attend(
                &pool,
                &kv,
                0,
                &dec,
                d,
                scale,
                qt,
                &mut alone[t * width..(t + 1) * width],
            );
        }
        outs.push(alone);
        for o in &outs {
            assert!(o
                .iter()
                .zip(&outs[0])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        let q_last = &q[(last - 1) * d.heads * kw..];
        let want = naive(&kv, &bt, d, scale, q_last, pos0 + last);
        let err = outs[0][(last - 1) * width..]
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "max error {err} against f64");
    }
}
