//! Exact expectations under independent Bernoulli(p) labels: the Poisson-binomial law of
//! the label volume by dynamic programming, leave-one-out laws by stable deconvolution.
//! O(D^2) per row, so rows are limited to `EXACT_MAX_DIM` pixels.

use crate::predict::Metric;

/// The largest row the exact solver takes (O(D^2) time, O(D) memory).
pub const EXACT_MAX_DIM: usize = 4096;

/// The law of the number of successes among independent Bernoulli(p) trials.
pub fn poisson_binomial(ps: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut law = vec![1.0];
    for p in ps {
        add_trial(&mut law, p);
    }
    law
}

/// Convolves a success-count law with one more Bernoulli(p) trial, in place.
fn add_trial(law: &mut Vec<f64>, p: f64) {
    law.push(0.0);
    for k in (1..law.len()).rev() {
        law[k] = law[k] * (1.0 - p) + law[k - 1] * p;
    }
    law[0] *= 1.0 - p;
}

/// The law without one Bernoulli(p) trial: deconvolve forwards when p <= 1/2 and
/// backwards otherwise, so each step damps rather than amplifies rounding errors.
fn leave_one_out(law: &[f64], p: f64, out: &mut [f64]) {
    let n = law.len() - 1;
    let q = 1.0 - p;
    if p <= 0.5 {
        out[0] = law[0] / q;
        for k in 1..n {
            out[k] = ((law[k] - p * out[k - 1]) / q).max(0.0);
        }
    } else {
        out[n - 1] = law[n] / p;
        for k in (1..n).rev() {
            out[k - 1] = ((law[k] - q * out[k]) / p).max(0.0);
        }
    }
}

/// `numerator / denominator` with the 0/0 := 0 convention of the papers.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

/// The expected score of every top-t mask (t = 0..=D) of a row sorted descending.
pub fn top_t_scores(sorted: &[f64], metric: Metric, smooth: f64) -> Vec<f64> {
    let d = sorted.len();
    match metric {
        Metric::Dice => {
            // E[(2X + s)/(t + Y + s)] = sum_m (2 W_t(m) + s P(m)) / (t + m + s), with
            // W_t(m) = sum_{i<=t} p_i P_{-i}(m - 1): E[Y_i / (t+Y+s)] = p_i E[1/(t+1+Y_{-i}+s)].
            let law = poisson_binomial(sorted.iter().copied());
            let mut w = vec![0.0; d + 1];
            let mut without = vec![0.0; d.max(1)];
            let mut scores = Vec::with_capacity(d + 1);
            scores.push((0..=d).map(|m| ratio(smooth * law[m], m as f64 + smooth)).sum());
            for (i, &p) in sorted.iter().enumerate() {
                leave_one_out(&law, p, &mut without);
                for m in 1..=d {
                    w[m] += p * without[m - 1];
                }
                let t = (i + 1) as f64;
                scores.push(
                    (0..=d)
                        .map(|m| (2.0 * w[m] + smooth * law[m]) / (t + m as f64 + smooth))
                        .sum(),
                );
            }
            scores
        }
        Metric::Iou => {
            // E[(X + s)/(t + Z + s)] = (S(t) + s) E[1/(t + Z + s)]: the selected and the
            // unselected volumes are independent. Build the unselected law from the end.
            let mut scores = vec![0.0; d + 1];
            let mut rest = vec![1.0];
            let prefix: Vec<f64> = std::iter::once(0.0)
                .chain(sorted.iter().scan(0.0, |s, &p| {
                    *s += p;
                    Some(*s)
                }))
                .collect();
            for t in (0..=d).rev() {
                let inverse: f64 = rest
                    .iter()
                    .enumerate()
                    .map(|(z, &pz)| ratio(pz, t as f64 + z as f64 + smooth))
                    .sum();
                scores[t] = if t == 0 && smooth == 0.0 {
                    0.0
                } else {
                    (prefix[t] + smooth) * inverse
                };
                if t > 0 {
                    add_trial(&mut rest, sorted[t - 1]);
                }
            }
            scores
        }
    }
}

/// The expected score of an arbitrary mask of a row.
pub fn expected_score(probs: &[f64], mask: &[bool], metric: Metric, smooth: f64) -> f64 {
    let inside = poisson_binomial(probs.iter().zip(mask).filter(|(_, &m)| m).map(|(&p, _)| p));
    let outside = poisson_binomial(probs.iter().zip(mask).filter(|(_, &m)| !m).map(|(&p, _)| p));
    let a = (inside.len() - 1) as f64;
    match metric {
        Metric::Dice => inside
            .iter()
            .enumerate()
            .map(|(x, &px)| {
                let x = x as f64;
                px * outside
                    .iter()
                    .enumerate()
                    .map(|(z, &pz)| pz * ratio(2.0 * x + smooth, a + x + z as f64 + smooth))
                    .sum::<f64>()
            })
            .sum(),
        Metric::Iou => {
            let selected_mass: f64 = probs.iter().zip(mask).filter(|(_, &m)| m).map(|(&p, _)| p).sum();
            let inverse: f64 = outside
                .iter()
                .enumerate()
                .map(|(z, &pz)| ratio(pz, a + z as f64 + smooth))
                .sum();
            if a == 0.0 && smooth == 0.0 {
                0.0
            } else {
                (selected_mass + smooth) * inverse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all 2^D label vectors.
    fn brute_force(probs: &[f64], mask: &[bool], metric: Metric, smooth: f64) -> f64 {
        let d = probs.len();
        (0u32..1 << d)
            .map(|labels| {
                let y = |i: usize| labels >> i & 1 == 1;
                let weight: f64 = (0..d)
                    .map(|i| if y(i) { probs[i] } else { 1.0 - probs[i] })
                    .product();
                let tp = (0..d).filter(|&i| y(i) && mask[i]).count() as f64;
                let (a, b) = (
                    mask.iter().filter(|&&m| m).count() as f64,
                    (0..d).filter(|&i| y(i)).count() as f64,
                );
                let score = match metric {
                    Metric::Dice => ratio(2.0 * tp + smooth, a + b + smooth),
                    Metric::Iou => ratio(tp + smooth, a + b - tp + smooth),
                };
                weight * score
            })
            .sum()
    }

    fn rows() -> Vec<Vec<f64>> {
        vec![
            vec![0.9, 0.7, 0.55, 0.3, 0.2, 0.05],
            vec![0.99, 0.98, 0.6, 0.6, 0.6, 0.4, 0.1, 0.01, 0.0, 1.0, 0.5, 0.5],
            vec![0.35, 0.3, 0.2, 0.1, 0.05, 0.05, 0.02],
            vec![1.0],
            vec![0.0, 0.0, 0.0],
            vec![0.5; 9],
        ]
    }

    #[test]
    fn top_t_scores_equal_brute_force() {
        for mut row in rows() {
            row.sort_by(|a, b| b.total_cmp(a));
            for metric in [Metric::Dice, Metric::Iou] {
                for smooth in [0.0, 1.0] {
                    let scores = top_t_scores(&row, metric, smooth);
                    for (t, &score) in scores.iter().enumerate() {
                        let mask: Vec<bool> = (0..row.len()).map(|i| i < t).collect();
                        let truth = brute_force(&row, &mask, metric, smooth);
                        assert!(
                            (score - truth).abs() < 1e-12,
                            "{row:?} {metric} s={smooth} t={t}: {score} vs {truth}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn expected_score_of_any_mask_equals_brute_force() {
        for row in rows() {
            for pattern in [0b1010_1010_1010u32, 0b0111, 0, u32::MAX] {
                let mask: Vec<bool> = (0..row.len()).map(|i| pattern >> i & 1 == 1).collect();
                for metric in [Metric::Dice, Metric::Iou] {
                    for smooth in [0.0, 0.5] {
                        let ours = expected_score(&row, &mask, metric, smooth);
                        let truth = brute_force(&row, &mask, metric, smooth);
                        assert!(
                            (ours - truth).abs() < 1e-12,
                            "{row:?} {mask:?} {metric} s={smooth}"
                        );
                    }
                }
            }
        }
    }

    /// The exact solver's top-t optimum is the optimum over every mask (small rows).
    #[test]
    fn best_top_t_mask_is_the_best_of_all_masks() {
        for mut row in rows().into_iter().filter(|r| r.len() <= 9) {
            row.sort_by(|a, b| b.total_cmp(a));
            let d = row.len();
            for metric in [Metric::Dice, Metric::Iou] {
                for smooth in [0.0, 1.0] {
                    let best_top_t = top_t_scores(&row, metric, smooth)
                        .into_iter()
                        .fold(f64::MIN, f64::max);
                    let best_any = (0u32..1 << d)
                        .map(|m| {
                            brute_force(
                                &row,
                                &(0..d).map(|i| m >> i & 1 == 1).collect::<Vec<_>>(),
                                metric,
                                smooth,
                            )
                        })
                        .fold(f64::MIN, f64::max);
                    assert!(
                        (best_top_t - best_any).abs() < 1e-12,
                        "{row:?} {metric} s={smooth}"
                    );
                }
            }
        }
    }
}
