//! Which model a run evaluates, and whether it fits the data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::configs::Configs;
use crate::models::{self, zoo, Checkpoint, Model, ModelSource};

/// The model: `--model_checkpoint` (a Hugging Face directory, or a state dict file of the
/// experiment's model that `--model_yaml` describes), else the latest checkpoint in the
/// output directory (as `main.py`), else the weights the model yaml names.
pub fn source(checkpoint: Option<&Path>, output_dir: &Path, configs: &Configs) -> Result<ModelSource> {
    let experiment = |weights: PathBuf| -> Result<ModelSource> {
        let (config, origin) = segmentor_config(configs)?;
        Ok(ModelSource::Experiment {
            config,
            weights,
            origin,
        })
    };
    match (checkpoint, &configs.model) {
        (Some(dir), yaml) if dir.is_dir() => {
            let mut checkpoint = Checkpoint::from_dir(dir).context("--model_checkpoint")?;
            checkpoint.method = yaml.as_ref().map(|y| y.value.method.clone());
            Ok(ModelSource::HuggingFace(checkpoint))
        }
        (Some(file), _) if !file.exists() => {
            bail!("--model_checkpoint {} does not exist", file.display())
        }
        (Some(file), Some(_)) => experiment(file.to_path_buf()),
        (Some(file), None) => bail!(
            "--model_checkpoint {}: a state dict file needs --model_yaml (the experiment's architecture), or give a Hugging Face layout directory",
            file.display()
        ),
        (None, Some(yaml)) => {
            if let Some(latest) = models::latest_checkpoint(output_dir) {
                eprintln!("using the latest checkpoint in --output_dir: {}", latest.display());
                return experiment(latest);
            }
            let checkpoint = yaml.value.checkpoint(&yaml.source)?.with_context(|| {
                format!(
                    "{} names no weights and {} holds no checkpoint*.pth / .safetensors: pass --model_checkpoint",
                    yaml.source.origin,
                    output_dir.display()
                )
            })?;
            Ok(ModelSource::HuggingFace(checkpoint))
        }
        (None, None) => bail!(
            "no model: pass --model_checkpoint DIR (config.json + model.safetensors) or --model_yaml"
        ),
    }
}

/// The experiment's architecture from the model and data yamls, and where they came from.
pub fn segmentor_config(configs: &Configs) -> Result<(zoo::SegmentorConfig, String)> {
    let model = configs
        .model
        .as_ref()
        .context("the experiment's models need --model_yaml")?;
    let data = &configs.data;
    let origin = format!("{} with {}", model.source.origin, data.source.origin);
    let [h, w] = data.value.crop();
    let config = zoo::SegmentorConfig::new(
        &model.value,
        configs.in_channels(),
        data.value.num_classes,
        (h, w),
    )
    .with_context(|| origin.clone())?;
    Ok((config, origin))
}

/// A model whose classes or input channels differ from the data yaml's is an error before
/// any image is read.
pub fn check_fits(model: &Model, source: &ModelSource, configs: &Configs) -> Result<()> {
    let data = &configs.data.value;
    if model.num_classes != data.num_classes {
        bail!(
            "{} predicts {} classes but the data yaml has num_classes {}",
            source.source(),
            model.num_classes,
            data.num_classes
        );
    }
    let channels = configs.in_channels();
    if model.in_channels != channels {
        bail!(
            "{} takes {} input channels but the data yaml gives {channels} (in_channels)",
            source.source(),
            model.in_channels
        );
    }
    Ok(())
}

/// What `table` calls the model.
pub fn label(source: Option<&ModelSource>, configs: &Configs) -> String {
    match (&configs.model, source) {
        (Some(yaml), _) => yaml.source.name.clone(),
        (None, Some(source)) => Path::new(&source.source())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| source.source()),
        (None, None) => "probabilities".into(),
    }
}
