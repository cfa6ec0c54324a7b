use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::metrics::{summarize, ImageCounts, MetricSpec, Prediction};
use crate::models::MAX_CLASSES;
use crate::tensor_io::read_ints;

#[derive(Args)]
pub struct ScoreArgs {
    /// A class map shaped like the label, or 0/1 masks (B, N, *spatial).
    #[arg(long)]
    pred: PathBuf,
    /// Integer labels (B, *spatial).
    #[arg(long)]
    label: PathBuf,
    #[arg(long)]
    num_classes: usize,
    #[arg(long, default_value_t = 255, allow_negative_numbers = true)]
    ignore_index: i64,
    /// The worst-q percentage reported as mIoUI{q} and friends.
    #[arg(long, default_value_t = 10)]
    q: u32,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    if args.num_classes == 0 {
        bail!("--num-classes must be at least 1");
    }
    // Counts are kept per class: bound the count before allocating for it.
    if args.num_classes > MAX_CLASSES {
        bail!(
            "--num-classes is {}, more than the {MAX_CLASSES} classes supported (labels are at most 16-bit)",
            args.num_classes
        );
    }
    if !(1..=100).contains(&args.q) {
        bail!("--q must be a percentage in 1..=100, got {}", args.q);
    }
    let spec = MetricSpec {
        num_classes: args.num_classes,
        ignore_index: args.ignore_index,
    };
    let pred = read_ints(&args.pred)?;
    let label = read_ints(&args.label)?;
    if label.shape.is_empty() {
        bail!(
            "{}: labels must have shape (batch, *spatial), got a scalar",
            args.label.display()
        );
    }
    let batch = label.shape[0];
    let dim: usize = label.shape[1..].iter().product();
    let masks_shape: Vec<usize> = [batch, args.num_classes]
        .into_iter()
        .chain(label.shape[1..].iter().copied())
        .collect();
    let as_masks = if pred.shape == label.shape {
        false
    } else if pred.shape == masks_shape {
        if let Some(v) = pred.data.iter().find(|&&v| v != 0 && v != 1) {
            bail!("{}: masks must be 0/1, found {v}", args.pred.display());
        }
        true
    } else {
        bail!(
            "{}: prediction shape {:?} ({}) matches neither the label shape {:?} (class map) nor {:?} (masks)",
            args.pred.display(),
            pred.shape,
            pred.dtype,
            label.shape,
            masks_shape
        );
    };
    let masks: Vec<u8> = if as_masks {
        pred.data.iter().map(|&v| v as u8).collect()
    } else {
        Vec::new()
    };
    let mut images = Vec::with_capacity(batch);
    for b in 0..batch {
        let label_b = &label.data[b * dim..(b + 1) * dim];
        let pred_b = if as_masks {
            Prediction::Masks(&masks[b * args.num_classes * dim..(b + 1) * args.num_classes * dim])
        } else {
            Prediction::ClassMap(&pred.data[b * dim..(b + 1) * dim])
        };
        let counts = ImageCounts::of(pred_b, label_b, &spec)
            .map_err(|e| anyhow::anyhow!("{}: image {b}: {e}", args.label.display()))?;
        images.extend(counts);
    }
    let summary = summarize(&images, &spec, args.q);
    let object: serde_json::Map<String, serde_json::Value> = summary
        .values
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    println!("{}", serde_json::to_string_pretty(&object)?);
    Ok(())
}
