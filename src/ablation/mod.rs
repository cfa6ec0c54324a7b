//! Solver ablations: how close each solver comes to the optimum of the expected metric
//! on seeded synthetic maps, and what it costs.
//!
//! Labels are independent Bernoulli(p) per (image, class) row, so the expected Dice/IoU
//! of any mask is a property of the map alone: computed exactly for rows up to
//! `EXACT_MAX_DIM` pixels and estimated by Monte Carlo (with its standard error) beyond.
//! The exact solver (pruning off) is then the true optimum wherever it runs.

mod plot;
mod score;
mod suite;

use std::time::Instant;

pub use plot::plot_gap_vs_time;
pub use score::RowScore;
pub use suite::{suite, Case};

use crate::predict::{predict, Metric, OutputMode, PredictOptions, Prediction, ProbMap, Solver};

/// One solver's result on one case under one metric.
#[derive(Clone, Debug)]
pub struct Record {
    pub case: String,
    pub solver: String,
    pub metric: Metric,
    pub expected_value: f64,
    pub std_error: f64,
    pub gap_to_best: f64,
    pub seconds: f64,
}

/// The solvers compared, as (name, options) for a target metric. Every solver gives
/// per-class masks (argmax as one-hot masks); RMA and exact target the metric scored,
/// the RankDice solvers target Dice whatever is scored.
pub fn solvers(metric: Metric, dim: usize) -> Vec<(&'static str, PredictOptions)> {
    let masks = |solver, metric| PredictOptions {
        solver,
        metric,
        output_mode: OutputMode::Multilabel,
        ..PredictOptions::default()
    };
    let mut list = vec![
        ("argmax", masks(Solver::Argmax, metric)),
        ("threshold", masks(Solver::Threshold, metric)),
        ("rma", masks(Solver::Rma, metric)),
        ("ba", masks(Solver::Ba, Metric::Dice)),
        ("trna", masks(Solver::Trna, Metric::Dice)),
        ("ba+trna", masks(Solver::BaTrna, Metric::Dice)),
    ];
    if dim <= crate::predict::rankdice::EXACT_MAX_DIM {
        list.push((
            "exact",
            PredictOptions {
                pruning_prob: 0.0,
                ..masks(Solver::Exact, metric)
            },
        ));
    }
    list
}

/// Runs every solver on one case and scores it under both metrics.
pub fn run_case(case: &Case) -> anyhow::Result<Vec<Record>> {
    let probs = case.probs();
    let shape = case.shape();
    let map = ProbMap::new(&probs, &shape)?;
    let mut records = Vec::new();
    for metric in [Metric::Dice, Metric::Iou] {
        let start = records.len();
        for (name, options) in solvers(metric, map.dim) {
            let clock = Instant::now();
            let prediction = predict(&map, &options)?;
            let seconds = clock.elapsed().as_secs_f64();
            let Prediction::Masks(masks) = prediction else {
                anyhow::bail!("solver {name} gave a class map; the ablation scores masks");
            };
            let score = score::score_masks(&map, &masks, metric, case.seed);
            records.push(Record {
                case: case.name.clone(),
                solver: name.to_string(),
                metric,
                expected_value: score.mean,
                std_error: score.std_error,
                gap_to_best: 0.0,
                seconds,
            });
        }
        let best = records[start..]
            .iter()
            .map(|r| r.expected_value)
            .fold(f64::NEG_INFINITY, f64::max);
        for record in &mut records[start..] {
            record.gap_to_best = best - record.expected_value;
        }
    }
    Ok(records)
}
