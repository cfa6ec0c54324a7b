//! Paired bootstrap intervals for the difference of two predictors' mean scores over the
//! same images (or cases): resample the units with replacement, recompute the mean
//! difference, take the percentiles.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The central `level` interval (e.g. 0.95) of the mean of `diffs` under `draws`
/// resamples; `None` for fewer than two units.
pub fn paired_interval(diffs: &[f64], draws: usize, level: f64, seed: u64) -> Option<(f64, f64)> {
    let n = diffs.len();
    if n < 2 || draws == 0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..draws)
        .map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some((quantile(&means, tail), quantile(&means, 1.0 - tail)))
}

/// numpy's default (linear) quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
    }

    #[test]
    fn a_constant_difference_has_a_point_interval() {
        assert_eq!(paired_interval(&[0.5; 10], 200, 0.95, 1), Some((0.5, 0.5)));
    }

    #[test]
    fn the_interval_covers_the_mean_and_shrinks_with_more_units() {
        let diffs: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 1.0 } else { -0.5 }).collect();
        let (lo, hi) = paired_interval(&diffs, 2000, 0.95, 7).unwrap();
        assert!(lo < 0.25 && 0.25 < hi, "({lo}, {hi})");
        let more: Vec<f64> = diffs.iter().cycle().take(400).copied().collect();
        let (lo2, hi2) = paired_interval(&more, 2000, 0.95, 7).unwrap();
        assert!(hi2 - lo2 < (hi - lo) / 2.0, "({lo2}, {hi2}) vs ({lo}, {hi})");
    }
}
