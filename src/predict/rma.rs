//! RMA: per (image, class) row, the volume that maximises the reciprocal-moment
//! approximation of the expected metric (Wang & Dai, NeurIPS 2025).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::torch_sum::{torch_sum, BlockPartial, TorchBlocks};
use super::volume::{optimal_cut, Cut, CHUNK};
use super::{PredictError, ProbMap};

/// One pass over a row: what validation, pruning and the objective need.
#[derive(Clone, Debug)]
pub struct RowStats<T> {
    pub min: T,
    pub max: T,
    /// The row's probability mass in f64, in a fixed order of partial sums (non-finite if
    /// any value is); the search screens with it, rankseg's own division uses torch's sum.
    pub mass: f64,
    /// Count and approximate mass of the pixels above 0.5: a volume whose score bounds the
    /// optimum's threshold from below, so the search can skip the many tiny probabilities.
    pub above_half: (usize, f64),
    /// The partials of the row's whole torch-sum blocks, in order (see `TorchBlocks`):
    /// empty unless asked for, or where a block is longer than a chunk (then the sum takes
    /// a pass of its own).
    torch: Vec<BlockPartial<T>>,
}

impl<T: Prob> RowStats<T> {
    pub fn of(row: &[T]) -> Self {
        Self::scan(row, None)
    }

    /// `of`, carrying torch's sum of the row in block partials.
    fn with_torch_sum(row: &[T]) -> Self {
        Self::scan(row, chunked_blocks::<T>(row.len()))
    }

    fn scan(row: &[T], blocks: Option<TorchBlocks>) -> Self {
        let partials: Vec<Self> = row
            .par_chunks(CHUNK)
            .map(|chunk| Self::of_chunk(chunk, blocks))
            .collect();
        let start = RowStats {
            min: T::ONE,
            max: T::ZERO,
            mass: 0.0,
            above_half: (0, 0.0),
            torch: Vec::new(),
        };
        partials.into_iter().fold(start, |mut a, b| {
            a.torch.extend(b.torch);
            RowStats {
                min: if b.min < a.min { b.min } else { a.min },
                max: if b.max > a.max { b.max } else { a.max },
                mass: a.mass + b.mass,
                above_half: (a.above_half.0 + b.above_half.0, a.above_half.1 + b.above_half.1),
                torch: a.torch,
            }
        })
    }

    /// Sixteen interleaved lanes, branch-free, compiled for the widest vector unit, so
    /// the scan runs at memory speed. A NaN escapes the min and max but not the mass.
    fn of_chunk(chunk: &[T], blocks: Option<TorchBlocks>) -> Self {
        crate::simd::vectorized(
            #[inline(always)]
            move || {
                let mut stats = scan_lanes(chunk);
                if let Some(blocks) = blocks {
                    let whole = chunk.chunks_exact(blocks.block_len::<T>());
                    stats.torch = whole.map(|block| blocks.partial(block)).collect();
                }
                stats
            },
        )
    }

    /// The row's mass as torch sums it: the block partials and the values after them, or
    /// a pass of its own.
    fn torch_mass(&self, row: &[T]) -> T {
        match chunked_blocks::<T>(row.len()) {
            Some(blocks) if self.torch.len() == blocks.blocks::<T>() => {
                let rest = &row[blocks.blocks::<T>() * blocks.block_len::<T>()..];
                blocks.finish(self.torch.iter().copied(), rest)
            }
            _ => crate::simd::vectorized(
                #[inline(always)]
                move || torch_sum(row),
            ),
        }
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
    let scans: Vec<RowStats<T>> = map.rows().map(RowStats::with_torch_sum).collect();
    RowStats::check(&scans)?;
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
            let floor = scan.search_floor(objective);
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

/// The torch-sum blocks of a row of `n` values, where whole blocks tile the scan's chunks
/// (every row of up to 2^27 values).
fn chunked_blocks<T: Prob>(n: usize) -> Option<TorchBlocks> {
    let blocks = TorchBlocks::new::<T>(n);
    CHUNK.is_multiple_of(blocks.block_len::<T>()).then_some(blocks)
}

#[inline(always)]
fn scan_lanes<T: Prob>(chunk: &[T]) -> RowStats<T> {
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
    RowStats {
        min,
        max,
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
