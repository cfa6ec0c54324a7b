//! Segmentation models in candle, numerically equal to Hugging Face transformers:
//! probabilities come out of here and go to the predictors. One file per model.

mod convnext;
mod fused;
pub mod loading;
mod ops;
mod segformer;
mod upernet;

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

pub use loading::{Checkpoint, ModelYaml};
pub use segformer::{Segformer, SegformerConfig};
pub use upernet::{UperNet, UperNetConfig};

/// transformers' default labels when a config.json has no id2label (two classes).
fn default_id2label() -> std::collections::BTreeMap<String, String> {
    (0..2).map(|i| (i.to_string(), format!("LABEL_{i}"))).collect()
}

/// A loaded model, by the `model_type` of its config.json.
pub enum Model {
    Segformer(Box<Segformer>),
    UperNet(Box<UperNet>),
}

impl Model {
    pub fn load(checkpoint: &Checkpoint, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(&checkpoint.config)
            .with_context(|| format!("cannot read {}", checkpoint.config.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", checkpoint.config.display()))?;
        let model_type = json["model_type"].as_str().unwrap_or_default().to_string();
        if let Some(method) = &checkpoint.method {
            if method != &model_type {
                bail!(
                    "{}: the model yaml says {method:?} but config.json is a {model_type:?} model",
                    checkpoint.source
                );
            }
        }
        let config_error = || {
            format!(
                "{}: config.json does not describe a {model_type} model",
                checkpoint.source
            )
        };
        let vb = checkpoint.var_builder(device)?;
        let weights_error = || format!("cannot load the {model_type} weights of {}", checkpoint.source);
        Ok(match model_type.as_str() {
            "segformer" => {
                let cfg: SegformerConfig = serde_json::from_value(json).with_context(config_error)?;
                cfg.check().with_context(config_error)?;
                Model::Segformer(Box::new(Segformer::load(vb, &cfg).with_context(weights_error)?))
            }
            "upernet" => {
                let cfg: UperNetConfig = serde_json::from_value(json).with_context(config_error)?;
                cfg.check().with_context(config_error)?;
                Model::UperNet(Box::new(UperNet::load(vb, &cfg).with_context(weights_error)?))
            }
            other => bail!(
                "{}: model_type {other:?} is not supported (segformer and upernet are)",
                checkpoint.config.display()
            ),
        })
    }

    /// Logits for a normalised (B, 3, H, W) batch, exactly as transformers' `.logits`
    /// (SegFormer: 1/4 resolution; UperNet: input resolution).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Model::Segformer(m) => m.forward(pixel_values)?,
            Model::UperNet(m) => m.forward(pixel_values)?,
        })
    }
}

/// What `--model` names: a checkpoint directory, a model yaml path, or the name of a yaml
/// under `configs/models/` (the ones shipped with the binary, or ./configs/models/).
pub fn resolve(spec: &str) -> Result<Checkpoint> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Checkpoint::from_dir(path);
    }
    if path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Checkpoint::from_yaml(path, &text);
    }
    let local = Path::new("configs/models").join(format!("{spec}.yaml"));
    if local.is_file() {
        let text = std::fs::read_to_string(&local)?;
        return Checkpoint::from_yaml(&local, &text);
    }
    if let Some(text) = crate::configs::model_yaml(spec) {
        return Checkpoint::from_yaml(&Path::new("configs/models").join(format!("{spec}.yaml")), text);
    }
    bail!(
        "{spec} is neither a checkpoint directory, a model yaml, nor a name under configs/models/ (known: {})",
        crate::configs::model_names().join(", ")
    )
}
