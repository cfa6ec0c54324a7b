//! One run of the experiment's `main.py --test-only`, as a library: resolve the configs,
//! find the model, fingerprint every input, open the dataset, evaluate with one predictor
//! and write the result files and the run's run.json entry. `cli/exp.rs` only parses flags.

pub mod configs;
pub mod fingerprint;
pub mod model;
pub mod train;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::data::DatasetKind;
use crate::data;
use crate::metrics::{CalibrationSpec, MetricSpec};
use crate::models::{self, ModelSource};
use crate::runner::results::{self, PredictionImages};
use crate::runner::run_json::{self, Build, CheckpointRecord, PredictionRun};
use crate::runner::{self, Evaluation, Inference, MetricGroups, Outcome};
pub use configs::{Configs, YamlNames};
use fingerprint::Parts;

/// What a user asks of one run.
#[derive(Clone, Debug)]
pub struct Request {
    pub yamls: YamlNames,
    pub model_checkpoint: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub output_dir: PathBuf,
    /// Replace a finished run of this predictor made from other inputs.
    pub force: bool,
    pub device: String,
}

pub enum Report {
    /// The output directory already holds this run, made from the same inputs.
    AlreadyDone {
        predict: String,
    },
    Evaluated {
        predict: String,
        outcome: Outcome,
    },
}

/// A resolved run, before anything is evaluated.
struct Plan {
    configs: Configs,
    model: Option<ModelSource>,
    checkpoint: Option<CheckpointRecord>,
    data_dir: PathBuf,
    dataset: Box<dyn data::Dataset>,
    batch_size: usize,
    build: Build,
    fingerprint: run_json::Fingerprint,
}

impl Plan {
    fn resolve(request: &Request) -> Result<Self> {
        let out = &request.output_dir;
        if out.exists() && !out.is_dir() {
            bail!("--output_dir {} is a file, not a directory", out.display());
        }
        let configs = Configs::load(&request.yamls)?;
        let model = match configs.data.value.dataset {
            DatasetKind::Probs => None,
            _ => Some(model::source(
                request.model_checkpoint.as_deref(),
                &request.output_dir,
                &configs,
            )?),
        };
        let checkpoint = match &model {
            Some(source) => {
                let weights = source.weight_files();
                Some(CheckpointRecord {
                    source: source.source(),
                    config: source.config_file(),
                    sha256: fingerprint::sha256_files(&weights)?,
                    weights,
                })
            }
            None => None,
        };
        let data_dir = std::fs::canonicalize(&request.data_dir)
            .with_context(|| format!("--data_dir {} does not exist", request.data_dir.display()))?;
        let dataset = data::open(&configs.data.value, &data_dir)?;
        let inf = &configs.test.value.inf;
        // As the experiment: ADE20K's large images, and multi-scale inference, one at a time.
        let batch_size = if configs.data.value.dataset == DatasetKind::Ade20k || inf.ratios.len() > 1 {
            1
        } else {
            configs.schedule.value.batch_size.max(1)
        };
        let build = Build::current();
        let mut parts = Parts::default();
        parts.configs(&configs.records());
        if let (Some(source), Some(record)) = (&model, &checkpoint) {
            let config_json = match source {
                ModelSource::HuggingFace(c) => Some(c.config.as_path()),
                ModelSource::Experiment { .. } => None,
            };
            parts.checkpoint(&record.sha256, config_json)?;
        }
        parts.data(&data_dir, dataset.as_ref())?;
        parts.build(&build);
        parts.run(&request.device, batch_size);
        Ok(Plan {
            configs,
            model,
            checkpoint,
            data_dir,
            dataset,
            batch_size,
            build,
            fingerprint: parts.finish(),
        })
    }
}

/// Whether the output directory already holds this predictor's run: `true` when it was
/// made from the same inputs, an error saying what changed when not (unless forced).
fn already_done(request: &Request, predict: &str, fingerprint: &run_json::Fingerprint) -> Result<bool> {
    let out = &request.output_dir;
    let finished = match run_json::read(out) {
        Ok(run) => run.and_then(|mut run| run.predictions.remove(predict)),
        Err(_) if request.force => None,
        Err(e) => {
            return Err(e.context(format!(
                "{} holds a run.json this run cannot update: pass --force to replace it, or choose another --output_dir",
                out.display()
            )))
        }
    };
    let Some(finished) = finished.filter(|_| results::metrics_path(out, predict).exists()) else {
        return Ok(false);
    };
    if finished.fingerprint.digest == fingerprint.digest {
        return Ok(true);
    }
    if request.force {
        return Ok(false);
    }
    let changes = fingerprint.changes_since(&finished.fingerprint);
    bail!(
        "{} holds a {predict} run made from other inputs; changed:\n  {}\npass --force to replace it, or choose another --output_dir",
        out.display(),
        changes.join("\n  ")
    )
}

/// `main.py --test-only`: evaluates the model on the data yaml's evaluation split with the
/// predict yaml's predictor.
pub fn test_only(request: &Request) -> Result<Report> {
    let plan = Plan::resolve(request)?;
    let configs = &plan.configs;
    let predict = configs.predict.source.name.clone();
    if already_done(request, &predict, &plan.fingerprint)? {
        return Ok(Report::AlreadyDone { predict });
    }
    let device = models::device(&request.device)?;
    let model = match &plan.model {
        Some(source) => {
            let model = source.load(&device)?;
            model::check_fits(&model, source, configs)?;
            Some(model)
        }
        None => None,
    };
    let inf = &configs.test.value.inf;
    if inf.flip && inf.ratios == [1.0] {
        eprintln!("note: INF.flip is ignored with ratios [1], as the experiment code ignores it");
    }
    let data = &configs.data.value;
    let inference = model.as_ref().map(|model| Inference {
        model,
        device: device.clone(),
        num_classes: data.num_classes,
        crop: data.crop(),
        stride_rate: inf.stride_rate,
        flip: inf.flip,
        ratios: inf.ratios.clone(),
        temperature: configs.predict.value.temperature,
    });
    let metric = &configs.test.value.metric;
    let out = &request.output_dir;
    let eval = Evaluation {
        name: &predict,
        predict: &configs.predict.value,
        metric: MetricSpec {
            num_classes: data.num_classes,
            ignore_index: data.ignore_index,
        },
        q: metric.q,
        groups: MetricGroups {
            dataset: metric.accuracy_dataset,
            image: metric.accuracy_image,
            class: metric.accuracy_class,
        },
        calibration: CalibrationSpec {
            eced: metric.ece_dataset,
            ecei: metric.ece_image,
            sced: metric.sce_dataset,
            scei: metric.sce_image,
            num_bins: metric.num_bins,
            num_classes: data.num_classes,
            ignore_index: data.ignore_index,
        },
        batch_size: plan.batch_size,
        log_iters: configs.test.value.iter.log_iters,
        per_case: data.dataset.medical(),
        save_pred: configs.test.value.iter.save_pred.then(|| PredictionImages {
            dir: out.join(format!("{predict}.pred")),
            palette: data::palette(data.dataset),
        }),
    };
    let outcome = runner::evaluate(&eval, plan.dataset.as_ref(), inference.as_ref())?;
    results::write(out, &predict, &outcome)?;
    let entry = PredictionRun {
        model: model::label(plan.model.as_ref(), configs),
        dataset: configs.data.source.name.clone(),
        configs: configs
            .records()
            .into_iter()
            .map(|(flag, record)| (flag.to_string(), record))
            .collect(),
        predict: configs.predict.resolved.clone(),
        data_dir: plan.data_dir.clone(),
        checkpoint: plan.checkpoint.clone(),
        build: plan.build.clone(),
        device: request.device.clone(),
        threads: rayon::current_num_threads(),
        batch_size: plan.batch_size,
        fingerprint: plan.fingerprint.clone(),
        images: outcome.images,
        scored_images: outcome.per_image.len(),
        seconds: outcome.seconds,
    };
    run_json::update(out, request.force, |run| {
        run.predictions.insert(predict.clone(), entry);
    })?;
    Ok(Report::Evaluated { predict, outcome })
}
