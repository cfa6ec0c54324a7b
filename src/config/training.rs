//! `configs/{losses,schedules,optims}/NAME.yaml`: the training side of the experiment.
//! Evaluation reads only the schedule's `batch_size`; the rest is checked (so a misspelled
//! key fails early) and recorded in run.json for when training arrives.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct LossConfig {
    pub main_weight: f64,
    pub aux_weight: f64,
    pub ce_weight: Option<f64>,
    pub jdt_weight: Option<f64>,
    pub mIoUD: Option<f64>,
    pub mIoUI: Option<f64>,
    pub mIoUC: Option<f64>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub gamma: Option<f64>,
    pub smooth: Option<f64>,
    pub threshold: Option<f64>,
    pub log_loss: Option<bool>,
    pub class_weights: Option<Vec<f64>>,
    pub active_classes_mode_hard: Option<String>,
    pub active_classes_mode_soft: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub train_iters: i64,
    pub train_epochs: i64,
    pub log_iters: usize,
    pub save_epochs: usize,
    pub warmup_ratio: f64,
    pub num_workers: usize,
    /// Images per batch, in training and (but for ADE20K, as the experiment) in testing.
    pub batch_size: usize,
    pub by_epoch: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub optimizer: String,
    pub lr: f64,
    pub start_lr: f64,
    pub multiplier: f64,
    pub power: f64,
    pub weight_decay: f64,
    pub momentum: Option<f64>,
}
