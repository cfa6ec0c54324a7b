//! The expected metric of masks under independent Bernoulli(p) labels, per row: exact up
//! to `EXACT_MAX_DIM` pixels, Monte Carlo beyond.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::predict::rankdice::{expected_score, EXACT_MAX_DIM};
use crate::predict::{Metric, ProbMap};

/// Label draws per row when the row is too long for the exact expectation.
const MONTE_CARLO_DRAWS: usize = 200;

/// A mean over rows and its standard error (0 when exact).
#[derive(Clone, Copy, Debug)]
pub struct RowScore {
    pub mean: f64,
    pub std_error: f64,
}

pub fn score_masks(map: &ProbMap<f32>, masks: &[u8], metric: Metric, seed: u64) -> RowScore {
    let per_row: Vec<(f64, f64)> = map
        .rows()
        .zip(masks.par_chunks(map.dim))
        .enumerate()
        .map(|(r, (row, mask))| {
            let probs: Vec<f64> = row.iter().map(|&p| p as f64).collect();
            let mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
            if map.dim <= EXACT_MAX_DIM {
                (expected_score(&probs, &mask, metric, 0.0), 0.0)
            } else {
                monte_carlo(
                    &probs,
                    &mask,
                    metric,
                    seed.wrapping_mul(7919).wrapping_add(r as u64),
                )
            }
        })
        .collect();
    let n = per_row.len() as f64;
    RowScore {
        mean: per_row.iter().map(|r| r.0).sum::<f64>() / n,
        std_error: per_row.iter().map(|r| r.1 * r.1).sum::<f64>().sqrt() / n,
    }
}

/// Mean and standard error of the metric over labels drawn from the row.
fn monte_carlo(probs: &[f64], mask: &[bool], metric: Metric, seed: u64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let selected = mask.iter().filter(|&&m| m).count() as f64;
    let draws: Vec<f64> = (0..MONTE_CARLO_DRAWS)
        .map(|_| {
            let (mut tp, mut positives) = (0.0, 0.0);
            for (&p, &m) in probs.iter().zip(mask) {
                if rng.random::<f64>() < p {
                    positives += 1.0;
                    tp += m as u8 as f64;
                }
            }
            let (num, den) = match metric {
                Metric::Dice => (2.0 * tp, selected + positives),
                Metric::Iou => (tp, selected + positives - tp),
            };
            if den == 0.0 {
                0.0
            } else {
                num / den
            }
        })
        .collect();
    let n = draws.len() as f64;
    let mean = draws.iter().sum::<f64>() / n;
    let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}
