//! `rankseg logits`: a model's raw logits for an already-normalised batch (float32 .npy):
//! transformers' `.logits` for a Hugging Face model (`--model`), or the experiment's
//! `Segmentor.forward(x)[0]` for one of its own checkpoints (`--model_yaml`, `--data_yaml`,
//! `--model_checkpoint`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use clap::Args;

use crate::atomic::write_string_atomic;
use crate::models::{device, resolve, zoo, Model};
use crate::tensor_io::{read_probs, write_npy, ProbArray};

#[derive(Args)]
pub struct LogitsArgs {
    /// A Hugging Face checkpoint directory (config.json + model.safetensors), a model yaml
    /// naming one, or a name under configs/models/.
    #[arg(long, conflicts_with_all = ["model_checkpoint", "data_yaml"], required_unless_present = "model_yaml")]
    model: Option<String>,
    /// The experiment's model yaml (a name under configs/models/ or a path).
    #[arg(long = "model_yaml", alias = "model-yaml", requires_all = ["data_yaml", "model_checkpoint"], conflicts_with = "model")]
    model_yaml: Option<String>,
    /// The experiment's data yaml: in_channels, num_classes, crop_size (name or path).
    #[arg(long = "data_yaml", alias = "data-yaml")]
    data_yaml: Option<String>,
    /// The experiment's checkpoint: its main.py's .pth, a bare state dict .pth, or .safetensors.
    #[arg(long = "model_checkpoint", alias = "model-checkpoint")]
    model_checkpoint: Option<PathBuf>,
    /// float32 (B, C, H, W), normalised as the model expects.
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Run the forward this many times (timing; the logits of the last run are written).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Write the forward times as JSON {"seconds": [...]}.
    #[arg(long)]
    timing_json: Option<PathBuf>,
    /// cpu, or cuda / cuda:N (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let device = device(&args.device)?;
    let (model, source) = match (
        &args.model,
        &args.model_yaml,
        &args.data_yaml,
        &args.model_checkpoint,
    ) {
        (Some(spec), ..) => {
            let checkpoint = resolve(spec)?;
            (Model::load(&checkpoint, &device)?, checkpoint.source)
        }
        (None, Some(model_yaml), Some(data_yaml), Some(weights)) => {
            let (cfg, origin) = zoo::SegmentorConfig::from_yamls(model_yaml, data_yaml)?;
            let model = Model::load_segmentor(&cfg, weights, &origin, &device)?;
            (model, weights.display().to_string())
        }
        _ => bail!("give --model, or --model_yaml with --data_yaml and --model_checkpoint"),
    };
    let (data, shape) = match read_probs(&args.input)? {
        ProbArray::F32(data, shape) => (data, shape),
        ProbArray::F64(..) => bail!("{}: the input must be float32", args.input.display()),
    };
    if shape.len() != 4 || shape[1] != model.in_channels {
        bail!(
            "{}: the input must have shape (B, {}, H, W) for this model, got {shape:?}",
            args.input.display(),
            model.in_channels
        );
    }
    let pixels = Tensor::from_vec(data, shape.as_slice(), &device)?;
    let mut seconds = Vec::with_capacity(args.repeats.max(1));
    let mut logits = None;
    for _ in 0..args.repeats.max(1) {
        let start = Instant::now();
        logits = Some(model.forward_checked(&pixels, &format!("{} ({source})", args.input.display()))?);
        seconds.push(start.elapsed().as_secs_f64());
    }
    let logits = logits.expect("at least one forward");
    let out_shape = logits.dims().to_vec();
    let values = logits.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    write_npy(&args.out, &out_shape, &values)?;
    if let Some(path) = &args.timing_json {
        write_string_atomic(path, &serde_json::json!({ "seconds": seconds }).to_string())?;
    }
    eprintln!(
        "logits {out_shape:?} written to {} ({:.3} s per forward)",
        args.out.display(),
        seconds.iter().sum::<f64>() / seconds.len() as f64
    );
    Ok(())
}
