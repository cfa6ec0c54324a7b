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

use super::objective::RmaObjective;
use super::rma::{self, RmaSearch};
use super::torch_sum::torch_sum;
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
    fn selects(&self, c: usize, i: usize) -> bool {
        self.search.cuts[self.rows.start + c]
            .as_ref()
            .is_some_and(|cut| cut.selects(i, self.map.row(0, c)[i]))
    }

    fn resolve(&self, labels: &mut [i64], metric: Metric, method: NonOverlap) {
        let classes = self.map.classes;
        // Per pixel: how many classes selected it, and the last that did.
        let chosen: Vec<(u32, u32)> = (0..self.map.dim)
            .into_par_iter()
            .map(|i| {
                (0..classes).fold((0, 0), |(n, owner), c| {
                    if self.selects(c, i) {
                        (n + 1, c as u32)
                    } else {
                        (n, owner)
                    }
                })
            })
            .collect();
        // Each class's sole-owned pixels: count and mass (`prob[c][safe].sum()`).
        let owned: Vec<(f32, f32)> = (0..classes)
            .into_par_iter()
            .map(|c| {
                let row = self.map.row(0, c);
                let alone: Vec<f32> = chosen
                    .iter()
                    .zip(row)
                    .filter(|((n, owner), _)| *n == 1 && *owner as usize == c)
                    .map(|(_, &p)| p)
                    .collect();
                (alone.len() as f32, torch_sum(&alone))
            })
            .collect();
        let score = |c: usize, i: usize| -> f32 {
            let p = self.map.row(0, c)[i];
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
            .zip(&chosen)
            .enumerate()
            .for_each(|(i, (label, &(n, owner)))| {
                *label = match n {
                    0 => 0,
                    1 => owner as i64,
                    // torch's argmax over classes: the first largest.
                    _ => {
                        (1..classes)
                            .fold((0, score(0, i)), |(best, top), c| {
                                let s = score(c, i);
                                if s > top {
                                    (c, s)
                                } else {
                                    (best, top)
                                }
                            })
                            .0 as i64
                    }
                };
            });
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

/// The experiment's `rankseg_ba` without overlap (two channels): channel 1 alone, BA for
/// rows whose expected volume exceeds 50 pixels and the exact-moment TRNA for the others,
/// rows with max p <= 0.5 pruned. Its class map is channel 1's mask. The experiment bounds
/// the TRNA search by 5 mu + 1 and BA's by its own ratio test; here both use rankseg's
/// Lemma 3 bound, which contains the optimum, so a volume can differ where the
/// experiment's bound cut the optimum off.
pub fn rankseg_ba(map: &ProbMap<f32>, smooth: f64) -> Result<Prediction, PredictError> {
    use super::rankdice::{masks, RankDiceSolver};
    const BA_ABOVE_MEAN: f32 = 50.0;
    if map.classes != 2 {
        return Err(PredictError(format!(
            "the experiment's rankseg_ba needs two channels, got {}",
            map.classes
        )));
    }
    let dim = map.dim;
    let rows: Vec<&[f32]> = (0..map.batch).map(|b| map.row(b, 1)).collect();
    let mut labels = vec![0i64; map.batch * dim];
    for solver in [RankDiceSolver::Ba, RankDiceSolver::Trna] {
        let chosen: Vec<usize> = (0..map.batch)
            .filter(|&b| (torch_sum(rows[b]) > BA_ABOVE_MEAN) == (solver == RankDiceSolver::Ba))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let data: Vec<f32> = chosen.iter().flat_map(|&b| rows[b].iter().copied()).collect();
        let sub = ProbMap::new(&data, &[chosen.len(), 1, dim])?;
        let mask = masks(&sub, solver, smooth, super::DEFAULT_EPS, 0.5)?;
        for (k, &b) in chosen.iter().enumerate() {
            for (label, &m) in labels[b * dim..(b + 1) * dim]
                .iter_mut()
                .zip(&mask[k * dim..(k + 1) * dim])
            {
                *label = i64::from(m);
            }
        }
    }
    Ok(Prediction::ClassMap(labels))
}
