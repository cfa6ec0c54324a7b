//! The papers' result tables from finished runs: rows model x prediction, one column per
//! dataset, cells `57.67 (+0.73)` (the delta to the baseline prediction of the same model
//! and dataset), and a long table of deltas with paired bootstrap 95% intervals from the
//! per-image values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use serde_json::Value;

use super::bootstrap::paired_interval;
use crate::runner::results::{metrics_path, per_image_path};
use crate::runner::run_json;

/// One predictor's finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The model as the table names it: run.json's model, followed by the run directory
    /// when another run of the same model, prediction and dataset is tabulated too.
    pub model: String,
    pub dataset: String,
    pub prediction: String,
    pub metrics: serde_json::Map<String, Value>,
    pub per_image: PathBuf,
    /// The output directory it came from.
    pub dir: PathBuf,
    /// The checkpoint and data it was evaluated on (fingerprint parts).
    inputs: [Option<String>; 2],
}

/// Every finished predictor run in the given output directories. Runs that share model,
/// prediction and dataset are kept apart (their model names get the run directory), never
/// merged or dropped.
pub fn collect(dirs: &[PathBuf]) -> Result<Vec<RunResult>> {
    let mut results = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if seen.contains(&canonical) {
            bail!("{} is given twice in --runs", dir.display());
        }
        seen.push(canonical);
        let run = run_json::read(dir)?.with_context(|| {
            format!(
                "{} has no run.json: is it a `rankseg exp` output directory?",
                dir.display()
            )
        })?;
        if run.predictions.is_empty() {
            bail!("{}: run.json lists no finished predictions", dir.display());
        }
        for (prediction, entry) in run.predictions {
            let path = metrics_path(dir, &prediction);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let metrics: serde_json::Map<String, Value> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON object", path.display()))?;
            results.push(RunResult {
                model: entry.model.clone(),
                dataset: entry.dataset.clone(),
                per_image: per_image_path(dir, &prediction),
                prediction,
                metrics,
                dir: dir.clone(),
                inputs: ["checkpoint.weights", "data.files"]
                    .map(|key| entry.fingerprint.parts.get(key).cloned()),
            });
        }
    }
    // Runs of one model on one dataset share rows (each prediction's delta is taken against
    // the baseline of the same rows) only when they come from the same checkpoint and data
    // and no prediction appears twice; otherwise every one of them is told apart by its
    // directory.
    let mut split: Vec<(String, String)> = Vec::new();
    for r in &results {
        let same = |o: &&RunResult| o.model == r.model && o.dataset == r.dataset;
        let mixed = results
            .iter()
            .filter(same)
            .any(|o| o.inputs != r.inputs || (o.dir != r.dir && o.prediction == r.prediction));
        if mixed {
            split.push((r.model.clone(), r.dataset.clone()));
        }
    }
    for r in &mut results {
        if split.contains(&(r.model.clone(), r.dataset.clone())) {
            r.model = format!("{} [{}]", r.model, r.dir.display());
        }
    }
    Ok(results)
}

/// What `rankseg table` reports.
pub struct TableSpec<'a> {
    pub metric: &'a str,
    pub baseline: &'a str,
    pub draws: usize,
    pub seed: u64,
}

pub struct PaperTable {
    /// model, prediction, then one column per dataset.
    pub wide: DataFrame,
    /// model, prediction, dataset, value, baseline, delta, ci_low, ci_high, units.
    pub deltas: DataFrame,
}

/// Order of first appearance, without repeats.
fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for v in values {
        if !seen.iter().any(|s| s == v) {
            seen.push(v.to_string());
        }
    }
    seen
}

/// Per-unit values of one run: per image, or per case (the mean of its images) for CT runs.
fn units(path: &Path, column: &str) -> Result<HashMap<String, f64>> {
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|reader| reader.finish())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let values = frame
        .column(column)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(|e| anyhow::anyhow!("{} has no numeric {column} column: {e}", path.display()))?;
    let values = values.f64()?;
    let keys = match frame.column("case") {
        Ok(case) => case.cast(&DataType::String)?,
        Err(_) => frame.column("image")?.cast(&DataType::String)?,
    };
    let keys = keys.str()?;
    let mut sums: HashMap<String, (f64, usize)> = HashMap::new();
    for (key, value) in keys.iter().zip(values.iter()) {
        if let (Some(key), Some(value)) = (key, value) {
            let entry = sums.entry(key.to_string()).or_default();
            entry.0 += value;
            entry.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect())
}

/// The per-image column behind an image metric (mIoUI -> IoU, mDiceI -> Dice).
fn per_image_column(metric: &str) -> Option<&'static str> {
    match metric {
        "mIoUI" => Some("IoU"),
        "mDiceI" => Some("Dice"),
        _ => None,
    }
}

pub fn build(results: &[RunResult], spec: &TableSpec) -> Result<PaperTable> {
    let value = |r: &RunResult| -> Result<f64> {
        match r.metrics.get(spec.metric) {
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::Null) => Ok(f64::NAN),
            _ => bail!(
                "the {} run of {} on {} has no metric {:?} (metrics.json keys: {})",
                r.prediction,
                r.model,
                r.dataset,
                spec.metric,
                r.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    };
    let find = |model: &str, prediction: &str, dataset: &str| {
        results
            .iter()
            .find(|r| r.model == model && r.prediction == prediction && r.dataset == dataset)
    };
    let models = unique(results.iter().map(|r| r.model.as_str()));
    let datasets = unique(results.iter().map(|r| r.dataset.as_str()));
    let mut predictions = unique(results.iter().map(|r| r.prediction.as_str()));
    if let Some(at) = predictions.iter().position(|p| p == spec.baseline) {
        let baseline = predictions.remove(at);
        predictions.insert(0, baseline);
    }

    let mut row_model = Vec::new();
    let mut row_prediction = Vec::new();
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); datasets.len()];
    let (mut d_model, mut d_pred, mut d_data) = (Vec::new(), Vec::new(), Vec::new());
    let (mut d_value, mut d_base, mut d_delta, mut d_lo, mut d_hi, mut d_units) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for model in &models {
        for prediction in &predictions {
            if !datasets.iter().any(|d| find(model, prediction, d).is_some()) {
                continue;
            }
            row_model.push(model.clone());
            row_prediction.push(prediction.clone());
            for (j, dataset) in datasets.iter().enumerate() {
                let Some(run) = find(model, prediction, dataset) else {
                    cells[j].push(None);
                    continue;
                };
                let v = value(run)?;
                let base = find(model, spec.baseline, dataset).filter(|_| prediction != spec.baseline);
                let Some(base) = base else {
                    cells[j].push(Some(format!("{v:.2}")));
                    continue;
                };
                let b = value(base)?;
                cells[j].push(Some(format!("{v:.2} ({:+.2})", v - b)));
                let interval = match per_image_column(spec.metric) {
                    Some(column) => {
                        let ours = units(&run.per_image, column)?;
                        let theirs = units(&base.per_image, column)?;
                        let mut keys: Vec<&String> =
                            ours.keys().filter(|k| theirs.contains_key(*k)).collect();
                        keys.sort();
                        let diffs: Vec<f64> = keys.iter().map(|k| ours[*k] - theirs[*k]).collect();
                        (paired_interval(&diffs, spec.draws, 0.95, spec.seed), diffs.len())
                    }
                    None => (None, 0),
                };
                d_model.push(model.clone());
                d_pred.push(prediction.clone());
                d_data.push(dataset.clone());
                d_value.push(v);
                d_base.push(b);
                d_delta.push(v - b);
                d_lo.push(interval.0.map(|i| i.0));
                d_hi.push(interval.0.map(|i| i.1));
                d_units.push(interval.1 as u64);
            }
        }
    }
    let mut columns = vec![
        Column::new("model".into(), row_model),
        Column::new("prediction".into(), row_prediction),
    ];
    for (dataset, cells) in datasets.iter().zip(cells) {
        columns.push(Column::new(dataset.as_str().into(), cells));
    }
    let wide = DataFrame::new_infer_height(columns)?;
    let deltas = DataFrame::new_infer_height(vec![
        Column::new("model".into(), d_model),
        Column::new("prediction".into(), d_pred),
        Column::new("dataset".into(), d_data),
        Column::new("value".into(), d_value),
        Column::new("baseline".into(), d_base),
        Column::new("delta".into(), d_delta),
        Column::new("ci_low".into(), d_lo),
        Column::new("ci_high".into(), d_hi),
        Column::new("units".into(), d_units),
    ])?;
    Ok(PaperTable { wide, deltas })
}
