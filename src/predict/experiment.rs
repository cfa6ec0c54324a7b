//! The RankSEG-RMA experiment code's own `rankseg_rma` (exp/rankseg_rma.py): the predictor
//! behind the published tables, which differs from rankseg 0.0.8's `RankSEG`:
//! - a row is active iff its largest probability exceeds 0.1 (not 0.5);
//! - the volume ranges over 1..D with no smoothing: the same float32 scores as rankseg
//!   0.0.8 with `smooth = 0`, whose volume 0 never wins for an active row;
//! - two channels without overlap: only channel 1 is solved, its mask is the class map;
//! - overlaps go to the argmax over *all* classes of a per-pixel score (0 for inactive
//!   classes), and pixels no class selected stay class 0.
//!
//! Everything runs in float32, as the experiment converts its input with `.float()`.

use rayon::prelude::*;

use super::multiclass::{selections, SEVERAL};
use super::objective::RmaObjective;
use super::rma::{self, RmaSearch};
use super::torch_sum::torch_sum;
use super::volume::{sorted_descending, Cut, CHUNK};
use super::{Metric, PredictError, Prediction, ProbMap};

/// The experiment's activity threshold (`TRUNCATE_PROB`).
const ACTIVE_ABOVE: f64 = 0.1;

/// How a pixel selected by several classes is given to one (`to_nonverlap_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonOverlap {
    /// The class whose RMA score grows most by owning the pixel (`rma_score`).
    RmaScore,
    /// The class of the largest probability (`prob`).
    Prob,
    /// The largest `p_c / (1 + n_c)`, with `n_c` the pixels class c owns alone (`weight_prob`).
    WeightProb,
}

/// The `PARAMS` of the experiment's `rankseg_rma`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExperimentRma {
    pub metric: Metric,
    pub allow_overlap: bool,
    pub non_overlap: NonOverlap,
}

impl ExperimentRma {
    pub fn predict(&self, map: &ProbMap<f32>) -> Result<Prediction, PredictError> {
        let objective = RmaObjective {
            metric: self.metric,
            smooth: 0.0,
        };
        if map.classes == 2 && !self.allow_overlap {
            // Binary: channel 1 alone decides; its mask is the class map.
            let foreground: Vec<f32> = (0..map.batch).flat_map(|b| map.row(b, 1)).copied().collect();
            let map = ProbMap::new(&foreground, &[map.batch, 1, map.dim])?;
            let search = rma::search(&map, &objective, ACTIVE_ABOVE)?;
            let masks = search.masks(&map);
            return Ok(Prediction::ClassMap(masks.into_iter().map(i64::from).collect()));
        }
        let search = rma::search(map, &objective, ACTIVE_ABOVE)?;
        if self.allow_overlap {
            return Ok(Prediction::Masks(search.masks(map)));
        }
        let mut labels = vec![0i64; map.batch * map.dim];
        for (b, labels) in labels.chunks_mut(map.dim).enumerate() {
            let rows = b * map.classes..(b + 1) * map.classes;
            let image = Image {
                map: map.image(b),
                search: &search,
                rows,
            };
            image.resolve(labels, self.metric, self.non_overlap);
        }
        Ok(Prediction::ClassMap(labels))
    }
}

/// One image's rows of a search.
struct Image<'a> {
    map: ProbMap<'a, f32>,
    search: &'a RmaSearch<f32>,
    rows: std::ops::Range<usize>,
}

impl Image<'_> {
    fn resolve(&self, labels: &mut [i64], metric: Metric, method: NonOverlap) {
        let classes = self.map.classes;
        let chosen = selections(&self.map, &self.search.cuts[self.rows.clone()]);
        // Each class's sole-owned pixels in index order: count and mass, the mass summed as
        // torch sums `prob[c][safe]`.
        let mut alone: Vec<Vec<f32>> = vec![Vec::new(); classes];
        for (i, &owner) in chosen.owner.iter().enumerate() {
            if owner < SEVERAL {
                alone[owner as usize].push(self.map.row(0, owner as usize)[i]);
            }
        }
        let owned: Vec<(f32, f32)> = alone.par_iter().map(|v| (v.len() as f32, torch_sum(v))).collect();
        let score = |c: usize, p: f32| -> f32 {
            match method {
                NonOverlap::Prob => p,
                NonOverlap::WeightProb => p / (1.0 + owned[c].0),
                NonOverlap::RmaScore => match self.search.torch_mass[self.rows.start + c] {
                    None => 0.0,
                    Some(mu) => {
                        let (count, mass) = owned[c];
                        increment(metric, p, count, mass, mu)
                    }
                },
            }
        };
        labels
            .par_iter_mut()
            .zip(&chosen.owner)
            .for_each(|(label, &owner)| {
                *label = if owner < SEVERAL { owner as i64 } else { 0 };
            });
        // Overlaps: torch's argmax over all classes, the first largest. Class by class over
        // chunks of the overlapping pixels, so each class's row is read in order.
        let overlaps: Vec<usize> = (0..self.map.dim)
            .filter(|&i| chosen.owner[i] == SEVERAL)
            .collect();
        let winners: Vec<(usize, i64)> = overlaps
            .par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                let first = self.map.row(0, 0);
                let mut best: Vec<(usize, f32)> = chunk.iter().map(|&i| (0, score(0, first[i]))).collect();
                for c in 1..classes {
                    let row = self.map.row(0, c);
                    for (slot, &i) in best.iter_mut().zip(chunk) {
                        let s = score(c, row[i]);
                        if s > slot.1 {
                            *slot = (c, s);
                        }
                    }
                }
                chunk
                    .iter()
                    .zip(best)
                    .map(|(&i, (c, _))| (i, c as i64))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (i, c) in winners {
            labels[i] = c;
        }
    }
}

/// The experiment's incremental score of giving a pixel of probability `p` to a class that
/// owns `count` pixels of mass `mass` alone and has row mass `mu`, in its float32 operation
/// order (`python_float / tensor` is `tensor.reciprocal() * python_float` in torch).
fn increment(metric: Metric, p: f32, count: f32, mass: f32, mu: f32) -> f32 {
    let base = count + mu;
    match metric {
        Metric::Dice => 2.0 * ((mass + p) / (base + 2.0) - (1.0 / (base + 1.0)) * mass),
        Metric::Iou => (mass + p) / (((base - mass) - p) + 1.0) - (1.0 / (base - mass)) * mass,
    }
}

/// The experiment's `rankseg_ba` without overlap (two channels): channel 1 alone; its mask
/// is the class map.
pub fn rankseg_ba(map: &ProbMap<f32>, smooth: f64) -> Result<Prediction, PredictError> {
    if map.classes != 2 {
        return Err(PredictError(format!(
            "the experiment's rankseg_ba needs two channels, got {}",
            map.classes
        )));
    }
    let rows: Vec<&[f32]> = (0..map.batch).map(|b| map.row(b, 1)).collect();
    rma::RowStats::check(&rows.iter().map(|r| rma::RowStats::of(r)).collect::<Vec<_>>())?;
    let labels: Vec<Vec<i64>> = rows
        .par_iter()
        .map(|row| {
            let volume = ba::volume(row, smooth);
            let mut labels = vec![0i64; row.len()];
            if volume > 0 {
                Cut::top_of_sorted(row, &sorted_descending(row.to_vec()), volume)
                    .write_mask(row, &mut labels);
            }
            labels
        })
        .collect();
    Ok(Prediction::ClassMap(labels.concat()))
}

/// The volume rule of the experiment's `rankseg_ba` (exp/rankseg_ba.py, `app=2`), for one
/// row: moments as torch sums them in float32; the refined-normal support from SciPy's
/// quantiles at 1e-4 and 1 - 1e-4 (with its `skew + 1e-5`), its upper end excluded; rows
/// with max p <= 0.5 select nothing. Rows of mean mass above 50 use BA up to the
/// experiment's ratio-test bound; the others its exact-moment TRNA loop up to `5 mu + 1`,
/// whose Dice denominators are `k + t + s + 2` (one more than BA's and rankseg's). The
/// scores are computed in float64 (the experiment's float32 erf and conv1d cannot be
/// reproduced), so near-equal volumes can still swap.
mod ba {
    use super::super::rankdice::ba_scores;
    use super::super::rankdice::refined_normal::{quantile, RefinedNormal};
    use super::super::torch_sum::torch_sum;
    use super::super::volume::sorted_descending;

    const TAIL: f64 = 1e-4;
    const PRUNE_AT: f32 = 0.5;
    const BA_ABOVE_MEAN: f32 = 50.0;

    /// The law of the volume with the given float32 moments.
    fn law(mean: f32, var: f32, m3: f32) -> RefinedNormal {
        RefinedNormal {
            loc: mean as f64,
            scale: var.sqrt() as f64,
            skew: (m3 / (var as f64).powf(1.5) as f32) as f64,
        }
    }

    pub fn volume(row: &[f32], smooth: f64) -> usize {
        let dim = row.len();
        let sorted = sorted_descending(row.to_vec());
        if sorted[0] <= PRUNE_AT {
            return 0;
        }
        let mean = torch_sum(&sorted);
        let var = torch_sum(&sorted.iter().map(|&p| p * (1.0 - p)).collect::<Vec<f32>>());
        let m3 = torch_sum(
            &sorted
                .iter()
                .map(|&p| p * (1.0 - p) * (1.0 - 2.0 * p))
                .collect::<Vec<f32>>(),
        );
        let skew = (m3 / (var as f64).powf(1.5) as f32 + 1e-5) as f64;
        let sd = var.sqrt() as f64;
        let low = ((sd * quantile(TAIL, skew) + mean as f64).floor() - 1.0).max(0.0) as usize;
        let up = ((sd * quantile(1.0 - TAIL, skew) + mean as f64).ceil())
            .min(dim as f64)
            .max(0.0) as usize;
        let mut acc = 0.0f64;
        let cumsum: Vec<f64> = sorted
            .iter()
            .map(|&p| {
                acc += p as f64;
                acc as f32 as f64
            })
            .collect();
        let trna = mean <= BA_ABOVE_MEAN;
        let up_tau = if trna {
            ((5.0 * mean + 1.0) as usize).min(dim)
        } else {
            ratio_bound(&sorted, &cumsum, smooth)
        };
        if up_tau <= low || up <= low {
            return up_tau;
        }
        let pmf = law(mean, var, m3).truncated_pmf(low, up - 1);
        let empty = if smooth > 0.0 {
            pmf.iter()
                .enumerate()
                .map(|(j, p)| smooth * p / ((low + j) as f64 + smooth))
                .sum()
        } else {
            0.0
        };
        if !trna {
            let scores = ba_scores(&pmf, low, &cumsum[..up_tau], smooth);
            let best = (0..scores.len()).fold(0, |b, t| if scores[t] > scores[b] { t } else { b });
            return if scores[best] <= empty { 0 } else { best + 1 };
        }
        let mut w = vec![0.0f64; pmf.len()];
        let (mut best, mut best_score) = (0, empty);
        for t in 1..=up_tau {
            let p = sorted[t - 1];
            let q = p * (1.0 - p);
            let var_t = var - q;
            if var_t <= 0.0 {
                // The experiment's law turns NaN here, and so does every later score.
                break;
            }
            let without =
                law((mean - p).max(0.0), var_t, m3 - q * (1.0 - 2.0 * p)).truncated_pmf(low, up - 1);
            let mut score = 0.0;
            for (j, (wk, pk)) in w.iter_mut().zip(&without).enumerate() {
                *wk += p as f64 * pk;
                let k = (low + j + t) as f64 + smooth;
                score += 2.0 / (k + 2.0) * *wk + smooth * pmf[j] / (k + 1.0);
            }
            if score > best_score {
                (best, best_score) = (t, score);
            }
        }
        best
    }

    /// The experiment's BA search bound: the first i with `S(i+1) / (p_(i+2) + 1e-5) - (i + 1)
    /// - s - D > 0` in float32, or D - 1 when there is none or it is the first.
    fn ratio_bound(sorted: &[f32], cumsum: &[f64], smooth: f64) -> usize {
        let dim = sorted.len();
        let (s, d) = (smooth as f32, dim as f32);
        (0..dim.saturating_sub(1))
            .find(|&i| cumsum[i] as f32 / (sorted[i + 1] + 1e-5) - (i + 1) as f32 - s - d > 0.0)
            .filter(|&i| i > 0)
            .unwrap_or(dim - 1)
    }
}
