//! RMA: per (image, class) row, the volume that maximises the reciprocal-moment
//! approximation of the expected metric (Wang & Dai, NeurIPS 2025).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::volume::{optimal_cut, Cut, CHUNK};
use super::{PredictError, ProbMap};

/// One pass over a row: what pruning, validation and the objective need.
#[derive(Clone, Copy, Debug)]
pub struct RowStats<T> {
    pub min: T,
    pub max: T,
    /// The row's probability mass, accumulated in f64 (non-finite if any value is).
    pub mass: f64,
}

impl<T: Prob> RowStats<T> {
    pub fn of(row: &[T]) -> Self {
        let partials: Vec<(T, T, f64)> = row
            .par_chunks(CHUNK)
            .map(|chunk| {
                let (mut min, mut max, mut mass) = (chunk[0], chunk[0], 0.0f64);
                for &p in chunk {
                    min = if p < min { p } else { min };
                    max = if p > max { p } else { max };
                    mass += p.to_f64();
                }
                (min, max, mass)
            })
            .collect();
        let (mut min, mut max, mut mass) = partials[0];
        for &(lo, hi, m) in &partials[1..] {
            min = if lo < min { lo } else { min };
            max = if hi > max { hi } else { max };
            mass += m;
        }
        RowStats { min, max, mass }
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
    pub stats: Vec<RowStats<T>>,
    /// Rows whose largest probability exceeds `pruning_prob`.
    pub active: Vec<bool>,
    /// The selection of each active row (`None`: inactive or empty).
    pub cuts: Vec<Option<Cut<T>>>,
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
    let cuts = map
        .rows()
        .zip(stats.par_iter().zip(active.par_iter()))
        .map(|(row, (s, &on))| {
            if on {
                optimal_cut(row, s.max, s.mass, objective)
            } else {
                None
            }
        })
        .collect();
    Ok(RmaSearch { stats, active, cuts })
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
                    for (i, (m, &p)) in mask.iter_mut().zip(row).enumerate() {
                        *m = cut.selects(i, p) as u8;
                    }
                }
            });
        out
    }
}
