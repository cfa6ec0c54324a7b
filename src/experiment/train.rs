//! `main.py` without `--test-only`: trains the experiment's model as its `main.py` and
//! `train.py` do (their step count, schedule, parameter groups and checkpoints), writing
//! into `--output_dir` itself, then evaluates with `--predict_yaml` at its test epochs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::configs::Configs;
use super::{model, test_only, Report, Request};
use crate::config::training::ScheduleConfig;
use crate::data::train::{Batch, Loader, LoaderConfig, TrainSet};
use crate::models::zoo::Segmentor;
use crate::models::{self, StateDict};
use crate::train::checkpoint::{self, Progress};
use crate::train::log::{Row, TrainLog};
use crate::train::loss::target::Target;
use crate::train::loss::Loss;
use crate::train::store::{Start, TrainStore};
use crate::train::{from_config, LambdaLr, Optimizer};

/// What training adds to a run's request.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Seeds the shuffles, the augmentations, Dropout2d and a fresh model's initialisation.
    pub seed: u64,
    /// The backbone's pretrained weights (timm's safetensors); default: timm's files in the
    /// Hugging Face cache (`timm/<backbone>.*`), else timm's random initialisation.
    pub backbone_weights: Option<PathBuf>,
}

/// What a training run did.
pub struct Trained {
    /// Optimizer steps taken by this invocation.
    pub steps: u64,
    pub last_epoch: u64,
    /// The evaluations it ran, in order.
    pub reports: Vec<Report>,
}

/// `train_iters` and `train_epochs` as `main.py` completes them from `len(train_loader)`.
pub fn length(schedule: &ScheduleConfig, per_epoch: u64) -> Result<(u64, u64)> {
    if schedule.by_epoch {
        ensure!(
            schedule.train_epochs > 0,
            "schedule yaml: by_epoch needs train_epochs > 0"
        );
        let epochs = schedule.train_epochs as u64;
        Ok((epochs * per_epoch, epochs))
    } else {
        ensure!(
            schedule.train_iters > 0,
            "schedule yaml: train_iters must be > 0 (or by_epoch: True)"
        );
        let iters = schedule.train_iters as u64;
        Ok((iters, iters / per_epoch + 1))
    }
}

/// A model in train mode with its optimizer and schedule: one `step` is one iteration of
/// `train.py`.
pub struct Trainer {
    model: Segmentor,
    store: TrainStore,
    optimizer: Optimizer,
    scheduler: LambdaLr,
    loss: Loss,
}

/// What one step did.
pub struct Step {
    /// Parameter group 0's rate for this step.
    pub lr: f64,
    pub loss: f64,
}

impl Trainer {
    /// `main.py`'s optimizer over `get_params_list` and its LambdaLR for `train_iters`.
    pub fn new(model: Segmentor, store: TrainStore, configs: &Configs, train_iters: u64) -> Result<Self> {
        let optim = &configs.optim.value;
        let groups = store.segmentor_groups(optim.lr, optim.multiplier, optim.weight_decay, true);
        let mut optimizer = Optimizer::new(from_config::rule(optim)?, groups)?;
        let schedule = from_config::schedule(optim, &configs.schedule.value, train_iters as usize)?;
        let scheduler = LambdaLr::new(schedule, &mut optimizer)?;
        let loss = Loss::from_config(&configs.loss.value, configs.data.value.num_classes)?;
        Ok(Trainer {
            model,
            store,
            optimizer,
            scheduler,
            loss,
        })
    }

    /// zero_grad, forward_loss, backward, optimizer.step(), scheduler.step().
    pub fn step(&mut self, iteration: u64, images: &Tensor, target: &Target) -> Result<Step> {
        self.model.set_iteration(iteration);
        let (main, aux) = self.model.forward_with_aux(images)?;
        let value = self.loss.forward(&main, Some(&aux), target)?;
        let lr = self.optimizer.groups[0].lr;
        self.optimizer.step(&value.backward()?)?;
        self.scheduler.step(&mut self.optimizer)?;
        Ok(Step {
            lr,
            loss: value.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        })
    }

    /// Restores the optimizer and schedule a checkpoint saved; returns the next epoch.
    fn resume(&mut self, resume: checkpoint::Resume) -> Result<u64> {
        self.optimizer
            .load_state_tensors(&resume.optimizer)
            .context("the checkpoint's optimizer state")?;
        self.scheduler.last_epoch = resume.progress.last_epoch;
        self.scheduler.apply(&mut self.optimizer)?;
        Ok(resume.progress.epoch + 1)
    }

    fn save(&self, dir: &Path, epoch: u64) -> Result<PathBuf> {
        let progress = Progress {
            epoch,
            last_epoch: self.scheduler.last_epoch,
        };
        let optimizer = self.optimizer.state_tensors(&Device::Cpu)?;
        checkpoint::save(dir, &progress, &self.store.state_dict(), optimizer)
    }
}

fn pretrained_backbone(name: &str, given: Option<&Path>) -> Result<Option<StateDict>> {
    if let Some(path) = given {
        return StateDict::open(path).map(Some).context("--backbone_weights");
    }
    let cache = hf_hub::Cache::from_env().path().clone();
    let prefix = format!("models--timm--{name}.");
    let found = std::fs::read_dir(&cache).ok().and_then(|dirs| {
        let mut repos: Vec<PathBuf> = dirs
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        repos.sort();
        repos.into_iter().find_map(|repo| {
            let snapshots = std::fs::read_dir(repo.join("snapshots")).ok()?;
            snapshots
                .filter_map(|s| s.ok().map(|s| s.path().join("model.safetensors")))
                .find(|p| p.is_file())
        })
    });
    match found {
        Some(path) => {
            eprintln!("backbone {name}: pretrained weights from {}", path.display());
            StateDict::open(&path).map(Some)
        }
        None => {
            eprintln!(
                "backbone {name}: no timm/{name}.* in the Hugging Face cache ({}) and no --backbone_weights: initialised at random",
                cache.display()
            );
            Ok(None)
        }
    }
}

/// The model `--model_yaml` describes in train mode, its weights from `start`.
pub fn build(configs: &Configs, start: Start, seed: u64) -> Result<(Segmentor, TrainStore)> {
    let (mut config, origin) = model::segmentor_config(configs)?;
    config.seed = seed;
    ensure!(
        config.aux == Some(true),
        "{origin}: training needs `aux: True` (with it off the experiment's get_params_list leaves aux_conv and aux_head out and fails its own check)"
    );
    ensure!(
        config.dropout.is_some(),
        "{origin}: the model yaml has no `dropout`"
    );
    let store = TrainStore::new(start);
    let model = Segmentor::load(store.var_builder(&Device::Cpu), &config).with_context(|| origin.clone())?;
    let unexpected = store.unexpected_keys();
    if !unexpected.is_empty() {
        bail!(
            "the checkpoint holds keys the model ({origin}) does not have: {}",
            unexpected.join(", ")
        );
    }
    Ok((model, store))
}

/// `--model_checkpoint`, else the latest checkpoint in `--output_dir`, else a fresh model;
/// returns the trainer and the first epoch to run.
fn start(
    configs: &Configs,
    request: &Request,
    options: &TrainOptions,
    train_iters: u64,
) -> Result<(Trainer, u64)> {
    let from = request
        .model_checkpoint
        .clone()
        .or_else(|| models::latest_checkpoint(&request.output_dir));
    let Some(path) = from else {
        let backbone = model::segmentor_config(configs)?.0.backbone;
        let start = Start::Fresh {
            pretrained: pretrained_backbone(&backbone, options.backbone_weights.as_deref())?,
            seed: options.seed,
        };
        let (model, store) = build(configs, start, options.seed)?;
        return Ok((Trainer::new(model, store, configs, train_iters)?, 1));
    };
    eprintln!("starting from {}", path.display());
    let dict = StateDict::open(&path).context("--model_checkpoint")?;
    let (model, store) =
        build(configs, Start::Checkpoint(dict), options.seed).with_context(|| path.display().to_string())?;
    let mut trainer = Trainer::new(model, store, configs, train_iters)?;
    let first_epoch = match checkpoint::read_resume(&path)? {
        Some(resume) => trainer
            .resume(resume)
            .with_context(|| path.display().to_string())?,
        None => 1,
    };
    Ok((trainer, first_epoch))
}

/// A batch as the model's input and the loss's target.
fn tensors(batch: &Batch, ignore_index: i64, num_classes: usize) -> Result<(Tensor, Target)> {
    let (b, c, h, w) = (batch.samples.len(), batch.channels, batch.height, batch.width);
    let images = Tensor::from_slice(&batch.images, (b, c, h, w), &Device::Cpu)?;
    Ok((
        images,
        target(&batch.labels, (b, h, w), ignore_index, num_classes)?,
    ))
}

/// Labels as the loss's target: the data yaml's ignore index mapped to `num_classes`, as
/// the experiment's datasets write it.
pub fn target(
    labels: &[i64],
    dims: (usize, usize, usize),
    ignore_index: i64,
    num_classes: usize,
) -> Result<Target> {
    let labels: Vec<i64> = labels
        .iter()
        .map(|&l| if l == ignore_index { num_classes as i64 } else { l })
        .collect();
    let labels = Tensor::from_vec(labels, dims, &Device::Cpu)?;
    Target::new(&labels, num_classes, DType::F32, &Device::Cpu)
}

fn progress_bar(total: u64, done: u64) -> ProgressBar {
    ProgressBar::new(total).with_position(done).with_style(
        ProgressStyle::with_template(
            "train [{bar:30}] {pos}/{len} steps {msg}, {elapsed} elapsed, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    )
}

/// `main.py` (training, then the evaluations it runs).
pub fn train(request: &Request, options: &TrainOptions) -> Result<Trained> {
    ensure!(
        request.device == "cpu",
        "training runs on the CPU only (its backward kernels have no CUDA versions yet): drop --device {}",
        request.device
    );
    let configs = Configs::load(&request.yamls)?;
    ensure!(
        configs.model.is_some(),
        "training needs --model_yaml (the experiment's architecture, e.g. deeplabv3plus_resnet50d); pass --test-only to evaluate a checkpoint instead"
    );
    let out = &request.output_dir;
    if out.exists() && !out.is_dir() {
        bail!("--output_dir {} is a file, not a directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create --output_dir {}", out.display()))?;
    let data = &configs.data.value;
    let data_dir = std::fs::canonicalize(&request.data_dir)
        .with_context(|| format!("--data_dir {} does not exist", request.data_dir.display()))?;
    let set = TrainSet::open(data, &data_dir)?;
    let schedule = &configs.schedule.value;
    let loader_config = LoaderConfig {
        batch_size: schedule.batch_size,
        workers: schedule.num_workers,
        prefetch: 2,
        seed: options.seed,
    };
    let loader = Loader::new(Arc::new(set), loader_config).context("the training split")?;
    let per_epoch = loader.batches_per_epoch() as u64;
    let (train_iters, train_epochs) = length(schedule, per_epoch)?;
    let (mut trainer, first_epoch) = start(&configs, request, options, train_iters)?;
    let mut iter = 1 + per_epoch * (first_epoch - 1);
    let mut log = TrainLog::open(out, iter)?;
    let bar = progress_bar(train_iters, (iter - 1).min(train_iters));
    let test = &configs.test.value.iter;
    let mut trained = Trained {
        steps: 0,
        last_epoch: first_epoch - 1,
        reports: Vec::new(),
    };
    for epoch in first_epoch..=train_epochs {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let started = Instant::now();
            let (images, target) = tensors(&batch, data.ignore_index, data.num_classes)?;
            let step = trainer.step(iter, &images, &target)?;
            log.push(Row {
                iter,
                epoch,
                lr: step.lr,
                loss: step.loss,
                seconds: started.elapsed().as_secs_f64(),
            });
            bar.set_message(format!("loss {:.4} lr {:.2e}", step.loss, step.lr));
            bar.inc(1);
            trained.steps += 1;
            iter += 1;
            // train.py's check after the step: the last epoch ends early.
            if iter > train_iters {
                break;
            }
        }
        trained.last_epoch = epoch;
        let due_test =
            epoch == train_epochs || test.test_epochs.is_some_and(|t| t > 0 && epoch % t as u64 == 0);
        let due_save = epoch % schedule.save_epochs.max(1) as u64 == 0;
        if !(due_save || due_test) {
            continue;
        }
        // Evaluated weights are always on disk, so a result names a file that exists.
        let saved = trainer.save(out, epoch)?;
        log.write()?;
        if test.remove_old.unwrap_or(false) && epoch > 1 {
            checkpoint::remove(out, epoch - 1)?;
        }
        if due_test {
            bar.suspend(|| eprintln!("epoch {epoch}: evaluating {}", saved.display()));
            let evaluation = Request {
                model_checkpoint: Some(saved),
                force: true,
                ..request.clone()
            };
            trained.reports.push(bar.suspend(|| test_only(&evaluation))?);
        }
    }
    bar.finish_and_clear();
    log.write()?;
    if !log.rows().is_empty() {
        log.plot(&out.join("train_loss.png"))?;
    }
    Ok(trained)
}
