//! `rankseg logits`: a model's raw logits for an already-normalised batch, as
//! transformers' `.logits` (float32 .npy).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;

use crate::atomic::write_string_atomic;
use crate::models::{device, resolve, Model};
use crate::tensor_io::{read_probs, write_npy, ProbArray};

#[derive(Args)]
pub struct LogitsArgs {
    /// A checkpoint directory (config.json + model.safetensors), a model yaml, or a name
    /// under configs/models/.
    #[arg(long)]
    model: String,
    /// float32 (B, 3, H, W), normalised as the model expects.
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
    let checkpoint = resolve(&args.model)?;
    let device = device(&args.device)?;
    let model = Model::load(&checkpoint, &device)?;
    let (data, shape) = match read_probs(&args.input)? {
        ProbArray::F32(data, shape) => (data, shape),
        ProbArray::F64(..) => bail!("{}: the input must be float32", args.input.display()),
    };
    if shape.len() != 4 || shape[1] != 3 {
        bail!(
            "{}: the input must have shape (B, 3, H, W), got {shape:?}",
            args.input.display()
        );
    }
    let pixels = Tensor::from_vec(data, shape.as_slice(), &device)?;
    let mut seconds = Vec::with_capacity(args.repeats.max(1));
    let mut logits = None;
    for _ in 0..args.repeats.max(1) {
        let start = Instant::now();
        logits = Some(
            model
                .forward(&pixels)
                .with_context(|| format!("forward pass of {}", checkpoint.source))?,
        );
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
