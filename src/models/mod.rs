//! Segmentation models in candle, numerically equal to Hugging Face transformers:
//! probabilities come out of here and go to the predictors. One file per model.

mod convnext;
mod fused;
pub mod loading;
pub(crate) mod ops;
mod segformer;
mod upernet;
mod winograd;
pub mod zoo;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

pub use loading::{Checkpoint, ModelYaml, StateDict};
pub use ops::resize_bilinear;
pub use segformer::{Segformer, SegformerConfig};
pub use upernet::{UperNet, UperNetConfig};

/// transformers' default labels when a config.json has no id2label (two classes).
fn default_id2label() -> std::collections::BTreeMap<String, String> {
    (0..2).map(|i| (i.to_string(), format!("LABEL_{i}"))).collect()
}

/// The most classes a model may have: the class maps are 16-bit PNG labels at most.
pub const MAX_CLASSES: usize = 65536;

/// A loaded model, by the `model_type` of its config.json.
pub struct Model {
    net: Architecture,
    /// Input channels (config.json `num_channels`; 3 when absent).
    pub in_channels: usize,
    /// Output classes (the size of config.json's `id2label`).
    pub num_classes: usize,
}

enum Architecture {
    Segformer(Box<Segformer>),
    UperNet(Box<UperNet>),
    Segmentor(Box<zoo::Segmentor>),
}

impl Model {
    pub fn load(checkpoint: &Checkpoint, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(&checkpoint.config)
            .with_context(|| format!("cannot read {}", checkpoint.config.display()))?;
        let mut json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", checkpoint.config.display()))?;
        // transformers takes `num_labels` when a config gives no `id2label`.
        if let (None, Some(n)) = (
            json.get("id2label"),
            json.get("num_labels").and_then(|n| n.as_u64()),
        ) {
            // A label map per class is built below: a corrupt count must not exhaust memory.
            if n > MAX_CLASSES as u64 {
                bail!(
                    "{}: num_labels is {n}, more than the {MAX_CLASSES} classes supported; fix the key or give id2label",
                    checkpoint.config.display()
                );
            }
            let labels: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
                .collect();
            json["id2label"] = labels.into();
        }
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
        let num_classes = json["id2label"].as_object().map_or(2, |labels| labels.len());
        if num_classes > MAX_CLASSES {
            bail!(
                "{}: id2label has {num_classes} classes, more than the {MAX_CLASSES} supported",
                checkpoint.config.display()
            );
        }
        let channels_of = |config: &serde_json::Value| config["num_channels"].as_u64().unwrap_or(3) as usize;
        let in_channels = match model_type.as_str() {
            "upernet" => channels_of(&json["backbone_config"]),
            _ => channels_of(&json),
        };
        let vb = checkpoint.var_builder(device)?;
        let weights_error = || format!("cannot load the {model_type} weights of {}", checkpoint.source);
        let net = match model_type.as_str() {
            "segformer" => {
                let cfg: SegformerConfig = serde_json::from_value(json).with_context(config_error)?;
                cfg.check().with_context(config_error)?;
                Architecture::Segformer(Box::new(Segformer::load(vb, &cfg).with_context(weights_error)?))
            }
            "upernet" => {
                let cfg: UperNetConfig = serde_json::from_value(json).with_context(config_error)?;
                cfg.check().with_context(config_error)?;
                Architecture::UperNet(Box::new(UperNet::load(vb, &cfg).with_context(weights_error)?))
            }
            other => bail!(
                "{}: model_type {other:?} is not supported (segformer and upernet are)",
                checkpoint.config.display()
            ),
        };
        Ok(Model {
            net,
            in_channels,
            num_classes,
        })
    }

    /// One of the experiment's own models from a state dict file (`.pth` or
    /// `.safetensors`), loaded strictly like `load_state_dict`: a missing or unexpected key
    /// or a wrong shape is an error naming the key, the checkpoint and the model yaml.
    pub fn load_segmentor(
        cfg: &zoo::SegmentorConfig,
        checkpoint: &Path,
        yaml: &str,
        device: &Device,
    ) -> Result<Self> {
        let weights = StateDict::open(checkpoint)?;
        let context = || {
            format!(
                "{} does not fit the {} {} model of {yaml} ({} input channels, {} classes)",
                checkpoint.display(),
                cfg.method_name(),
                cfg.backbone,
                cfg.in_channels,
                cfg.num_classes
            )
        };
        let net = zoo::Segmentor::load(weights.var_builder(device), cfg).with_context(context)?;
        let unexpected = weights.unexpected_keys();
        if !unexpected.is_empty() {
            let shown: Vec<&str> = unexpected.iter().take(5).map(String::as_str).collect();
            bail!(
                "{}: unexpected key{} {}{} for the {} {} model of {yaml}",
                checkpoint.display(),
                if unexpected.len() > 1 { "s" } else { "" },
                shown.join(", "),
                if unexpected.len() > 5 {
                    format!(" and {} more", unexpected.len() - 5)
                } else {
                    String::new()
                },
                cfg.method_name(),
                cfg.backbone
            );
        }
        Ok(Model {
            net: Architecture::Segmentor(Box::new(net)),
            in_channels: cfg.in_channels,
            num_classes: cfg.num_classes,
        })
    }

    /// Logits for a normalised (B, C, H, W) batch: transformers' `.logits` (SegFormer: 1/4
    /// resolution; UperNet: input resolution), or the experiment's `Segmentor.forward(x)[0]`
    /// (the data yaml's crop size).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(match &self.net {
            Architecture::Segformer(m) => m.forward(pixel_values)?,
            Architecture::UperNet(m) => m.forward(pixel_values)?,
            Architecture::Segmentor(m) => m.forward(pixel_values)?,
        })
    }
}

impl Model {
    /// The smallest side of a square input the model's layers accept, or `None` when even
    /// `MAX_PROBED_SIDE` fails. A too-small input fails at whichever convolution first runs
    /// out of pixels, deep inside the model; running the model on zeros of growing size
    /// turns that into the bound the user needs. Each layer's output length only grows with
    /// its input's, so the accepted sides form a range `[min, ..)` and a bisection finds it.
    pub fn min_input_side(&self, device: &Device) -> Option<usize> {
        let accepts = |side: usize| {
            Tensor::zeros((1, self.in_channels, side, side), candle_core::DType::F32, device)
                .is_ok_and(|zeros| self.forward(&zeros).is_ok())
        };
        let (mut rejected, mut accepted) = (0, 1);
        while !accepts(accepted) {
            if accepted >= MAX_PROBED_SIDE {
                return None;
            }
            rejected = accepted;
            accepted *= 2;
        }
        while accepted - rejected > 1 {
            let mid = rejected + (accepted - rejected) / 2;
            if accepts(mid) {
                accepted = mid;
            } else {
                rejected = mid;
            }
        }
        Some(accepted)
    }

    /// `forward`, with a too-small input reported as the size the model needs.
    pub fn forward_checked(&self, pixel_values: &Tensor, what: &str) -> Result<Tensor> {
        let error = match self.forward(pixel_values) {
            Ok(logits) => return Ok(logits),
            Err(error) => error,
        };
        let (h, w) = pixel_values.dims4().map_or((0, 0), |(_, _, h, w)| (h, w));
        if let Some(min) = self.min_input_side(pixel_values.device()) {
            if h < min || w < min {
                bail!(
                    "{what}: the input is {h}x{w} pixels but this model needs at least {min}x{min} (its strided layers run out of pixels below that); resize or pad the input"
                );
            }
        }
        Err(error.context(format!(
            "forward pass of {what} on a {:?} input",
            pixel_values.dims()
        )))
    }
}

/// The largest side `Model::min_input_side` tries (models of the papers need at most 64).
const MAX_PROBED_SIDE: usize = 4096;

/// Where a model comes from: a Hugging Face checkpoint (architecture from its config.json)
/// or one of the experiment's state dicts (architecture from its model and data yamls).
pub enum ModelSource {
    HuggingFace(Checkpoint),
    Experiment {
        config: zoo::SegmentorConfig,
        weights: PathBuf,
        /// The model and data yamls it was built from, for messages.
        origin: String,
    },
}

impl ModelSource {
    pub fn load(&self, device: &Device) -> Result<Model> {
        match self {
            ModelSource::HuggingFace(checkpoint) => Model::load(checkpoint, device),
            ModelSource::Experiment {
                config,
                weights,
                origin,
            } => Model::load_segmentor(config, weights, origin, device),
        }
    }

    /// The files holding the weights (what the run's sha256 covers).
    pub fn weight_files(&self) -> Vec<PathBuf> {
        match self {
            ModelSource::HuggingFace(checkpoint) => checkpoint.weights.clone(),
            ModelSource::Experiment { weights, .. } => vec![weights.clone()],
        }
    }

    /// What the user named, for messages.
    pub fn source(&self) -> String {
        match self {
            ModelSource::HuggingFace(checkpoint) => checkpoint.source.clone(),
            ModelSource::Experiment { weights, .. } => weights.display().to_string(),
        }
    }

    /// The architecture's description file: config.json, or the model yaml.
    pub fn config_file(&self) -> String {
        match self {
            ModelSource::HuggingFace(checkpoint) => checkpoint.config.display().to_string(),
            ModelSource::Experiment { origin, .. } => origin.clone(),
        }
    }
}

/// The newest `checkpoint{epoch}.pth` or `.safetensors` in `dir`, as the experiment's
/// `main.py` picks the one to resume from (by the epoch number; ours over a `.pth` of the
/// same epoch).
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let (stem, rank) = if let Some(stem) = name.strip_suffix(".safetensors") {
                (stem, 1)
            } else {
                (name.strip_suffix(".pth")?, 0)
            };
            let epoch: u64 = stem.strip_prefix("checkpoint")?.parse().ok()?;
            Some(((epoch, rank), path))
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, path)| path)
}

/// What `--model` names: a checkpoint directory, a model yaml, or the name of a yaml
/// under `configs/models/` (./configs/models/ first, then the ones shipped with the binary).
pub fn resolve(spec: &str) -> Result<Checkpoint> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Checkpoint::from_dir(path);
    }
    let source = crate::config::find(crate::config::Kind::Models, spec)?;
    let yaml: ModelYaml = source.parse()?;
    yaml.checkpoint(&source)?.with_context(|| {
        format!(
            "{}: this model yaml names no weights (neither `path` nor `hub_repo`): give a checkpoint directory",
            source.origin
        )
    })
}

/// The device `--device` names: cpu, or cuda / cuda:N in a build with the `cuda` feature.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .context("--device cuda:N needs a number")?;
            if cfg!(feature = "cuda") {
                Device::new_cuda(ordinal).map_err(|e| {
                    anyhow::anyhow!(
                        "--device {cuda}: cannot open CUDA device {ordinal} ({e}); check that the machine has an NVIDIA GPU and its driver (nvidia-smi)"
                    )
                })
            } else {
                bail!("--device {cuda}: this binary was built without the `cuda` feature (cargo build --release --features cuda)")
            }
        }
        other => bail!("unknown --device {other:?} (expected cpu, cuda or cuda:N)"),
    }
}
