//! The search index of the IQ3 writers: ggml's `iq3xs_init_impl` (`kgrid_q3xs`, `kmap_q3xs`,
//! `kneighbors_q3xs`) for the 256-point grid of IQ3_XXS and the 512-point grid of IQ3_S,
//! built once, on first use.
//!
//! A grid point is four 3-bit levels `l` (the value `2l+1`); a quadruple of levels is keyed
//! `u = l0 | l1<<3 | l2<<6 | l3<<9`. For every key that is not a grid point, ggml keeps the grid
//! points at the `nwant` smallest squared distances (2 for IQ3_XXS, 3 for IQ3_S), all of them,
//! ordered by (distance, grid index): it `qsort`s (distance, index) pairs with a comparator
//! that breaks distance ties by index, a total order (indices are distinct), so the order does
//! not depend on qsort being unstable. The writers scan that list in order and keep the first
//! best, so the order decides ties.
//!
//! The grid points are not copied from ggml's `kgrid_256`/`kgrid_512`: they are read back from
//! the dequantizers' `iq3xxs_grid`/`iq3s_grid`, which list the same points in the same order
//! (as the values `{4,12,..,52,62}` and `2l+1`).

use std::sync::OnceLock;

use super::super::iq_grids::{IQ3S_GRID, IQ3XXS_GRID};

/// Keys of four 3-bit levels.
const KEYS: usize = 4096;

/// One grid's index (ggml's `iq3_data[gindex]`).
pub(super) struct Iq3Index {
    /// Each grid point's four levels (ggml's `(pg[i]-1)/2`).
    pub(super) levels: Vec<[u8; 4]>,
    /// Each grid point's four values `2l+1`, as the searches use them.
    pub(super) values: Vec<[f32; 4]>,
    /// Key → grid index, or -1 where the key is not a grid point.
    map: Vec<i16>,
    /// `neighbours[start[u]..start[u+1]]`: the candidate grid points of an off-grid key.
    start: Vec<u32>,
    neighbours: Vec<u16>,
}

impl Iq3Index {
    /// The grid index of key `u`, if it is a grid point.
    #[inline(always)]
    pub(super) fn grid_index(&self, u: usize) -> Option<u16> {
        let g = self.map[u];
        (g >= 0).then_some(g as u16)
    }

    /// The neighbours of an off-grid key, nearest first (ties by grid index).
    #[inline(always)]
    pub(super) fn neighbours(&self, u: usize) -> &[u16] {
        &self.neighbours[self.start[u] as usize..self.start[u + 1] as usize]
    }
}

/// The key of four levels.
#[inline(always)]
pub(super) fn key(l: &[u8]) -> usize {
    l[0] as usize | (l[1] as usize) << 3 | (l[2] as usize) << 6 | (l[3] as usize) << 9
}

/// The IQ3_XXS grid's index (256 points, two distances of neighbours).
pub(super) fn iq3xxs_index() -> &'static Iq3Index {
    static INDEX: OnceLock<Iq3Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        // iq3xxs_grid stores level l as the magnitude at position l of this list
        const MAGNITUDES: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];
        let level = |b: u8| MAGNITUDES.iter().position(|&m| m == b).unwrap_or(0) as u8;
        build(&IQ3XXS_GRID, level, 2)
    })
}

/// The IQ3_S grid's index (512 points, three distances of neighbours).
pub(super) fn iq3s_index() -> &'static Iq3Index {
    static INDEX: OnceLock<Iq3Index> = OnceLock::new();
    INDEX.get_or_init(|| build(&IQ3S_GRID, |b| (b.max(1) - 1) / 2, 3))
}

/// ggml's `iq3xs_init_impl` for one grid (`level` reads a level from a grid byte).
fn build(grid: &[u32], level: impl Fn(u8) -> u8, nwant: usize) -> Iq3Index {
    let levels: Vec<[u8; 4]> = grid.iter().map(|g| g.to_le_bytes().map(&level)).collect();
    let values = levels
        .iter()
        .map(|l| l.map(|v| (2 * v + 1) as f32))
        .collect();
    let mut map = vec![-1i16; KEYS];
    for (i, l) in levels.iter().enumerate() {
        map[key(l)] = i as i16;
    }
    let mut start = Vec::with_capacity(KEYS + 1);
    let mut neighbours = Vec::new();
    let mut dist: Vec<(i32, u16)> = Vec::with_capacity(levels.len());
    for u in 0..KEYS {
        start.push(neighbours.len() as u32);
        if map[u] >= 0 {
            continue;
        }
        let pos = [0, 1, 2, 3].map(|k| ((u >> (3 * k)) & 7) as i32);
        dist.clear();
        for (j, l) in levels.iter().enumerate() {
            // (2l+1 - (2p+1))² summed, as ggml computes it
            let d2 = (0..4)
                .map(|k| {
                    let d = 2 * (l[k] as i32 - pos[k]);
                    d * d
                })
                .sum();
            dist.push((d2, j as u16));
        }
        // (distance, index) is a total order: unstable sorting gives ggml's qsort order
        dist.sort_unstable();
        let (mut d2, mut nhave) = (dist[0].0, 1);
        for &(d, j) in &dist {
            if d > d2 {
                if nhave == nwant {
                    break;
                }
                d2 = d;
                nhave += 1;
            }
            neighbours.push(j);
        }
    }
    start.push(neighbours.len() as u32);
    Iq3Index {
        levels,
        values,
        map,
        start,
        neighbours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grids read back from the dequantizer tables are ggml's kgrid: distinct points in
    /// ascending key order, every level in 0..8, the all-lowest point first.
    #[test]
    fn grids_are_ascending_distinct_keys() {
        for (idx, n) in [(iq3xxs_index(), 256), (iq3s_index(), 512)] {
            assert_eq!(idx.levels.len(), n);
            assert!(idx.levels.iter().flatten().all(|&l| l < 8));
            let keys: Vec<usize> = idx.levels.iter().map(|l| key(l)).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "not ascending");
            assert_eq!(idx.grid_index(0), Some(0));
        }
        // the XXS magnitudes round-trip: every byte of the table is one of the 8 magnitudes
        let mags = [4u8, 12, 20, 28, 36, 44, 52, 62];
        assert!(IQ3XXS_GRID
            .iter()
            .flat_map(|g| g.to_le_bytes())
            .all(|b| mags.contains(&b)));
        assert!(IQ3S_GRID
            .iter()
            .flat_map(|g| g.to_le_bytes())
            .all(|b| b % 2 == 1 && b <= 15));
    }

    /// Off-grid keys list neighbours sorted by (distance, index), covering exactly the
    /// `nwant` nearest distances.
    #[test]
    fn neighbours_are_the_nearest_distances_in_order() {
        for (idx, nwant) in [(iq3xxs_index(), 2), (iq3s_index(), 3)] {
            for u in 0..KEYS {
                let nb = idx.neighbours(u);
                if idx.grid_index(u).is_some() {
                    assert!(nb.is_empty());
                    continue;
                }
                let dist = |j: u16| -> i32 {
                    (0..4)
                        .map(|k| {
                            let d = idx.levels[j as usize][k] as i32 - ((u >> (3 * k)) & 7) as i32;
                            4 * d * d
                        })
                        .sum()
                };
                let keyed: Vec<(i32, u16)> = nb.iter().map(|&j| (dist(j), j)).collect();
                assert!(keyed.windows(2).all(|w| w[0] < w[1]));
                let mut all: Vec<i32> = (0..idx.levels.len() as u16).map(dist).collect();
                all.sort_unstable();
                all.dedup();
                let cut = all[nwant - 1];
                let want = (0..idx.levels.len() as u16)
                    .filter(|&j| dist(j) <= cut)
                    .count();
                assert_eq!(nb.len(), want, "key {u}");
            }
        }
    }
}
