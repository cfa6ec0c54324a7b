//! The evaluation loop of `rankseg exp --test-only`: dataset -> model -> probabilities ->
//! predictor -> metrics, batch by batch, then result files.

pub mod inference;
pub mod results;
pub mod run_json;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::config::predict::{PredictConfig, PredictMethod};
use crate::data::{Dataset, Entry, Sample};
use crate::metrics::{self, summarize, Calibration, CalibrationSpec, ImageCounts, MetricSpec};
use crate::predict::{self, PredictOptions, Prediction, ProbMap, Solver};
pub use inference::{Batch, Inference};

/// What one evaluation needs besides the dataset and the model.
pub struct Evaluation<'a> {
    /// The predict yaml's name, for the progress line.
    pub name: &'a str,
    pub predict: &'a PredictConfig,
    pub metric: MetricSpec,
    pub q: u32,
    pub groups: MetricGroups,
    pub calibration: CalibrationSpec,
    pub batch_size: usize,
    /// Log the times of every `log_iters`-th batch (the test yaml's `ITER.log_iters`).
    pub log_iters: usize,
    /// Metrics per case, then averaged over cases (LiTS, KiTS).
    pub per_case: bool,
    /// Where to write coloured predictions, if asked.
    pub save_pred: Option<results::PredictionImages>,
}

/// Which metric groups to report: over the dataset (D), per image (I), per class (C).
#[derive(Clone, Copy, Debug)]
pub struct MetricGroups {
    pub dataset: bool,
    pub image: bool,
    pub class: bool,
}

impl MetricGroups {
    /// Whether a reference key (`Acc`, `mIoUD`, `mDiceI`, `mIoUC`, ...) is reported.
    fn reports(&self, key: &str) -> bool {
        let rest = ["Acc", "IoU", "Dice"]
            .iter()
            .find_map(|name| key.strip_prefix('m').and_then(|k| k.strip_prefix(name)))
            .unwrap_or("D");
        match rest.chars().next() {
            Some('I') => self.image,
            Some('C') => self.class,
            _ => self.dataset,
        }
    }
}

/// One scored image.
#[derive(Clone, Debug)]
pub struct ImageRow {
    pub id: String,
    pub case: Option<u32>,
    pub iou: f64,
    pub dice: f64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Seconds {
    pub forward: f64,
    pub predict: f64,
    pub metric: f64,
}

pub struct Outcome {
    pub metrics: Vec<(String, f64)>,
    pub per_image: Vec<ImageRow>,
    pub seconds: Seconds,
    pub images: usize,
}

/// What the metrics keep of one image until the end.
struct Scored {
    entry: Entry,
    counts: Option<ImageCounts>,
}

pub fn evaluate(eval: &Evaluation, dataset: &dyn Dataset, inference: Option<&Inference>) -> Result<Outcome> {
    let entries = dataset.entries();
    let progress = ProgressBar::new(entries.len() as u64).with_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, {elapsed} elapsed, eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    progress.set_prefix(eval.name.to_string());
    let mut seconds = Seconds::default();
    let mut scored = Vec::with_capacity(entries.len());
    let mut calibration: BTreeMap<Option<u32>, Calibration> = BTreeMap::new();
    let batches = entries.len().div_ceil(eval.batch_size.max(1));
    for (iter, chunk) in entries.chunks(eval.batch_size.max(1)).enumerate() {
        let batch_start = Instant::now();
        let batch_seconds = seconds;
        let samples: Vec<Sample> = chunk
            .par_iter()
            .map(|entry| dataset.load(entry))
            .collect::<Result<_>>()?;
        let data_seconds = batch_start.elapsed().as_secs_f64();
        for range in equal_size_runs(&samples) {
            let (group, group_entries) = (&samples[range.clone()], &chunk[range]);
            let (h, w) = (group[0].height, group[0].width);
            let t0 = Instant::now();
            let probs: Cow<[f32]> = match inference {
                Some(inference) if !dataset.gives_probabilities() => {
                    Cow::Owned(inference.probabilities(&Batch {
                        data: group.iter().flat_map(|s| s.input.iter().copied()).collect(),
                        size: group.len(),
                        channels: group[0].input.len() / (h * w),
                        height: h,
                        width: w,
                    })?)
                }
                // A probs dataset's maps are the probabilities; a temperature other than 1
                // rescales them as it would the logits they came from.
                _ if eval.predict.temperature != 1.0 => Cow::Owned(
                    inference::temper(
                        group.iter().flat_map(|s| s.input.iter().copied()).collect(),
                        group.len(),
                        eval.metric.num_classes,
                        eval.predict.temperature,
                    )
                    .with_context(|| describe(group_entries))?,
                ),
                _ if group.len() == 1 => Cow::Borrowed(&group[0].input),
                _ => Cow::Owned(group.iter().flat_map(|s| s.input.iter().copied()).collect()),
            };
            let t1 = Instant::now();
            let classes = eval.metric.num_classes;
            let map = ProbMap::new(&probs, &[group.len(), classes, h * w])
                .with_context(|| format!("{}: probabilities", group_entries[0].input.display()))?;
            let prediction = run_predictor(eval.predict, &map)
                .with_context(|| format!("predicting {}", describe(group_entries)))?;
            let t2 = Instant::now();
            for (b, (sample, entry)) in group.iter().zip(group_entries).enumerate() {
                let pred = image_prediction(&prediction, b, classes, h * w);
                let counts = ImageCounts::of(pred, &sample.label, &eval.metric)
                    .with_context(|| format!("{}", entry.label.display()))?;
                if eval.calibration.any() {
                    calibration
                        .entry(entry.case.filter(|_| eval.per_case))
                        .or_insert_with(|| Calibration::new(eval.calibration))
                        .add(map.image(b).data, &sample.label);
                }
                if let Some(images) = &eval.save_pred {
                    images.save(entry, pred, &sample.label, h, w, &eval.metric)?;
                }
                scored.push(Scored {
                    entry: entry.clone(),
                    counts,
                });
            }
            let t3 = Instant::now();
            seconds.forward += (t1 - t0).as_secs_f64();
            seconds.predict += (t2 - t1).as_secs_f64();
            seconds.metric += (t3 - t2).as_secs_f64();
            progress.inc(group.len() as u64);
        }
        if iter % eval.log_iters.max(1) == 0 {
            // The experiment's log line, so that runs can be compared line by line.
            let line = format!(
                "{}: Iter: [{iter}|{batches}], Data Time: {data_seconds:.6}, Model forward Time: {:.6}, \
                 Seg predict Time: {:.6}, Metric Time: {:.6}",
                eval.name,
                seconds.forward - batch_seconds.forward,
                seconds.predict - batch_seconds.predict,
                seconds.metric - batch_seconds.metric,
            );
            progress.suspend(|| eprintln!("{line}"));
        }
    }
    progress.finish_and_clear();
    let t = Instant::now();
    let (metrics, per_image) = reduce(eval, &scored, &calibration)?;
    seconds.metric += t.elapsed().as_secs_f64();
    Ok(Outcome {
        metrics,
        per_image,
        seconds,
        images: entries.len(),
    })
}

/// Consecutive samples of one size, which the model takes as one batch.
fn equal_size_runs(samples: &[Sample]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=samples.len() {
        let size = |s: &Sample| (s.height, s.width);
        if i == samples.len() || size(&samples[i]) != size(&samples[start]) {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

fn describe(entries: &[Entry]) -> String {
    match entries {
        [one] => one.input.display().to_string(),
        many => format!("{} images from {}", many.len(), many[0].input.display()),
    }
}

/// The predictor a predict yaml names, on one batch of probabilities.
pub fn run_predictor(config: &PredictConfig, map: &ProbMap<f32>) -> Result<Prediction> {
    let with = |solver: Solver, output_mode| PredictOptions {
        solver,
        output_mode,
        ..PredictOptions::default()
    };
    Ok(match &config.method {
        PredictMethod::Argmax => {
            predict::predict(map, &with(Solver::Argmax, predict::OutputMode::Multiclass))?
        }
        PredictMethod::Threshold => {
            predict::predict(map, &with(Solver::Threshold, predict::OutputMode::Multilabel))?
        }
        PredictMethod::ExperimentRma(rma) => rma.predict(map)?,
        PredictMethod::ExperimentBa { smooth } => predict::experiment::rankseg_ba(map, *smooth)?,
        PredictMethod::Package(options) => predict::predict(map, options)?,
    })
}

fn image_prediction(
    prediction: &Prediction,
    b: usize,
    classes: usize,
    dim: usize,
) -> metrics::Prediction<'_> {
    match prediction {
        Prediction::ClassMap(map) => metrics::Prediction::ClassMap(&map[b * dim..(b + 1) * dim]),
        Prediction::Masks(masks) => {
            metrics::Prediction::Masks(&masks[b * classes * dim..(b + 1) * classes * dim])
        }
    }
}

type Reduced = (Vec<(String, f64)>, Vec<ImageRow>);

/// The metrics over all images, or per case and then averaged over the cases.
fn reduce(
    eval: &Evaluation,
    scored: &[Scored],
    calibration: &BTreeMap<Option<u32>, Calibration>,
) -> Result<Reduced> {
    let mut groups: BTreeMap<Option<u32>, Vec<&Scored>> = BTreeMap::new();
    for s in scored {
        groups
            .entry(s.entry.case.filter(|_| eval.per_case))
            .or_default()
            .push(s);
    }
    let mut sums: Vec<(String, f64, usize)> = Vec::new();
    let mut per_image = Vec::new();
    for (key, members) in &groups {
        let kept: Vec<&Scored> = members.iter().copied().filter(|s| s.counts.is_some()).collect();
        let counts: Vec<ImageCounts> = kept.iter().filter_map(|s| s.counts.clone()).collect();
        if counts.is_empty() {
            continue;
        }
        let summary = summarize(&counts, &eval.metric, eval.q);
        per_image.extend(kept.iter().zip(&summary.per_image).map(|(s, m)| ImageRow {
            id: s.entry.id.clone(),
            case: s.entry.case,
            iou: 100.0 * m.iou,
            dice: 100.0 * m.dice,
        }));
        let mut values: Vec<(String, f64)> = summary
            .values
            .into_iter()
            .filter(|(k, _)| eval.groups.reports(k))
            .collect();
        if let Some(cal) = calibration.get(key) {
            values.extend(cal.values());
        }
        for (k, v) in values {
            match sums.iter_mut().find(|(name, _, _)| *name == k) {
                Some(entry) if !v.is_nan() => {
                    entry.1 += v;
                    entry.2 += 1;
                }
                Some(_) => {}
                None => sums.push((k, if v.is_nan() { 0.0 } else { v }, usize::from(!v.is_nan()))),
            }
        }
    }
    if per_image.is_empty() {
        bail!("no image had a pixel left after dropping the ignore label: nothing to score");
    }
    let metrics = sums
        .into_iter()
        .map(|(k, sum, n)| (k, if n == 0 { f64::NAN } else { sum / n as f64 }))
        .collect();
    Ok((metrics, per_image))
}
