//! `rankseg exp`: the experiment's `main.py`, with its flags. `--test-only` evaluates a
//! model on a dataset's evaluation split with one predictor and writes the result files;
//! training is not implemented yet.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::data::{DataConfig, DatasetKind};
use crate::config::predict::PredictConfig;
use crate::config::test::TestConfig;
use crate::config::training::{LossConfig, OptimConfig, ScheduleConfig};
use crate::config::{self, Kind, Source};
use crate::data;
use crate::metrics::{CalibrationSpec, MetricSpec};
use crate::models::{self, zoo, Checkpoint, ModelSource, ModelYaml};
use crate::runner::results::{self, PredictionImages, RunRecord};
use crate::runner::{self, Evaluation, Inference};

#[derive(Args)]
pub struct ExpArgs {
    /// A Hugging Face layout directory (config.json + safetensors; enough on its own, the
    /// architecture comes from its config.json), or a checkpoint of the experiment's own
    /// models (its main.py's checkpointNNN.pth, a state dict .pth or .safetensors) beside
    /// --model_yaml. Default: the latest checkpoint*.pth / .safetensors in --output_dir.
    #[arg(long = "model_checkpoint", alias = "model-checkpoint")]
    model_checkpoint: Option<PathBuf>,
    /// The folder holding the datasets, laid out as DATA.md says.
    #[arg(long = "data_dir", alias = "data-dir")]
    data_dir: PathBuf,
    /// Where the result files go.
    #[arg(long = "output_dir", alias = "output-dir", default_value = "outputs")]
    output_dir: PathBuf,
    /// A name under configs/models/ or a yaml path (optional with --model_checkpoint).
    #[arg(long = "model_yaml", alias = "model-yaml")]
    model_yaml: Option<String>,
    #[arg(long = "data_yaml", alias = "data-yaml", default_value = "cityscapes")]
    data_yaml: String,
    #[arg(
        long = "loss_yaml",
        alias = "loss-yaml",
        default_value = "jaccard_ic_present_all"
    )]
    loss_yaml: String,
    #[arg(long = "schedule_yaml", alias = "schedule-yaml", default_value = "40k_iters")]
    schedule_yaml: String,
    #[arg(long = "optim_yaml", alias = "optim-yaml", default_value = "adamw_lr6e-5")]
    optim_yaml: String,
    #[arg(long = "test_yaml", alias = "test-yaml", default_value = "test_iou")]
    test_yaml: String,
    #[arg(long = "predict_yaml", alias = "predict-yaml", default_value = "argmax")]
    predict_yaml: String,
    /// Evaluate only (training is not implemented yet).
    #[arg(long = "test-only", alias = "test_only")]
    test_only: bool,
    /// Rerun even when the output directory already holds this predictor's results.
    #[arg(long)]
    force: bool,
    /// cpu, or cuda / cuda:N (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Every config of a run, parsed and checked.
struct Configs {
    sources: Vec<(Kind, Source)>,
    data: DataConfig,
    test: TestConfig,
    predict: PredictConfig,
    schedule: ScheduleConfig,
    model: Option<ModelYaml>,
}

fn load_configs(args: &ExpArgs) -> Result<Configs> {
    let mut sources = Vec::new();
    let mut load = |kind: Kind, spec: &str| -> Result<Source> {
        let source = config::find(kind, spec).with_context(|| format!("--{}_yaml", flag(kind)))?;
        sources.push((kind, source.clone()));
        Ok(source)
    };
    let data_source = load(Kind::Datas, &args.data_yaml)?;
    let data: DataConfig = data_source.parse()?;
    data.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", data_source.origin))?;
    let test_source = load(Kind::Test, &args.test_yaml)?;
    let test: TestConfig = test_source.parse()?;
    test.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", test_source.origin))?;
    let predict_source = load(Kind::Predict, &args.predict_yaml)?;
    let predict = PredictConfig::from_yaml(&predict_source.text)
        .with_context(|| format!("{}: invalid config", predict_source.origin))?;
    predict
        .check(data.num_classes)
        .with_context(|| format!("{} with {}", predict_source.origin, data_source.origin))?;
    let _: LossConfig = load(Kind::Losses, &args.loss_yaml)?.parse()?;
    let schedule: ScheduleConfig = load(Kind::Schedules, &args.schedule_yaml)?.parse()?;
    let _: OptimConfig = load(Kind::Optims, &args.optim_yaml)?.parse()?;
    let model = match &args.model_yaml {
        Some(spec) => Some(load(Kind::Models, spec)?.parse::<ModelYaml>()?),
        None => None,
    };
    Ok(Configs {
        sources,
        data,
        test,
        predict,
        schedule,
        model,
    })
}

fn flag(kind: Kind) -> &'static str {
    match kind {
        Kind::Models => "model",
        Kind::Datas => "data",
        Kind::Losses => "loss",
        Kind::Predict => "predict",
        Kind::Test => "test",
        Kind::Schedules => "schedule",
        Kind::Optims => "optim",
    }
}

/// The model: `--model_checkpoint` (a Hugging Face directory, or a state dict file of the
/// experiment's model that `--model_yaml` describes), else the latest checkpoint in
/// `--output_dir` (as `main.py`), else the weights the model yaml names.
fn model_source(args: &ExpArgs, configs: &Configs) -> Result<ModelSource> {
    let model_source = configs
        .sources
        .iter()
        .find(|(k, _)| *k == Kind::Models)
        .map(|(_, s)| s);
    let experiment = |yaml: &ModelYaml, source: &Source, weights: PathBuf| -> Result<ModelSource> {
        let data = &configs.data;
        let channels = data
            .in_channels
            .unwrap_or(if data.dataset.medical() { 1 } else { 3 });
        let [h, w] = data.crop();
        let origin = format!("{} with {}", source.origin, data_source(configs).origin);
        let config = zoo::SegmentorConfig::new(yaml, channels, data.num_classes, (h, w))
            .with_context(|| origin.clone())?;
        Ok(ModelSource::Experiment {
            config,
            weights,
            origin,
        })
    };
    match (&args.model_checkpoint, &configs.model, model_source) {
        (Some(dir), yaml, _) if dir.is_dir() => {
            let mut checkpoint = Checkpoint::from_dir(dir).context("--model_checkpoint")?;
            checkpoint.method = yaml.as_ref().map(|y| y.method.clone());
            Ok(ModelSource::HuggingFace(checkpoint))
        }
        (Some(file), Some(yaml), Some(source)) => experiment(yaml, source, file.clone()),
        (Some(file), None, _) if !file.exists() => {
            bail!("--model_checkpoint {} does not exist", file.display())
        }
        (Some(file), None, _) => bail!(
            "--model_checkpoint {}: a state dict file needs --model_yaml (the experiment's architecture), or give a Hugging Face layout directory",
            file.display()
        ),
        (None, Some(yaml), Some(source)) => {
            if let Some(latest) = models::latest_checkpoint(&args.output_dir) {
                eprintln!("using the latest checkpoint in --output_dir: {}", latest.display());
                return experiment(yaml, source, latest);
            }
            let checkpoint = yaml.checkpoint(source)?.with_context(|| {
                format!(
                    "{} names no weights and {} holds no checkpoint*.pth / .safetensors: pass --model_checkpoint",
                    source.origin,
                    args.output_dir.display()
                )
            })?;
            Ok(ModelSource::HuggingFace(checkpoint))
        }
        _ => bail!("no model: pass --model_checkpoint DIR (config.json + model.safetensors) or --model_yaml"),
    }
}

fn data_source(configs: &Configs) -> &Source {
    configs
        .sources
        .iter()
        .find(|(k, _)| *k == Kind::Datas)
        .map(|(_, s)| s)
        .expect("the data config was loaded")
}

fn sha256_files(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in files {
        let mut reader =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn yaml_as_json(source: &Source) -> Value {
    let value: serde_yaml::Value = serde_yaml::from_str(&source.text).unwrap_or(serde_yaml::Value::Null);
    json!({ "name": source.name, "origin": source.origin, "values": serde_json::to_value(value).unwrap_or(Value::Null) })
}

pub fn run(args: ExpArgs) -> Result<()> {
    if !args.test_only {
        bail!("training is not implemented yet: pass --test-only to evaluate a checkpoint");
    }
    let configs = load_configs(&args)?;
    let predict_name = configs
        .sources
        .iter()
        .find(|(k, _)| *k == Kind::Predict)
        .map(|(_, s)| s.name.clone())
        .expect("the predict config was loaded");
    let probs_only = configs.data.dataset == DatasetKind::Probs;
    let checkpoint = if probs_only {
        None
    } else {
        Some(model_source(&args, &configs)?)
    };
    let weights_sha256 = match &checkpoint {
        Some(c) => Some(sha256_files(&c.weight_files())?),
        None => None,
    };
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("--data_dir {} does not exist", args.data_dir.display()))?;

    // Everything that decides the numbers; a finished run with the same fingerprint is done.
    let fingerprint = {
        let decisive = json!({
            "data": serde_json::to_value(&configs.data)?,
            "test": serde_json::to_value(&configs.test)?,
            "predict": configs.predict.resolved,
            "batch_size": configs.schedule.batch_size,
            "weights": weights_sha256,
            // The experiment's own models take their architecture from the model yaml.
            "model_yaml": configs.sources.iter().find(|(k, _)| *k == Kind::Models).map(|(_, s)| yaml_as_json(s)["values"].clone()),
            "data_dir": data_dir,
        });
        format!("{:x}", Sha256::digest(decisive.to_string().as_bytes()))
    };
    let out = &args.output_dir;
    match results::finished_fingerprint(out, &predict_name)? {
        Some(done) if !args.force => {
            if done == fingerprint {
                eprintln!(
                    "{} already holds the finished {predict_name} run: nothing to do (--force reruns it)",
                    out.display()
                );
                return Ok(());
            }
            bail!(
                "{} holds a {predict_name} run made with other configs, data or weights: pass --force to overwrite it, or choose another --output_dir",
                out.display()
            );
        }
        _ => {}
    }

    let dataset = data::open(&configs.data, &data_dir)?;
    let device = models::device(&args.device)?;
    let model = match &checkpoint {
        Some(c) => Some(c.load(&device)?),
        None => None,
    };
    if let (Some(model), Some(checkpoint)) = (&model, &checkpoint) {
        let data = &configs.data;
        if model.num_classes != data.num_classes {
            bail!(
                "{} predicts {} classes but the data yaml has num_classes {}",
                checkpoint.source(),
                model.num_classes,
                data.num_classes
            );
        }
        let channels = data
            .in_channels
            .unwrap_or(if data.dataset.medical() { 1 } else { 3 });
        if model.in_channels != channels {
            bail!(
                "{} takes {} input channels but the data yaml gives {channels} (in_channels)",
                checkpoint.source(),
                model.in_channels
            );
        }
    }
    let inf = &configs.test.inf;
    if inf.flip && inf.ratios == [1.0] {
        eprintln!("note: INF.flip is ignored with ratios [1], as the experiment code ignores it");
    }
    let inference = model.as_ref().map(|model| Inference {
        model,
        device: device.clone(),
        num_classes: configs.data.num_classes,
        crop: configs.data.crop(),
        stride_rate: inf.stride_rate,
        flip: inf.flip,
        ratios: inf.ratios.clone(),
        temperature: configs.predict.temperature,
    });
    let metric_config = &configs.test.metric;
    let spec = MetricSpec {
        num_classes: configs.data.num_classes,
        ignore_index: configs.data.ignore_index,
    };
    // As the experiment: ADE20K's large images go one at a time.
    let batch_size = if configs.data.dataset == DatasetKind::Ade20k || inf.ratios.len() > 1 {
        1
    } else {
        configs.schedule.batch_size.max(1)
    };
    let eval = Evaluation {
        name: &predict_name,
        predict: &configs.predict,
        metric: spec,
        q: metric_config.q,
        groups: [
            metric_config.accuracyD,
            metric_config.accuracyI,
            metric_config.accuracyC,
        ],
        calibration: CalibrationSpec {
            eced: metric_config.ECED,
            ecei: metric_config.ECEI,
            sced: metric_config.SCED,
            scei: metric_config.SCEI,
            num_bins: metric_config.num_bins,
            num_classes: configs.data.num_classes,
            ignore_index: configs.data.ignore_index,
        },
        batch_size,
        log_iters: configs.test.iter.log_iters,
        per_case: configs.data.dataset.medical(),
        save_pred: configs.test.iter.save_pred.then(|| PredictionImages {
            dir: out.join(format!("{predict_name}.pred")),
            palette: data::palette(configs.data.dataset),
        }),
    };
    let outcome = runner::evaluate(&eval, dataset.as_ref(), inference.as_ref())?;

    let mut shared = Map::new();
    for (kind, source) in &configs.sources {
        if !matches!(kind, Kind::Predict | Kind::Test) {
            shared.insert(format!("{}_yaml", flag(*kind)), yaml_as_json(source));
        }
    }
    shared.insert("data_dir".into(), json!(data_dir));
    shared.insert(
        "checkpoint".into(),
        match &checkpoint {
            Some(c) => json!({
                "source": c.source(),
                "config": c.config_file(),
                "weights": c.weight_files(),
                "sha256": weights_sha256,
            }),
            None => Value::Null,
        },
    );
    shared.insert("versions".into(), versions());
    shared.insert("git_revision".into(), json!(env!("RANKSEG_GIT_REVISION")));
    let mut entry = Map::new();
    for (kind, source) in &configs.sources {
        if matches!(kind, Kind::Predict | Kind::Test) {
            entry.insert(format!("{}_yaml", flag(*kind)), yaml_as_json(source));
        }
    }
    entry.insert("predict".into(), configs.predict.resolved.clone());
    entry.insert("batch_size".into(), json!(batch_size));
    entry.insert("device".into(), json!(args.device));
    entry.insert("threads".into(), json!(rayon::current_num_threads()));
    entry.insert("fingerprint".into(), json!(fingerprint));
    results::write(out, &predict_name, &outcome, RunRecord { shared, entry })?;

    for (key, value) in &outcome.metrics {
        println!("{key}: {value:.2}");
    }
    eprintln!(
        "{} images: forward {:.2} s, predict {:.2} s, metrics {:.2} s; results in {}",
        outcome.images,
        outcome.seconds.forward,
        outcome.seconds.predict,
        outcome.seconds.metric,
        results::metrics_path(out, &predict_name).display()
    );
    Ok(())
}

fn versions() -> Value {
    json!({
        "rankseg": env!("CARGO_PKG_VERSION"),
        "candle-core": env!("RANKSEG_CANDLE_VERSION"),
        "polars": env!("RANKSEG_POLARS_VERSION"),
        "hf-hub": env!("RANKSEG_HF_HUB_VERSION"),
    })
}
