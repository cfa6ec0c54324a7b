//! `configs/{losses,schedules,optims}/NAME.yaml`: the training side of the experiment.
//! Evaluation reads only the schedule's `batch_size`; the rest is checked (so a misspelled
//! key fails early) and recorded in run.json. The loss yaml drives `train::loss`.

use serde::{Deserialize, Serialize};

/// `configs/losses/NAME.yaml`. Three families, told apart by their keys (checked, with the
/// values, by `train::loss::LossSpec::from_config`):
/// - the experiment's criterion: only `main_weight`, `aux_weight` and optionally
///   `focal_gamma` (read with `.get('focal_gamma', 0)` in its `get_criterion`);
/// - JDTLosses' (`ce_weight`, `jdt_weight`, ...): all of its keys, as its `get_criterion` and
///   `Segmentor` index every one of them (`class_weights` too, which may be null);
/// - the JMLR RankSEG code's (`jmlr_loss`: the class name in its `utils/losses.py`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct LossConfig {
    pub main_weight: f64,
    pub aux_weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jmlr_loss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jdt_weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mIoUD: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mIoUI: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mIoUC: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smooth: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<bool>,
    /// Outer `None`: the key is absent; `Some(None)`: `class_weights: null` (JDTLosses needs
    /// the key even when it is null).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub class_weights: Option<Option<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_classes_mode_hard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_classes_mode_soft: Option<String>,
}

/// A key that is there, even with a null value (serde maps a missing key to the default).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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
