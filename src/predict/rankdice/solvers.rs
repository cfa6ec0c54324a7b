//! BA, TRNA, BA+TRNA as rankseg 0.0.8 runs them, and the exact solver, per row of a
//! probability map, multilabel output.

use rayon::prelude::*;

use super::exact::{top_t_scores, EXACT_MAX_DIM};
use super::refined_normal::RefinedNormal;
use crate::predict::rma::RowStats;
use crate::predict::volume::{sorted_descending, Cut};
use crate::predict::{Metric, PredictError, Prob, ProbMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankDiceSolver {
    Ba,
    Trna,
    /// BA where the label volume is spread out (1/sd < 0.2), TRNA elsewhere.
    BaTrna,
    /// The exact expected metric.
    Exact(Metric),
}

/// Tau blocks of this many are scored in parallel (fixed: output independent of threads).
const TAU_BLOCK: usize = 256;

/// One 0/1 mask per row: the top-t pixels (in torch's sort order) of each active row.
pub fn masks<T: Prob>(
    map: &ProbMap<T>,
    solver: RankDiceSolver,
    smooth: f64,
    eps: f64,
    pruning_prob: f64,
) -> Result<Vec<u8>, PredictError> {
    let stats: Vec<RowStats<T>> = map.rows().map(RowStats::of).collect();
    RowStats::check(&stats)?;
    if matches!(solver, RankDiceSolver::Exact(_)) && map.dim > EXACT_MAX_DIM && map.batch > 0 {
        return Err(PredictError(format!(
            "the exact solver handles rows of at most {EXACT_MAX_DIM} pixels (O(D^2) per row); these have {}: \
             crop the map, or use rma or ba",
            map.dim
        )));
    }
    let pruning = T::from_f64(pruning_prob);
    let mut out = vec![0u8; map.data.len()];
    out.par_chunks_mut(map.dim.max(1))
        .zip(map.rows())
        .zip(&stats)
        .for_each(|((mask, row), stats)| {
            if stats.max <= pruning {
                return;
            }
            let (sorted, volume) = match solver {
                RankDiceSolver::Exact(metric) => {
                    let sorted = sorted_descending(row.to_vec());
                    let exact: Vec<f64> = sorted.iter().map(|p| p.to_f64()).collect();
                    let volume = first_argmax(&top_t_scores(&exact, metric, smooth));
                    (sorted, volume)
                }
                _ => {
                    let reach = Reach::of(row, stats.mass, smooth);
                    let volume = rankdice_volume(row, &reach, solver, smooth, eps);
                    (reach.sorted, volume)
                }
            };
            if volume > 0 {
                Cut::top_of_sorted(row, &sorted, volume).write_mask(row, mask);
            }
        });
    Ok(out)
}

fn first_argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (t, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = t;
        }
    }
    best
}

/// The moments rankseg computes in the input's precision, and the law they define.
struct VolumeLaw<T> {
    mean: T,
    var: T,
    m3: T,
}

impl<T: Prob> VolumeLaw<T> {
    /// The moments of any arrangement of the row: per-pixel terms in the input precision
    /// as rankseg forms them, summed in f64 and rounded.
    fn of(row: &[T]) -> Self {
        let two = T::from_f64(2.0);
        let (mut mean, mut var, mut m3) = (0.0f64, 0.0f64, 0.0f64);
        for &p in row {
            let q = p * (T::ONE - p);
            mean += p.to_f64();
            var += q.to_f64();
            m3 += (q * (T::ONE - two * p)).to_f64();
        }
        VolumeLaw {
            mean: T::from_f64(mean),
            var: T::from_f64(var),
            m3: T::from_f64(m3),
        }
    }

    /// Without pixel `p`: the leave-one-out moments TRNA uses.
    fn without(&self, p: T) -> Self {
        let q = p * (T::ONE - p);
        VolumeLaw {
            mean: self.mean - p,
            var: self.var - q,
            m3: self.m3 - q * (T::ONE - T::from_f64(2.0) * p),
        }
    }

    fn scale(&self) -> T {
        T::from_f64(self.var.max_with(T::EPSILON).to_f64().sqrt())
    }

    fn refined_normal(&self) -> RefinedNormal {
        let var = self.var.max_with(T::EPSILON);
        let skew = self.m3 / T::from_f64(var.to_f64().powf(1.5));
        RefinedNormal {
            loc: self.mean.to_f64(),
            scale: self.scale().to_f64(),
            skew: skew.to_f64(),
        }
    }
}

/// The part of a row the BA/TRNA search can reach: its largest values in descending order
/// through position `up + 1`, their prefix sums, and `up`, Lemma 3's bound.
struct Reach<T> {
    sorted: Vec<T>,
    /// torch's cumsum: accumulated in f64, stored in the input precision.
    cumsum: Vec<f64>,
    up: usize,
}

impl<T: Prob> Reach<T> {
    /// Lemma 3 stops at p_(up+1) <= S(up) / (up + s + D) <= mu / D, so the pixels above
    /// mu / 2D usually contain the whole search. Sort just those when they are few; if the
    /// bound is not met inside them, or they are most of the row, sort the whole row.
    fn of(row: &[T], mass: f64, smooth: f64) -> Self {
        let d = row.len();
        let threshold = mass / d as f64 / 2.0;
        let above = |p: &T| p.to_f64() > threshold;
        if row.iter().filter(|p| above(p)).count() < d / 2 {
            let reach = Self::sorted(row.iter().copied().filter(above).collect(), d, smooth);
            if reach.up < reach.sorted.len() {
                return reach;
            }
        }
        Self::sorted(row.to_vec(), d, smooth)
    }

    /// The search over `values` (the largest of a row of `d`), sorted here.
    fn sorted(values: Vec<T>, d: usize, smooth: f64) -> Self {
        let sorted = sorted_descending(values);
        let mut acc = 0.0;
        let cumsum: Vec<f64> = sorted
            .iter()
            .map(|p| {
                acc += p.to_f64();
                T::from_f64(acc).to_f64()
            })
            .collect();
        // Not met inside a partial prefix: `up` = its length marks it unusable.
        let up = search_bound(&sorted, &cumsum, d, smooth).unwrap_or(if sorted.len() == d {
            d
        } else {
            sorted.len()
        });
        Reach { sorted, cumsum, up }
    }
}

/// BA / TRNA / BA+TRNA's volume for one row (rankseg's `rankdice_ba`).
fn rankdice_volume<T: Prob>(
    row: &[T],
    reach: &Reach<T>,
    solver: RankDiceSolver,
    smooth: f64,
    eps: f64,
) -> usize {
    let up = reach.up;
    let law = VolumeLaw::of(row);
    let normal = law.refined_normal();
    let (lo, hi) = normal.interval(eps, row.len());
    let pmf = normal.truncated_pmf(lo, hi);
    let use_ba = match solver {
        RankDiceSolver::Ba => true,
        RankDiceSolver::Trna => false,
        _ => T::ONE / law.scale().max_with(T::from_f64(1e-8)) < T::from_f64(0.2),
    };
    let empty = if smooth > 0.0 {
        pmf.iter()
            .enumerate()
            .map(|(j, &pk)| smooth * pk / ((lo + j) as f64 + smooth))
            .sum()
    } else {
        // The papers' convention 0/0 := 0 makes the empty mask score 0.
        0.0
    };
    let scores = if use_ba {
        ba_scores(&pmf, lo, &reach.cumsum[..up], smooth)
    } else {
        trna_scores(&reach.sorted, &law, &pmf, lo, up, smooth)
    };
    let mut best = (0, empty);
    for (t, &s) in scores.iter().enumerate() {
        if s > best.1 {
            best = (t + 1, s);
        }
    }
    best.0
}

/// Lemma 3: the first t with S(t) >= (t + s + D) p_(t+1) bounds the optimal volume,
/// compared in the input's precision as rankseg does; `None` if no t inside the sorted
/// prefix qualifies (for the whole row, the bound is then D).
fn search_bound<T: Prob>(sorted: &[T], cumsum: &[f64], dim: usize, smooth: f64) -> Option<usize> {
    let (s, dim) = (T::from_f64(smooth), T::from_count(dim));
    (1..sorted.len()).find(|&t| T::from_f64(cumsum[t - 1]) >= (T::from_count(t) + s + dim) * sorted[t])
}

/// `sum a_i b_i` over `a`'s length, with independent partial sums (vectorisable; fixed
/// order).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let b = &b[..a.len()];
    let mut lanes = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a4.zip(b4) {
        for l in 0..4 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes[0] + lanes[1] + lanes[2] + lanes[3] + tail
}

/// The label volume's truncated law, with every reciprocal the scores need:
/// `inverse[m] = 1 / (lo + m + s)`, so E[1/(Y + c + s)] = dot(pmf, inverse[c..]).
struct Expectations<'a> {
    pmf: &'a [f64],
    lo: usize,
    smooth: f64,
    inverse: Vec<f64>,
}

impl<'a> Expectations<'a> {
    fn new(pmf: &'a [f64], lo: usize, up: usize, smooth: f64) -> Self {
        let inverse = (0..pmf.len() + up + 2)
            .map(|m| 1.0 / ((lo + m) as f64 + smooth))
            .collect();
        Expectations {
            pmf,
            lo,
            smooth,
            inverse,
        }
    }

    /// E[1/(Y + c + s)].
    fn reciprocal(&self, c: usize) -> f64 {
        dot(self.pmf, &self.inverse[c..])
    }

    /// An upper bound of E[1/(Y + c + s)] from the law's mean and variance: by Taylor,
    /// f(Y) = f(m) + f'(m)(Y - m) + f''(xi)/2 (Y - m)^2 with xi >= lo, and f'' falls, so
    /// E f(Y) <= f(m) + f''(lo)/2 Var Y = f(m) + Var / (lo + c + s)^3. Tight to about
    /// 1e-8 relative on real rows, where the support is narrow next to c.
    fn reciprocal_bound(&self, c: usize, (mean, var): (f64, f64)) -> f64 {
        let c = c as f64 + self.smooth;
        1.0 / (mean + c) + var / (self.lo as f64 + c).powi(3)
    }

    /// The papers' s E[1/(Y + t + s)] term (0 without smoothing).
    fn smoothing(&self, t: usize) -> f64 {
        if self.smooth > 0.0 {
            self.smooth * self.reciprocal(t)
        } else {
            0.0
        }
    }
}

/// BA: one law for every volume t = 1..=up: score(t) = 2 S(t) E[1/(Y+t+1+s)] + s E[1/(Y+t+s)].
/// Bounds first (O(1) each), then exact scores only where the bound reaches the best
/// exact score seen: the same first argmax as scoring every volume.
pub(crate) fn ba_scores(pmf: &[f64], lo: usize, cumsum: &[f64], smooth: f64) -> Vec<f64> {
    const BLOCK: usize = 256;
    let up = cumsum.len();
    let e = Expectations::new(pmf, lo, up, smooth);
    let score = |t: usize| 2.0 * cumsum[t - 1] * e.reciprocal(t + 1) + e.smoothing(t);
    let mean: f64 = pmf.iter().enumerate().map(|(j, p)| p * (lo + j) as f64).sum();
    let var: f64 = pmf
        .iter()
        .enumerate()
        .map(|(j, p)| p * ((lo + j) as f64 - mean).powi(2))
        .sum();
    let bound = |c: usize| e.reciprocal_bound(c, (mean, var));
    let volume_bound = |t: usize| 2.0 * cumsum[t - 1] * bound(t + 1) + smooth * bound(t);
    // A block of volumes [a, b] is bounded by its largest prefix mass and smallest
    // denominators: 2 S(b) bound(a + 1) + s bound(a).
    let blocks: Vec<(usize, usize, f64)> = (1..=up)
        .step_by(BLOCK)
        .map(|a| {
            let b = (a + BLOCK - 1).min(up);
            (a, b, 2.0 * cumsum[b - 1] * bound(a + 1) + smooth * bound(a))
        })
        .collect();
    // The best volume of the most promising block sets the bar.
    let (a, b, _) = blocks
        .iter()
        .copied()
        .max_by(|x, y| x.2.total_cmp(&y.2))
        .unwrap_or((1, 1, 0.0));
    let likely = (a..=b)
        .max_by(|&x, &y| volume_bound(x).total_cmp(&volume_bound(y)))
        .unwrap_or(1);
    let floor = score(likely);
    let floor = floor - 1e-12 * floor.abs();
    let mut scores = vec![f64::NEG_INFINITY; up];
    for &(a, b, block_bound) in &blocks {
        if block_bound < floor {
            continue;
        }
        for t in a..=b {
            if volume_bound(t) >= floor {
                scores[t - 1] = score(t);
            }
        }
    }
    scores
}

/// TRNA: for volume t, pixel t's own moments are removed from the law its term sees:
/// score(t) = sum_k 2 w_t(k) / (k + t + 1 + s) + s E[1/(Y+t+s)], w_t = sum_{i<=t} p_i P_{-i}.
fn trna_scores<T: Prob>(
    sorted: &[T],
    law: &VolumeLaw<T>,
    pmf: &[f64],
    lo: usize,
    up: usize,
    smooth: f64,
) -> Vec<f64> {
    let hi = lo + pmf.len() - 1;
    let e = Expectations::new(pmf, lo, up, smooth);
    let mut w = vec![0.0; pmf.len()];
    let mut scores = Vec::with_capacity(up);
    for start in (1..=up).step_by(TAU_BLOCK) {
        let end = (start + TAU_BLOCK).min(up + 1);
        // The leave-one-out laws are independent: compute a block in parallel.
        let laws: Vec<Vec<f64>> = (start..end)
            .into_par_iter()
            .map(|t| law.without(sorted[t - 1]).refined_normal().truncated_pmf(lo, hi))
            .collect();
        for (t, excluded) in (start..end).zip(&laws) {
            let p = sorted[t - 1].to_f64();
            w.iter_mut().zip(excluded).for_each(|(wk, e)| *wk += p * e);
            scores.push(2.0 * dot(&w, &e.inverse[t + 1..]) + e.smoothing(t));
        }
    }
    scores
}
