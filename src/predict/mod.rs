//! Predictors: probability maps (B, C, *spatial) in, class maps or masks out.
//!
//! They know nothing of datasets or models. Each matches rankseg 0.0.8 (`RankSEG`) in its
//! outputs and in what input it rejects; see `../shared/SPEC.md` for the semantics.

mod argmax;
pub mod experiment;
mod float;
mod multiclass;
mod objective;
pub mod rankdice;
pub(crate) mod rma;
mod threshold;
mod torch_sort;
mod torch_sum;
pub mod volume;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

pub use float::Prob;
pub use objective::RmaObjective;
pub use rankdice::RankDiceSolver;
pub use torch_sort::torch_sort_order;
pub use torch_sum::torch_sum;
pub use volume::Cut;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Dice,
    Iou,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// One class per pixel: an int64 class map (B, *spatial).
    Multiclass,
    /// One 0/1 mask per class: (B, C, *spatial).
    Multilabel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    Argmax,
    Threshold,
    Rma,
    Ba,
    Trna,
    BaTrna,
    Exact,
}

/// What a multiclass RMA prediction does with a pixel no class selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnassignedPolicy {
    MaxScore,
    Void,
}

macro_rules! parse_enum {
    ($ty:ident, $what:literal, $($name:literal => $variant:ident),+) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " '{}' (expected one of: {})"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $name,)+ })
            }
        }
    };
}

parse_enum!(Metric, "metric", "dice" => Dice, "iou" => Iou);
parse_enum!(OutputMode, "output mode", "multiclass" => Multiclass, "multilabel" => Multilabel);
parse_enum!(Solver, "solver", "argmax" => Argmax, "threshold" => Threshold, "rma" => Rma,
    "ba" => Ba, "trna" => Trna, "ba+trna" => BaTrna, "exact" => Exact);
parse_enum!(UnassignedPolicy, "unassigned policy", "max_score" => MaxScore, "void" => Void);

pub const DEFAULT_VOID_INDEX: i64 = 255;
/// rankseg's default tail mass left out of the refined-normal interval (BA, TRNA).
pub const DEFAULT_EPS: f64 = 1e-4;

/// The options of `RankSEG(...)`, with rankseg 0.0.8's defaults.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    pub solver: Solver,
    pub metric: Metric,
    pub output_mode: OutputMode,
    pub smooth: f64,
    pub pruning_prob: f64,
    pub unassigned_policy: UnassignedPolicy,
    pub void_index: i64,
    /// BA/TRNA only: the refined-normal tail mass left out (`None`: 1e-4).
    pub eps: Option<f64>,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            solver: Solver::Rma,
            metric: Metric::Dice,
            output_mode: OutputMode::Multiclass,
            smooth: 0.0,
            pruning_prob: 0.5,
            unassigned_policy: UnassignedPolicy::MaxScore,
            void_index: DEFAULT_VOID_INDEX,
            eps: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PredictError(pub String);

fn invalid<R>(message: impl Into<String>) -> Result<R, PredictError> {
    Err(PredictError(message.into()))
}

impl PredictOptions {
    /// Rejects what rankseg 0.0.8 rejects for `num_classes` channels.
    pub fn validate(&self, num_classes: usize) -> Result<(), PredictError> {
        if !self.smooth.is_finite() || self.smooth < 0.0 {
            return invalid(format!("smooth must be finite and >= 0, got {}", self.smooth));
        }
        if !self.pruning_prob.is_finite() || !(0.0..=1.0).contains(&self.pruning_prob) {
            return invalid(format!(
                "pruning_prob must be in the range [0, 1], got {}",
                self.pruning_prob
            ));
        }
        let multiclass = self.output_mode == OutputMode::Multiclass;
        if multiclass && num_classes == 1 {
            return invalid(
                "single-channel probabilities cannot produce a multiclass label map: use \
                 --output-mode multilabel, or give background and foreground channels",
            );
        }
        let refined_normal = matches!(self.solver, Solver::Ba | Solver::Trna | Solver::BaTrna);
        if refined_normal && self.metric != Metric::Dice {
            return invalid(format!(
                "solver '{}' optimises Dice only: use --metric dice, or rma for IoU",
                self.solver
            ));
        }
        if (refined_normal || self.solver == Solver::Exact) && multiclass {
            return invalid(format!(
                "solver '{}' gives one mask per class: use --output-mode multilabel (rma gives class maps)",
                self.solver
            ));
        }
        match self.eps {
            Some(_) if !refined_normal => {
                return invalid(format!(
                    "solver '{}' does not take --eps (it applies to ba, trna, ba+trna)",
                    self.solver
                ))
            }
            Some(eps) if !(eps.is_finite() && eps > 0.0 && eps < 1.0) => {
                return invalid(format!("eps must be in the range (0, 1), got {eps}"))
            }
            _ => {}
        }
        match self.solver {
            Solver::Threshold if multiclass => {
                return invalid("solver 'threshold' gives one mask per class: use --output-mode multilabel")
            }
            Solver::Argmax if num_classes == 1 => {
                return invalid(
                    "solver 'argmax' needs at least two channels; use 'threshold' for one channel",
                )
            }
            _ => {}
        }
        let void_policy = self.unassigned_policy == UnassignedPolicy::Void;
        let custom_void = self.void_index != DEFAULT_VOID_INDEX;
        if self.solver != Solver::Rma && (void_policy || custom_void) {
            return invalid(format!(
                "solver '{}' does not take --unassigned-policy or --void-index (they apply to rma)",
                self.solver
            ));
        }
        if void_policy && !multiclass {
            return invalid("--unassigned-policy void is only supported with --output-mode multiclass");
        }
        if custom_void && !(multiclass && void_policy) {
            return invalid(
                "a non-default --void-index requires --output-mode multiclass and --unassigned-policy void",
            );
        }
        if multiclass && void_policy && (0..num_classes as i64).contains(&self.void_index) {
            return invalid(format!(
                "void index {} lies inside the class range [0, {num_classes}): it must differ from every class",
                self.void_index
            ));
        }
        Ok(())
    }
}

/// A probability map: `batch` images of `classes` rows of `dim` values each, row-major.
#[derive(Clone, Copy, Debug)]
pub struct ProbMap<'a, T> {
    pub data: &'a [T],
    pub batch: usize,
    pub classes: usize,
    pub dim: usize,
}

impl<'a, T: Prob> ProbMap<'a, T> {
    /// Checks a (B, C, *spatial) shape as rankseg does and flattens the spatial dims.
    pub fn new(data: &'a [T], shape: &[usize]) -> Result<Self, PredictError> {
        if shape.len() < 3 {
            return invalid(format!(
                "probabilities must have shape (batch, classes, *spatial) with at least one spatial dim, got {shape:?}"
            ));
        }
        if shape[1] == 0 {
            return invalid(format!(
                "probabilities must contain at least one class, got shape {shape:?}"
            ));
        }
        if shape[2..].contains(&0) {
            return invalid(format!(
                "probability spatial dimensions must be non-empty, got shape {shape:?}"
            ));
        }
        let dim: usize = shape[2..].iter().product();
        if data.len() != shape[0] * shape[1] * dim {
            return invalid(format!("{} values do not fill shape {shape:?}", data.len()));
        }
        Ok(ProbMap {
            data,
            batch: shape[0],
            classes: shape[1],
            dim,
        })
    }

    pub fn row(&self, b: usize, c: usize) -> &'a [T] {
        let start = (b * self.classes + c) * self.dim;
        &self.data[start..start + self.dim]
    }

    pub fn image(&self, b: usize) -> ProbMap<'a, T> {
        let size = self.classes * self.dim;
        ProbMap {
            data: &self.data[b * size..(b + 1) * size],
            batch: 1,
            ..*self
        }
    }

    pub fn rows(&self) -> impl IndexedParallelIterator<Item = &'a [T]> + 'a {
        self.data.par_chunks(self.dim.max(1))
    }
}

/// Finite and inside [0, 1], as rankseg checks before predicting.
pub fn check_values<T: Prob>(map: &ProbMap<T>) -> Result<(), PredictError> {
    let stats: Vec<rma::RowStats<T>> = map.rows().map(rma::RowStats::of).collect();
    rma::RowStats::check(&stats)
}

/// A predictor's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// (B, D) class indices.
    ClassMap(Vec<i64>),
    /// (B, C, D) 0/1 masks.
    Masks(Vec<u8>),
}

/// Runs the predictor the options name on a validated map.
pub fn predict<T: Prob>(map: &ProbMap<T>, options: &PredictOptions) -> Result<Prediction, PredictError> {
    options.validate(map.classes)?;
    match (options.solver, options.output_mode) {
        (Solver::Argmax, mode) => {
            let classes = argmax::class_map(map)?;
            Ok(match mode {
                OutputMode::Multiclass => Prediction::ClassMap(classes),
                OutputMode::Multilabel => Prediction::Masks(argmax::one_hot(&classes, map)),
            })
        }
        (Solver::Threshold, _) => Ok(Prediction::Masks(threshold::masks(map)?)),
        (Solver::Ba | Solver::Trna | Solver::BaTrna | Solver::Exact, _) => {
            let solver = match options.solver {
                Solver::Ba => RankDiceSolver::Ba,
                Solver::Trna => RankDiceSolver::Trna,
                Solver::BaTrna => RankDiceSolver::BaTrna,
                _ => RankDiceSolver::Exact(options.metric),
            };
            let eps = options.eps.unwrap_or(DEFAULT_EPS);
            Ok(Prediction::Masks(rankdice::masks(
                map,
                solver,
                options.smooth,
                eps,
                options.pruning_prob,
            )?))
        }
        (Solver::Rma, mode) => {
            let objective = RmaObjective {
                metric: options.metric,
                smooth: options.smooth,
            };
            let search = rma::search(map, &objective, options.pruning_prob)?;
            Ok(match mode {
                OutputMode::Multilabel => Prediction::Masks(search.masks(map)),
                OutputMode::Multiclass => Prediction::ClassMap(multiclass::resolve(
                    map,
                    &search,
                    &objective,
                    options.unassigned_policy,
                    options.void_index,
                )),
            })
        }
    }
}
