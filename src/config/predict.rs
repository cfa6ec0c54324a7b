//! `configs/predict/NAME.yaml`: the predictor, as the experiment's `METHOD` and `PARAMS`.
//!
//! `argmax`, `threshold`, the experiment's own `rankseg_rma` and `rankseg_ba` (what made
//! the published tables), and `rankseg`: rankseg 0.0.8's `RankSEG` with its arguments.
//! Every method also takes `temperature`, which divides the logits before the softmax (on a
//! `probs` dataset: `softmax(log p / temperature)`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::predict::experiment::{ExperimentRma, NonOverlap};
use crate::predict::{Metric, OutputMode, PredictOptions, Solver, UnassignedPolicy};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredict {
    #[serde(rename = "METHOD")]
    method: String,
    #[serde(rename = "PARAMS", default)]
    params: serde_yaml::Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemperatureOnly {
    temperature: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RmaParams {
    #[serde(default = "dice")]
    opt_metric: String,
    #[serde(default)]
    allow_overlap: bool,
    #[serde(default = "rma_score")]
    to_nonverlap_method: String,
    temperature: Option<f64>,
}

fn dice() -> String {
    "dice".into()
}

fn rma_score() -> String {
    "rma_score".into()
}

/// The experiment's `rankseg_ba` arguments; only its defaults are supported.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaParams {
    #[serde(default)]
    allow_overlap: bool,
    #[serde(default)]
    smooth: f64,
    temperature: Option<f64>,
}

/// `RankSEG(...)`'s arguments with its defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageParams {
    #[serde(default = "dice")]
    metric: String,
    #[serde(default)]
    smooth: f64,
    #[serde(default = "multiclass")]
    output_mode: String,
    #[serde(default = "rma")]
    solver: String,
    #[serde(default = "half")]
    pruning_prob: f64,
    eps: Option<f64>,
    #[serde(default = "max_score")]
    unassigned_policy: String,
    #[serde(default = "void")]
    void_index: i64,
    temperature: Option<f64>,
}

fn multiclass() -> String {
    "multiclass".into()
}
fn rma() -> String {
    "rma".into()
}
fn half() -> f64 {
    0.5
}
fn max_score() -> String {
    "max_score".into()
}
fn void() -> i64 {
    crate::predict::DEFAULT_VOID_INDEX
}

/// What a predict yaml asks for.
#[derive(Clone, Debug)]
pub enum PredictMethod {
    Argmax,
    Threshold,
    /// The experiment's `rankseg_rma`.
    ExperimentRma(ExperimentRma),
    /// The experiment's `rankseg_ba` (two channels, no overlap).
    ExperimentBa {
        smooth: f64,
    },
    /// rankseg 0.0.8's `RankSEG`.
    Package(PredictOptions),
}

#[derive(Clone, Debug)]
pub struct PredictConfig {
    pub method: PredictMethod,
    pub temperature: f64,
    /// The yaml as parsed, for run.json.
    pub resolved: serde_json::Value,
}

fn params<T: for<'de> Deserialize<'de>>(value: &serde_yaml::Value) -> Result<T> {
    let value = match value {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        other => other.clone(),
    };
    serde_yaml::from_value(value).context("PARAMS")
}

fn temperature(value: Option<f64>) -> Result<f64> {
    match value {
        None => Ok(1.0),
        Some(t) if t.is_finite() && t > 0.0 => Ok(t),
        Some(t) => bail!("PARAMS: temperature must be a positive number, got {t}"),
    }
}

fn parse_enum<T: std::str::FromStr<Err = String>>(key: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|e: String| anyhow::anyhow!("PARAMS.{key}: {e}"))
}

impl PredictConfig {
    pub fn from_yaml(text: &str) -> Result<Self> {
        let raw: RawPredict = serde_yaml::from_str(text)?;
        let (method, t, resolved) = match raw.method.as_str() {
            "argmax" | "threshold" => {
                let p: TemperatureOnly = params(&raw.params)?;
                let method = if raw.method == "argmax" {
                    PredictMethod::Argmax
                } else {
                    PredictMethod::Threshold
                };
                (method, p.temperature, serde_json::to_value(&p)?)
            }
            "rankseg_rma" => {
                let p: RmaParams = params(&raw.params)?;
                let non_overlap = match p.to_nonverlap_method.as_str() {
                    "rma_score" => NonOverlap::RmaScore,
                    "prob" => NonOverlap::Prob,
                    "weight_prob" => NonOverlap::WeightProb,
                    other => bail!(
                        "PARAMS.to_nonverlap_method: unknown method {other:?} (expected rma_score, prob or weight_prob)"
                    ),
                };
                let rma = ExperimentRma {
                    metric: parse_enum("opt_metric", &p.opt_metric)?,
                    allow_overlap: p.allow_overlap,
                    non_overlap,
                };
                (PredictMethod::ExperimentRma(rma), p.temperature, serde_json::to_value(&p)?)
            }
            "rankseg_ba" => {
                let p: BaParams = params(&raw.params)?;
                if p.allow_overlap {
                    bail!("PARAMS.allow_overlap: the experiment's rankseg_ba runs without overlap only (two channels)");
                }
                if !(p.smooth.is_finite() && p.smooth >= 0.0) {
                    bail!("PARAMS.smooth must be finite and >= 0, got {}", p.smooth);
                }
                (PredictMethod::ExperimentBa { smooth: p.smooth }, p.temperature, serde_json::to_value(&p)?)
            }
            "rankseg" => {
                let p: PackageParams = params(&raw.params)?;
                let options = PredictOptions {
                    solver: parse_enum::<Solver>("solver", &p.solver)?,
                    metric: parse_enum::<Metric>("metric", &p.metric)?,
                    output_mode: parse_enum::<OutputMode>("output_mode", &p.output_mode)?,
                    smooth: p.smooth,
                    pruning_prob: p.pruning_prob,
                    unassigned_policy: parse_enum::<UnassignedPolicy>("unassigned_policy", &p.unassigned_policy)?,
                    void_index: p.void_index,
                    eps: p.eps,
                };
                (PredictMethod::Package(options), p.temperature, serde_json::to_value(&p)?)
            }
            other => bail!(
                "METHOD: unknown method {other:?} (expected argmax, threshold, rankseg_rma, rankseg_ba or rankseg)"
            ),
        };
        Ok(PredictConfig {
            method,
            temperature: temperature(t)?,
            resolved: serde_json::json!({ "METHOD": raw.method, "PARAMS": resolved }),
        })
    }

    /// Checks the predictor against the dataset's class count before any image is read.
    pub fn check(&self, num_classes: usize) -> Result<()> {
        match &self.method {
            PredictMethod::Package(options) => options.validate(num_classes)?,
            PredictMethod::ExperimentBa { .. } if num_classes != 2 => {
                bail!("the experiment's rankseg_ba needs two classes (the data yaml has {num_classes})")
            }
            _ => {}
        }
        Ok(())
    }
}
