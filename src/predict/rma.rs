//! RMA: per (image, class) row, the volume that maximises the reciprocal-moment
//! approximation of the expected metric (Wang & Dai, NeurIPS 2025).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::torch_sum::torch_sum;
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
        let half = T::from_f64(0.5);
        let partials: Vec<Self> = row
            .par_chunks(CHUNK)
            .map(|chunk| {
                let (mut min, mut max, mut mass) = (chunk[0], chunk[0], 0.0f64);
                let (mut count, mut heavy) = (0usize, 0.0f64);
                for &p in chunk {
                    min = if p < min { p } else { min };
                    max = if p > max { p } else { max };
                    let x = p.to_f64();
                    mass += x;
                    let above = p > half;
                    count += above as usize;
                    heavy += if above { x } else { 0.0 };
                }
                RowStats {
                    min,
                    max,
                    mass,
                    above_half: (count, heavy),
                }
            })
            .collect();
        partials.into_iter().fold(Self::EMPTY, Self::merge)
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
    let stats: Vec<RowStats<T>> = map.rows().map(RowStats::of).collect();
    RowStats::check(&stats)?;
    // rankseg compares in the input's precision: `max p > float32(pruning_prob)`.
    let pruning = T::from_f64(pruning_prob);
    let active: Vec<bool> = stats.iter().map(|s| s.max > pruning).collect();
    let (cuts, torch_mass) = map
        .rows()
        .zip(stats.par_iter().zip(active.par_iter()))
        .map(|(row, (s, &on))| {
            if !on {
                return (None, None);
            }
            let mu_t = torch_sum(row);
            let cut = optimal_cut(row, s.max, (s.mass, mu_t), s.search_floor(objective), objective);
            (cut, Some(mu_t))
        })
        .unzip();
    Ok(RmaSearch {
        active,
        cuts,
        torch_mass,
    })
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
