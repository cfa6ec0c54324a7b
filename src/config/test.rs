//! `configs/test/NAME.yaml`: how the test loop infers and what it measures.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    #[serde(rename = "ITER")]
    pub iter: IterConfig,
    #[serde(rename = "INF")]
    pub inf: InfConfig,
    #[serde(rename = "METRIC")]
    pub metric: MetricConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterConfig {
    // Training-loop keys, kept for the experiment's layout.
    #[serde(default)]
    pub test_epochs: Option<i64>,
    #[serde(default)]
    pub remove_old: Option<bool>,
    /// Log a line with the batch's times every this many batches (batch 0 first), as the
    /// experiment's test loop does.
    pub log_iters: usize,
    /// Write coloured prediction PNGs next to the results.
    #[serde(default)]
    pub save_pred: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfConfig {
    /// Scales at which the image is predicted; the probabilities are averaged.
    pub ratios: Vec<f64>,
    /// Average with the mirrored image (as the experiment: only with several ratios).
    pub flip: bool,
    /// Sliding-window stride as a fraction of the crop.
    pub stride_rate: f64,
}

/// The experiment's METRIC keys: metric groups D (over the dataset), I (per image) and C
/// (per class), and the calibration errors.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    #[serde(rename = "accuracyD")]
    pub accuracy_dataset: bool,
    #[serde(rename = "accuracyI")]
    pub accuracy_image: bool,
    #[serde(rename = "accuracyC")]
    pub accuracy_class: bool,
    #[serde(rename = "ECED")]
    pub ece_dataset: bool,
    #[serde(rename = "ECEI")]
    pub ece_image: bool,
    #[serde(rename = "SCED")]
    pub sce_dataset: bool,
    #[serde(rename = "SCEI")]
    pub sce_image: bool,
    pub num_bins: usize,
    pub q: u32,
    /// The experiment never reads it and always reports the Q means (worst 10%..100%), so
    /// only `True` (or no key) is accepted: `False` would promise what no run does.
    #[serde(default)]
    pub q_bar: Option<bool>,
}

impl TestConfig {
    pub fn check(&self) -> Result<(), String> {
        let inf = &self.inf;
        if inf.ratios.is_empty() || inf.ratios.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(format!(
                "INF.ratios must be positive numbers, got {:?}",
                inf.ratios
            ));
        }
        if !(inf.stride_rate > 0.0 && inf.stride_rate <= 1.0) {
            return Err(format!(
                "INF.stride_rate must be in (0, 1], got {}",
                inf.stride_rate
            ));
        }
        if !(1..=100).contains(&self.metric.q) {
            return Err(format!(
                "METRIC.q must be a percentage in 1..=100, got {}",
                self.metric.q
            ));
        }
        if self.iter.log_iters == 0 {
            return Err("ITER.log_iters must be at least 1 (a line every log_iters batches)".into());
        }
        if self.metric.q_bar == Some(false) {
            return Err(
                "METRIC.q_bar: False is not supported: the experiment reports the Q means \
                 (mIoUIQ, mIoUCQ, ...) whatever q_bar says; set it True or remove the key"
                    .into(),
            );
        }
        if self.metric.num_bins == 0 {
            return Err("METRIC.num_bins must be at least 1".into());
        }
        Ok(())
    }
}
