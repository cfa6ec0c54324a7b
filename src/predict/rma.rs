//! RMA: per (image, class) row, the volume that maximises the reciprocal-moment
//! approximation of the expected metric (Wang & Dai, NeurIPS 2025).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::torch_sum::{torch_sum, BlockPartial, TorchBlocks};
use super::volume::{optimal_cut, Cut, CHUNK};
use super::{PredictError, ProbMap};

/// One pass over a row: what pruning, validation and the objective need.
#[derive(Clone, Copy, Debug)]
pub struct RowStats<T> {
    pub min: T,
    pub max: T,
    /// The row's probability mass, accumulated in f64 (non-finite if any value is).
    pub mass: f64,
    /// Count and mass of the pixels above 0.5: a volume whose score bounds the optimum's
    /// threshold from below, so the search can skip the many tiny probabilities.
    pub above_half: (usize, f64),
}

impl<T: Prob> RowStats<T> {
    const EMPTY: Self = RowStats {
        min: T::ONE,
        max: T::ZERO,
        mass: 0.0,
        above_half: (0, 0.0),
    };

    fn merge(self, other: Self) -> Self {
        RowStats {
            min: if other.min < self.min { other.min } else { self.min },
            max: if other.max > self.max { other.max } else { self.max },
            mass: self.mass + other.mass,
            above_half: (
                self.above_half.0 + other.above_half.0,
                self.above_half.1 + other.above_half.1,
            ),
        }
    }

    pub fn of(row: &[T]) -> Self {
        let partials: Vec<Self> = row.par_chunks(CHUNK).map(Self::of_chunk).collect();
        partials.into_iter().fold(Self::EMPTY, Self::merge)
    }

    /// One chunk, in `LANES` interleaved accumulators merged in a fixed order: the f64
    /// sums then vectorise (one running sum would wait on each addition). The masses are
    /// only screening inputs and the f64 order changes them by far less than the input
    /// precision resolves, so no output depends on the order. Four lanes keep the five
    /// accumulators in registers on baseline x86-64 (eight spill them).
    fn of_chunk(chunk: &[T]) -> Self {
        const LANES: usize = 4;
        let half = T::from_f64(0.5);
        let whole = chunk.len() / LANES * LANES;
        let (body, rest) = chunk.split_at(whole);
        let (mut min, mut max) = ([chunk[0]; LANES], [chunk[0]; LANES]);
        let (mut mass, mut heavy) = ([0.0f64; LANES], [0.0f64; LANES]);
        // A chunk has at most CHUNK (< 2^32) pixels.
        let mut count = [0u32; LANES];
        for values in body.chunks_exact(LANES) {
            for j in 0..LANES {
                let p = values[j];
                min[j] = if p < min[j] { p } else { min[j] };
                max[j] = if p > max[j] { p } else { max[j] };
                let x = p.to_f64();
                mass[j] += x;
                let above = p > half;
                count[j] += above as u32;
                // x or +0.0 by masking its bits: the conditional sum without a branch or
                // a conversion, so the loop vectorises.
                let keep = u64::from(above).wrapping_neg();
                heavy[j] += f64::from_bits(x.to_bits() & keep);
            }
        }
        let lane = |j: usize| RowStats {
            min: min[j],
            max: max[j],
            mass: mass[j],
            above_half: (count[j] as usize, heavy[j]),
        };
        let mut stats = (0..LANES).map(lane).fold(Self::EMPTY, Self::merge);
        for &p in rest {
            let x = p.to_f64();
            let above = p > half;
            stats = stats.merge(RowStats {
                min: p,
                max: p,
                mass: x,
                above_half: (above as usize, if above { x } else { 0.0 }),
            });
        }
        stats
    }

    /// The value below which the volume search may set pixels aside (see
    /// `RmaObjective::unselectable_below`), from the better of two known volumes: the
    /// pixels above 0.5, and the single largest pixel.
    fn search_floor(&self, objective: &RmaObjective) -> f64 {
        let (count, heavy) = self.above_half;
        let by_half = objective.unselectable_below(count as f64, heavy, self.mass);
        let by_top = objective.unselectable_below(1.0, self.max.to_f64(), self.mass);
        by_half.max(by_top)
    }

    /// rankseg's value checks: finite (a NaN or inf makes the f64 mass non-finite) and
    /// inside [0, 1].
    pub fn check(stats: &[Self]) -> Result<(), PredictError> {
        if stats.iter().any(|s| !s.mass.is_finite()) {
            return Err(PredictError(
                "probabilities must contain only finite values (found NaN or inf)".into(),
            ));
        }
        if let Some(s) = stats.iter().find(|s| s.min < T::ZERO || s.max > T::ONE) {
            let bad = if s.min < T::ZERO { s.min } else { s.max };
            return Err(PredictError(format!(
                "probabilities must be in the range [0, 1] (found {bad:?})"
            )));
        }
        Ok(())
    }
}

/// The outcome of the volume search over every row of a map.
pub struct RmaSearch<T> {
    /// Rows whose largest probability exceeds `pruning_prob`.
    pub active: Vec<bool>,
    /// The selection of each active row (`None`: inactive or empty).
    pub cuts: Vec<Option<Cut<T>>>,
    /// Each active row's mass as torch sums it (what rankseg divides by).
    pub torch_mass: Vec<Option<T>>,
}

pub fn search<T: Prob>(
    map: &ProbMap<T>,
    objective: &RmaObjective,
    pruning_prob: f64,
) -> Result<RmaSearch<T>, PredictError> {
    let scans: Vec<RowScan<T>> = map.rows().map(RowScan::of).collect();
    if scans.iter().any(|scan| !scan.in_unit) {
        // The full statistics name the offending value as rankseg does.
        let stats: Vec<RowStats<T>> = map.rows().map(RowStats::of).collect();
        RowStats::check(&stats)?;
    }
    // rankseg compares in the input's precision: `max p > float32(pruning_prob)`.
    let pruning = T::from_f64(pruning_prob);
    let active: Vec<bool> = scans.iter().map(|scan| scan.max > pruning).collect();
    let (cuts, torch_mass) = map
        .rows()
        .zip(scans.par_iter().zip(active.par_iter()))
        .map(|(row, (scan, &on))| {
            if !on {
                return (None, None);
            }
            let mu_t = scan.torch_mass(row);
            let stats = RowStats {
                min: T::ZERO,
                max: scan.max,
                mass: scan.mass,
                above_half: scan.above_half,
            };
            let floor = stats.search_floor(objective);
            let cut = optimal_cut(row, scan.max, (scan.mass, mu_t), floor, objective);
            (cut, Some(mu_t))
        })
        .unzip();
    Ok(RmaSearch {
        active,
        cuts,
        torch_mass,
    })
}

/// What one pass in the input precision tells about a row: its largest value, whether
/// all its values lie in [0, 1] (false for NaN), its mass in f64, the count and
/// approximate mass of its values above 0.5 (they only set the search floor, a hint), and
/// torch's sum block by block (see `TorchBlocks`), for the rows that stay active.
struct RowScan<T> {
    max: T,
    in_unit: bool,
    /// The mass in f64, in a fixed order of partial sums (the search screens with it;
    /// rankseg's own division uses torch's sum).
    mass: f64,
    above_half: (usize, f64),
    /// The partials of the row's whole torch-sum blocks, in order (empty where a block
    /// is longer than a chunk: then the sum takes a pass of its own).
    torch: Vec<BlockPartial<T>>,
}

impl<T: Prob> RowScan<T> {
    fn of(row: &[T]) -> Self {
        let blocks = chunked_blocks::<T>(row.len());
        let partials: Vec<Self> = row
            .par_chunks(CHUNK)
            .map(|chunk| Self::of_chunk(chunk, blocks))
            .collect();
        let start = RowScan {
            max: T::ZERO,
            in_unit: true,
            mass: 0.0,
            above_half: (0, 0.0),
            torch: Vec::new(),
        };
        partials.into_iter().fold(start, |mut a, b| {
            a.torch.extend(b.torch);
            RowScan {
                max: if b.max > a.max { b.max } else { a.max },
                in_unit: a.in_unit & b.in_unit,
                mass: a.mass + b.mass,
                above_half: (a.above_half.0 + b.above_half.0, a.above_half.1 + b.above_half.1),
                torch: a.torch,
            }
        })
    }

    /// Sixteen interleaved lanes, branch-free, compiled for the widest vector unit, so
    /// the scan runs at memory speed. A NaN escapes the comparisons but not the mass, so
    /// "in [0, 1]" is min >= 0, max <= 1 and a finite mass: three lane operations, where
    /// a per-value range test costs a mask conversion per value.
    fn of_chunk(chunk: &[T], blocks: Option<TorchBlocks>) -> Self {
        crate::simd::vectorized(
            #[inline(always)]
            move || {
                let mut scan = scan_lanes(chunk);
                if let Some(blocks) = blocks {
                    let whole = chunk.chunks_exact(blocks.block_len::<T>());
                    scan.torch = whole.map(|block| blocks.partial(block)).collect();
                }
                scan
            },
        )
    }

    /// The row's mass as torch sums it: the scan's block partials and the values after
    /// them, or a pass of its own.
    fn torch_mass(&self, row: &[T]) -> T {
        let Some(blocks) = chunked_blocks::<T>(row.len()) else {
            return crate::simd::vectorized(
                #[inline(always)]
                move || torch_sum(row),
            );
        };
        let rest = &row[blocks.blocks::<T>() * blocks.block_len::<T>()..];
        blocks.finish(self.torch.iter().copied(), rest)
    }
}

/// The torch-sum blocks of a row of `n` values, where whole blocks tile the scan's chunks
/// (every row of up to 2^27 values).
fn chunked_blocks<T: Prob>(n: usize) -> Option<TorchBlocks> {
    let blocks = TorchBlocks::new::<T>(n);
    CHUNK.is_multiple_of(blocks.block_len::<T>()).then_some(blocks)
}

#[inline(always)]
fn scan_lanes<T: Prob>(chunk: &[T]) -> RowScan<T> {
    const LANES: usize = 16;
    let half = T::from_f64(0.5);
    let (mut max, mut min) = ([T::ZERO; LANES], [T::ONE; LANES]);
    let (mut mass, mut count, mut heavy) = ([0.0f64; LANES], [0u32; LANES], [T::ZERO; LANES]);
    let body = chunk.chunks_exact(LANES);
    let rest = body.remainder();
    let mut add = |j: usize, p: T| {
        max[j] = if p > max[j] { p } else { max[j] };
        min[j] = if p < min[j] { p } else { min[j] };
        let above = p > half;
        count[j] += above as u32;
        heavy[j] = heavy[j] + if above { p } else { T::ZERO };
    };
    for values in body.clone() {
        for (j, &p) in values.iter().enumerate() {
            add(j, p);
        }
    }
    for (j, &p) in rest.iter().enumerate() {
        add(j, p);
    }
    // A second loop over the chunk (now in cache): with the f64 sums in the first, the
    // compiler no longer vectorises it.
    for values in body {
        for (m, &p) in mass.iter_mut().zip(values) {
            *m += p.to_f64();
        }
    }
    for (m, &p) in mass.iter_mut().zip(rest) {
        *m += p.to_f64();
    }
    let max = max.into_iter().fold(T::ZERO, |a, b| if b > a { b } else { a });
    let min = min.into_iter().fold(T::ONE, |a, b| if b < a { b } else { a });
    let mass: f64 = mass.iter().sum();
    RowScan {
        max,
        in_unit: min >= T::ZERO && max <= T::ONE && mass.is_finite(),
        mass,
        above_half: (
            count.iter().map(|&n| n as usize).sum(),
            heavy.iter().map(|h| h.to_f64()).sum(),
        ),
        torch: Vec::new(),
    }
}

impl<T: Prob> RmaSearch<T> {
    /// Multilabel output: each row's selection as a 0/1 mask.
    pub fn masks(&self, map: &ProbMap<T>) -> Vec<u8> {
        let mut out = vec![0u8; map.data.len()];
        out.par_chunks_mut(map.dim)
            .zip(map.rows())
            .zip(self.cuts.par_iter())
            .for_each(|((mask, row), cut)| {
                if let Some(cut) = cut {
                    cut.write_mask(row, mask);
                }
            });
        out
    }
}
