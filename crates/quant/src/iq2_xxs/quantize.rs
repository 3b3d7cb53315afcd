//! IQ2_XXS quantizer (FORMATS §4.8): ggml's `quantize_row_iq2_xxs_impl` as ds4's `quants.c`
//! runs it. An importance vector is required here; the public entry points supply the
//! `Σ x²` fallback when the caller has none.
//!
//! The quantizer works on the lattice levels 1, 3, 5 (`q = 2l + 1`, `l` the 2-bit field of
//! `KGRID`), although dequantization uses 8/8, 25/8, 43/8; that mismatch is part of the
//! format as ggml defines it, and matching it is what keeps the output byte-compatible.

use std::sync::OnceLock;

use super::tables::KGRID;
use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::fit::{f16_bits, make_qp_quants, nearest_int, GROUP_MAX_EPS};

/// Codes `u = Σ l_i << 2i` with every field ≤ 2 are below this (0xAAAA + 1).
const MAP_SIZE: usize = 0xAAAA + 1;

/// Lookup tables for snapping an 8-vector of 2-bit fields onto the 256-point lattice.
struct Tables {
    /// `lattice[g][i]`: field `i` of grid point `g`, in `0..=2`.
    lattice: [[u8; 8]; 256],
    /// For each code: `Ok(grid index)` when it is a lattice point, else `Err((start, len))`
    /// of its neighbour list in `neighbours`. Codes with a field of 3 are never looked up
    /// (fields are clamped to 0..=2) and map to an empty list.
    map: Vec<Result<u8, (u32, u16)>>,
    neighbours: Vec<u8>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(build_tables)
}

fn build_tables() -> Tables {
    let mut lattice = [[0u8; 8]; 256];
    for (g, pt) in lattice.iter_mut().enumerate() {
        for (i, f) in pt.iter_mut().enumerate() {
            *f = ((KGRID[g] >> (2 * i)) & 3) as u8;
        }
    }
    let mut map = vec![Err((0, 0)); MAP_SIZE];
    for (g, &k) in KGRID.iter().enumerate() {
        map[k as usize] = Ok(g as u8);
    }
    let mut neighbours = Vec::new();
    let mut by_dist: Vec<(u32, u8)> = Vec::with_capacity(256);
    for (u, entry) in map.iter_mut().enumerate() {
        if entry.is_ok() || (0..8).any(|i| (u >> (2 * i)) & 3 == 3) {
            continue;
        }
        // Squared distance in the {1,3,5} coordinates, i.e. 4× the distance in fields.
        by_dist.clear();
        for (g, pt) in lattice.iter().enumerate() {
            let d2: u32 = (0..8)
                .map(|i| {
                    let diff = 2 * (pt[i] as i32 - ((u >> (2 * i)) & 3) as i32);
                    (diff * diff) as u32
                })
                .sum();
            by_dist.push((d2, g as u8));
        }
        // Ordered by (distance, index), as ggml's qsort comparator does; the order decides
        // which candidate wins a tie in the weighted search.
        by_dist.sort_unstable();
        // Keep the two nearest distinct distance shells (everything, if there is only one).
        let d0 = by_dist[0].0;
        let limit = by_dist.iter().map(|e| e.0).find(|&d| d > d0).unwrap_or(d0);
        let keep = by_dist.iter().take_while(|e| e.0 <= limit).count();
        *entry = Err((neighbours.len() as u32, keep as u16));
        neighbours.extend(by_dist[..keep].iter().map(|e| e.1));
    }
    Tables {
        lattice,
        map,
        neighbours,
    }
}

/// Among the neighbour list of an off-lattice code, the lattice point nearest to `xval` under
/// the `waux`-weighted squared error at `scale`; writes its fields into `l`. Ties keep the
/// first candidate in list order.
fn best_neighbour(
    t: &Tables,
    start: u32,
    len: u16,
    xval: &[f32],
    waux: &[f32],
    scale: f32,
    l: &mut [u8],
) -> u8 {
    let mut best_d2 = f32::MAX;
    let mut best = None;
    for &g in &t.neighbours[start as usize..start as usize + len as usize] {
        let pt = &t.lattice[g as usize];
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let q = (2 * pt[i] + 1) as f32;
            let diff = scale * q - xval[i];
            d2 += waux[i] * diff * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = Some(g);
        }
    }
    // Unreachable for finite input: a finite d2 always beats f32::MAX. Falling back to the
    // nearest point keeps NaN weights from panicking.
    let g = best.unwrap_or(t.neighbours[start as usize]);
    l.copy_from_slice(&t.lattice[g as usize]);
    g
}

/// Snaps 8 magnitudes at inverse scale `id` to the lattice: the 2-bit fields of the nearest
/// level, then, if that tuple is not a lattice point, the best of its neighbours. Returns the
/// grid index; `l` receives the fields.
fn snap(t: &Tables, xval: &[f32], waux: &[f32], id: f32, scale: f32, l: &mut [u8]) -> u8 {
    let mut u = 0usize;
    for i in 0..8 {
        // Level q = 2l + 1 nearest to id·x.
        let li = nearest_int(0.5 * (id * xval[i] - 1.0)).clamp(0, 2);
        l[i] = li as u8;
        u |= (li as usize) << (2 * i);
    }
    match t.map[u] {
        Ok(g) => g,
        Err((start, len)) => best_neighbour(t, start, len, xval, waux, scale, l),
    }
}

/// Builds the neighbour tables now rather than inside the first quantization call.
pub(crate) fn init() {
    tables();
}

/// Quantizes whole blocks of `x` into `out`; `importance` has one value per element of `x`.
/// Lengths are checked by the caller.
pub(crate) fn quantize(x: &[f32], importance: &[f32], out: &mut [u8]) {
    let t = tables();
    for (b, (xb, blk)) in x
        .chunks_exact(BLOCK_ELEMS)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        quantize_block(t, xb, &importance[b * BLOCK_ELEMS..][..BLOCK_ELEMS], blk);
    }
}

fn quantize_block(t: &Tables, x: &[f32], imp: &[f32], blk: &mut [u8]) {
    let mut q2 = [0u32; 16];
    let mut scales = [0.0f32; 8];
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / BLOCK_ELEMS as f32;
    let mut max_scale = 0.0f32;

    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        let qw = &imp[32 * ib..32 * ib + 32];
        let mut weight = [0.0f32; 32];
        let mut waux = [0.0f32; 32];
        for i in 0..32 {
            weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            waux[i] = weight[i].sqrt();
        }

        // Signs: the format stores 7 sign bits per octet and implies the 8th by even parity.
        // With an odd count of negatives, the element cheapest to get wrong (least w·x²) is
        // quantized with the wrong sign: its magnitude becomes −|x|.
        let mut xval = [0.0f32; 32];
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let mut s = 0u8;
            for i in 0..8 {
                let v = xb[8 * k + i];
                if v >= 0.0 {
                    xval[8 * k + i] = v;
                } else {
                    xval[8 * k + i] = -v;
                    s |= 1 << i;
                }
            }
            if s.count_ones() % 2 == 1 {
                let cost = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                let mut imin = 0;
                let mut min = cost(0);
                for i in 1..8 {
                    let c = cost(i);
                    if c < min {
                        min = c;
                        imin = i;
                    }
                }
                xval[8 * k + imin] = -xval[8 * k + imin];
                s ^= 1 << imin;
            }
            signs[k] = s & 127;
        }

        let mut max = xval[0];
        for &v in &xval[1..] {
            if v > max {
                max = v;
            }
        }
        if max < GROUP_MAX_EPS {
            // Group left all-zero (grid 0, signs 0); its 4-bit scale is set below.
            continue;
        }

        // Starting scale from a 5-level fit (codes 0..=4 of the level spacing), giving the
        // largest level 5 an effective value of 3·scale.
        let mut l = [0u8; 32];
        let mut scale = make_qp_quants(4, &xval, &mut l, &weight);
        let eff_max = scale * 3.0;
        if eff_max <= 0.0 {
            // All weights zero (zero importance): every scale is equally good, and ds4
            // leaves the group zero.
            continue;
        }

        // Search inverse scales around 5/eff_max, keeping the lattice assignment whose
        // least-squares scale explains the most weighted energy, (Σwxq)²/Σwq².
        let mut grid_idx = [0u8; 4];
        let mut best = 0.0f32;
        let mut laux = [0u8; 32];
        for is in -6i32..=6 {
            let id = (5.0 + is as f32 * 0.1) / eff_max;
            let this_scale = 1.0 / id;
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                snap(
                    t,
                    &xval[r.clone()],
                    &waux[r.clone()],
                    id,
                    this_scale,
                    &mut laux[r],
                );
            }
            let (sumqx, sumq2) = lsq_terms(&weight, &xval, &laux);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l = laux;
            }
        }

        // Refine once: re-snap at the best scale found and refit the scale.
        if scale > 0.0 {
            let id = 1.0 / scale;
            for (k, g) in grid_idx.iter_mut().enumerate() {
                let r = 8 * k..8 * k + 8;
                *g = snap(t, &xval[r.clone()], &waux[r.clone()], id, scale, &mut l[r]);
            }
            let (sumqx, sumq2) = lsq_terms(&weight, &xval, &l);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        } else {
            // Not reachable (eff_max > 0 implies a positive scale), but `l` may hold 5-level
            // codes here that are not lattice fields; encode the group as zero instead.
            continue;
        }

        if scale < 0.0 {
            // Only possible through parity-flipped elements: store |scale| and flip all 8
            // signs of every octet (complementing 7 bits keeps the parity rule consistent).
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            q2[2 * ib] |= (grid_idx[k] as u32) << (8 * k);
            q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        if scale > max_scale {
            max_scale = scale;
        }
    }

    if max_scale == 0.0 {
        blk.fill(0);
        return;
    }
    // One f16 block scale; each group stores ls with group scale ≈ d·(2·ls + 1), so the
    // largest group gets ls = 15 at d = max/31.
    let d = max_scale / 31.0;
    blk[0..2].copy_from_slice(&f16_bits(d));
    let id = 1.0 / d;
    for ib in 0..8 {
        let ls = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 15);
        q2[2 * ib + 1] |= (ls as u32) << 28;
    }
    for (i, w) in q2.iter().enumerate() {
        blk[2 + 4 * i..6 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
}

/// `(Σ w·x·q, Σ w·q²)` with `q = 2l + 1`.
fn lsq_terms(weight: &[f32; 32], xval: &[f32; 32], l: &[u8; 32]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for i in 0..32 {
        let w = weight[i];
        let q = (2 * l[i] + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_and_neighbour_lists() {
        let t = tables();
        let mut off_grid = 0;
        let mut total = 0usize;
        for u in 0..MAP_SIZE {
            if (0..8).any(|i| (u >> (2 * i)) & 3 == 3) {
                continue;
            }
            let fields: Vec<i32> = (0..8).map(|i| ((u >> (2 * i)) & 3) as i32).collect();
            let dist = |g: u8| -> i32 {
                (0..8)
                    .map(|i| (2 * (t.lattice[g as usize][i] as i32 - fields[i])).pow(2))
                    .sum()
            };
            match t.map[u] {
                Ok(g) => assert_eq!(KGRID[g as usize] as usize, u),
                Err((start, len)) => {
                    off_grid += 1;
                    total += len as usize;
                    let list = &t.neighbours[start as usize..][..len as usize];
                    assert!(!list.is_empty());
                    // Sorted by (distance, index) and spanning exactly two distance shells,
                    // the nearer of which is the true nearest distance over the whole grid.
                    let ds: Vec<(i32, u8)> = list.iter().map(|&g| (dist(g), g)).collect();
                    assert!(ds.windows(2).all(|w| w[0] < w[1]));
                    let nearest = (0..=255u8).map(dist).min().unwrap();
                    assert_eq!(ds[0].0, nearest);
                    let shells: std::collections::BTreeSet<i32> = ds.iter().map(|e| e.0).collect();
                    assert!(shells.len() <= 2);
                    let last = *shells.iter().last().unwrap();
                    let in_range = (0..=255u8).filter(|&g| dist(g) <= last).count();
                    assert_eq!(
                        in_range,
                        list.len(),
                        "list must hold every point of its shells"
                    );
                    if shells.len() == 1 {
                        assert_eq!(in_range, 256, "one shell only when nothing lies beyond it");
                    }
                }
            }
        }
        // 3^8 tuples of fields 0..=2, 256 of them on the lattice.
        assert_eq!(off_grid, 6561 - 256);
        assert_eq!(total, t.neighbours.len());
    }

    #[test]
    fn on_lattice_input_is_reproduced() {
        // x built from lattice points at one scale, with even sign parity per octet: the
        // quantizer should find those points and signs exactly.
        let t = tables();
        let mut x = [0.0f32; 256];
        let imp = [1.0f32; 256];
        let pts = [7usize, 100, 255, 31, 0, 64, 200, 128];
        for ib in 0..8 {
            for k in 0..4 {
                let g = pts[(ib + k) % 8];
                for i in 0..8 {
                    let q = (2 * t.lattice[g][i] + 1) as f32;
                    let neg = (i == 1 || i == 2) && k % 2 == 0;
                    x[32 * ib + 8 * k + i] = if neg { -q } else { q } * 0.01;
                }
            }
        }
        let mut blk = [0u8; 66];
        quantize_block(t, &x, &imp, &mut blk);
        for ib in 0..8 {
            let a = u32::from_le_bytes(blk[2 + 8 * ib..6 + 8 * ib].try_into().unwrap());
            let b = u32::from_le_bytes(blk[6 + 8 * ib..10 + 8 * ib].try_into().unwrap());
            assert_eq!(b >> 28, 15, "every group has the same scale");
            for k in 0..4 {
                assert_eq!(
                    (a >> (8 * k)) & 255,
                    pts[(ib + k) % 8] as u32,
                    "ib={ib} k={k}"
                );
                let s = (b >> (7 * k)) & 127;
                assert_eq!(s, if k % 2 == 0 { 0b110 } else { 0 }, "ib={ib} k={k}");
            }
        }
    }
}
