//! `rankseg demo`: the embedded default, the papers' workflow in miniature. It writes a
//! seeded synthetic dataset (VOC layout), trains a small model of the experiment's on it
//! (`exp` without `--test-only`), evaluates it with argmax and with rankseg_rma, and writes
//! the table with its bootstrap intervals. `--probs` runs the older benchmark on synthetic
//! probability maps instead.

mod probs;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Score argmax, threshold and RMA on synthetic probability maps (no training).
    #[arg(long)]
    probs: bool,
    /// Synthetic images (with --probs; default 48), or training images (default 96).
    #[arg(long)]
    images: Option<usize>,
    /// Image side in pixels (default 128 with --probs, else 64).
    #[arg(long)]
    size: Option<usize>,
    /// Classes of the probability maps (--probs only).
    #[arg(long, default_value_t = 21)]
    classes: usize,
    /// Training: epochs over the synthetic training images.
    #[arg(long, default_value_t = 16)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the tables (and the training run, with --probs off) go.
    #[arg(long, default_value = "results/demo")]
    out: PathBuf,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.probs {
        return probs::run(probs::ProbsSpec {
            images: args.images.unwrap_or(48),
            size: args.size.unwrap_or(128),
            classes: args.classes,
            seed: args.seed,
            out: args.out,
        });
    }
    train::run(train::TrainDemo {
        images: args.images.unwrap_or(96),
        size: args.size.unwrap_or(64),
        epochs: args.epochs,
        seed: args.seed,
        out: args.out,
    })
}
