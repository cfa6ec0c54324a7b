//! RankDice (Dai & Li, JMLR 2023): the top-t mask that maximises an approximation of the
//! expected Dice under independent Bernoulli labels. BA ("blind approximation") uses one
//! refined-normal law of the label volume for every t; TRNA removes pixel t's own moments
//! for each t; BA+TRNA picks per row. `exact` computes the expectation exactly (our own
//! ground truth for solver ablations, Dice or IoU, rows up to `EXACT_MAX_DIM`).

pub mod exact;
pub(crate) mod refined_normal;
mod solvers;

pub use exact::{expected_score, EXACT_MAX_DIM};
pub(crate) use solvers::ba_scores;
pub use solvers::{masks, RankDiceSolver};
