//! The grid index the IQ2 and IQ1 writers search (ggml's `iq2xs_init_impl`): for each point of
//! the 8-dimensional lattice with 2 bits per coordinate, either the grid row that is that point,
//! or the rows nearest to it, so the writers can snap a block of 8 values to a row cheaply.
//!
//! Coordinates are ggml's: level `l` (0..=3) of a coordinate is the odd value `2l + 1`, and a
//! point is indexed by its levels, 2 bits each, coordinate 0 lowest. The grids we carry for
//! the dequantizers (`iq_grids.rs`) hold each row's magnitudes instead ({8, 25, 43} for IQ2,
//! {-1, 0, 1} for IQ1), and their k-th smallest magnitude is level k, which is how ggml's
//! packed `kgrid_2bit_*`/`kgrid_1bit_2048` tables encode the same rows.
//!
//! The neighbour list of an off-grid point holds every row whose squared distance is among the
//! `nwant` smallest distances (3 for IQ1, 1 for IQ2_S, 2 for IQ2_XXS/IQ2_XS), in ascending
//! (distance, row) order — what ggml gets by sorting all rows by that key. The writers pick the
//! best of these by weighted error, taking the first on ties, so the order matters.

use std::sync::OnceLock;

use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use super::GgmlType;

/// Points of the lattice that ggml indexes: the largest index whose levels are all ≤ 2 is
/// 0b1010_1010_1010_1010 = 43690, and ggml's map has 43692 entries.
const MAP_SIZE: usize = 43692;

/// One grid and its lattice index.
pub(super) struct Iq2Index {
    /// Each row's coordinates, `2l + 1` (ggml's `kgrid_q2xs` viewed as `int8_t[8]`).
    grid: Vec<[i8; 8]>,
    /// Per lattice point: the row (≥ 0), or `-(offset + 1)` of its entry in `neighbours`.
    map: Vec<i32>,
    /// Per off-grid point: the count, then that many row numbers.
    neighbours: Vec<u16>,
}

impl Iq2Index {
    /// Row `i`'s coordinates (odd values 1..=7).
    #[inline(always)]
    pub(super) fn row(&self, i: usize) -> &[i8; 8] {
        &self.grid[i]
    }

    /// The point with levels `u` (2 bits per coordinate): `Ok(row)` when a grid row is that
    /// point, else `Err(rows)`, its nearest rows in ggml's order. `u` must be below 43692
    /// (levels of at most 2 in the top coordinate, as the writers produce).
    #[inline(always)]
    pub(super) fn lookup(&self, u: usize) -> Result<usize, &[u16]> {
        let m = self.map[u];
        if m >= 0 {
            return Ok(m as usize);
        }
        let at = (-m - 1) as usize;
        let n = self.neighbours[at] as usize;
        Err(&self.neighbours[at + 1..at + 1 + n])
    }
}

/// The index for `ty`'s grid (IQ2_XXS, IQ2_XS, IQ2_S, or IQ1_S/IQ1_M, which share one),
/// built on first use.
pub(super) fn iq2_index(ty: GgmlType) -> &'static Iq2Index {
    use GgmlType::*;
    static INDEX: [OnceLock<Iq2Index>; 4] = [const { OnceLock::new() }; 4];
    let (slot, nwant): (usize, usize) = match ty {
        IQ2_XXS => (0, 2),
        IQ2_XS => (1, 2),
        IQ1_S | IQ1_M => (2, 3),
        IQ2_S => (3, 1),
        _ => panic!("iq2_index: {ty:?} has no IQ2-style grid"),
    };
    INDEX[slot].get_or_init(|| match ty {
        IQ2_XXS => build(&IQ2XXS_GRID, nwant),
        IQ2_XS => build(&IQ2XS_GRID, nwant),
        IQ2_S => build(&IQ2S_GRID, nwant),
        _ => build(&IQ1S_GRID, nwant),
    })
}

/// Each byte of a carried grid row as its level: the byte's rank among the grid's distinct
/// byte values (IQ1's {-1, 0, 1} as i8, IQ2's magnitudes {8, 25, 43}).
fn levels_of(grid: &[u64]) -> Vec<[u8; 8]> {
    let mut values: Vec<i8> = grid
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .map(|b| b as i8)
        .collect();
    values.sort_unstable();
    values.dedup();
    assert!(values.len() <= 4, "a 2-bit grid has at most 4 levels");
    grid.iter()
        .map(|r| {
            let b = r.to_le_bytes();
            std::array::from_fn(|k| values.iter().position(|&v| v == b[k] as i8).unwrap() as u8)
        })
        .collect()
}

fn build(carried: &[u64], nwant: usize) -> Iq2Index {
    let levels = levels_of(carried);
    let grid: Vec<[i8; 8]> = levels
        .iter()
        .map(|l| std::array::from_fn(|k| 2 * l[k] as i8 + 1))
        .collect();
    let mut map = vec![-1i32; MAP_SIZE];
    for (i, l) in levels.iter().enumerate() {
        let index = l
            .iter()
            .enumerate()
            .fold(0usize, |acc, (k, &q)| acc | (q as usize) << (2 * k));
        map[index] = i as i32;
    }
    let mut neighbours = Vec::new();
    let mut dist = vec![0i32; grid.len()];
    for (i, slot) in map.iter_mut().enumerate() {
        if *slot >= 0 {
            continue;
        }
        let pos: [i32; 8] = std::array::from_fn(|k| 2 * ((i >> (2 * k)) & 3) as i32 + 1);
        for (d, row) in dist.iter_mut().zip(&grid) {
            *d = row
                .iter()
                .zip(&pos)
                .map(|(&g, &p)| (g as i32 - p) * (g as i32 - p))
                .sum();
        }
        // the nwant smallest distinct distances; every row at one of them is a neighbour
        let mut smallest: Vec<i32> = Vec::with_capacity(nwant + 1);
        for &d in &dist {
            if smallest.contains(&d) {
                continue;
            }
            let at = smallest.partition_point(|&s| s < d);
            if at < nwant {
                smallest.insert(at, d);
                smallest.truncate(nwant);
            }
        }
        let limit = *smallest.last().expect("a grid has rows");
        let mut near: Vec<(i32, u16)> = dist
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d <= limit)
            .map(|(j, &d)| (d, j as u16))
            .collect();
        near.sort_unstable();
        *slot = -(neighbours.len() as i32 + 1);
        neighbours.push(near.len() as u16);
        neighbours.extend(near.iter().map(|&(_, j)| j));
    }
    Iq2Index {
        grid,
        map,
        neighbours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_grid_points_map_to_their_row_and_off_grid_points_to_the_nearest() {
        for ty in [
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ1_S,
        ] {
            let index = iq2_index(ty);
            let n_rows = index.grid.len();
            let mut on_grid = 0;
            for u in 0..MAP_SIZE {
                let pos: [i32; 8] = std::array::from_fn(|k| 2 * ((u >> (2 * k)) & 3) as i32 + 1);
                let d2 = |r: usize| -> i32 {
                    index
                        .row(r)
                        .iter()
                        .zip(&pos)
                        .map(|(&g, &p)| (g as i32 - p).pow(2))
                        .sum()
                };
                match index.lookup(u) {
                    Ok(r) => {
                        on_grid += 1;
                        assert_eq!(d2(r), 0, "{ty:?} point {u}");
                    }
                    Err(near) => {
                        assert!(!near.is_empty());
                        let best = (0..n_rows).map(d2).min().unwrap();
                        assert_eq!(d2(near[0] as usize), best, "{ty:?} point {u}");
                        assert!(near
                            .windows(2)
                            .all(|w| (d2(w[0] as usize), w[0]) < (d2(w[1] as usize), w[1])));
                    }
                }
            }
            assert_eq!(on_grid, n_rows, "{ty:?}: every row is one lattice point");
        }
    }
}
