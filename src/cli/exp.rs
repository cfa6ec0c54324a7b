//! `rankseg exp`: the experiment's `main.py`, with its flags. `--test-only` evaluates a
//! model on a dataset's evaluation split with one predictor and writes the result files
//! (the work is `experiment::test_only`); training is not implemented yet.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::experiment::{self, Report, Request, YamlNames};
use crate::runner::results;

#[derive(Args)]
pub struct ExpArgs {
    /// A Hugging Face layout directory (config.json + safetensors; enough on its own, the
    /// architecture comes from its config.json), or a checkpoint of the experiment's own
    /// models (its main.py's checkpointNNN.pth, a state dict .pth or .safetensors) beside
    /// --model_yaml. Default: the latest checkpoint*.pth / .safetensors in --output_dir.
    #[arg(long = "model_checkpoint", alias = "model-checkpoint")]
    model_checkpoint: Option<PathBuf>,
    /// The folder holding the datasets, laid out as DATA.md says.
    #[arg(long = "data_dir", alias = "data-dir")]
    data_dir: PathBuf,
    /// Where the result files go.
    #[arg(long = "output_dir", alias = "output-dir", default_value = "outputs")]
    output_dir: PathBuf,
    /// A name under configs/models/ or a yaml path (optional with --model_checkpoint).
    #[arg(long = "model_yaml", alias = "model-yaml")]
    model_yaml: Option<String>,
    #[arg(long = "data_yaml", alias = "data-yaml", default_value = "cityscapes")]
    data_yaml: String,
    #[arg(
        long = "loss_yaml",
        alias = "loss-yaml",
        default_value = "jaccard_ic_present_all"
    )]
    loss_yaml: String,
    #[arg(long = "schedule_yaml", alias = "schedule-yaml", default_value = "40k_iters")]
    schedule_yaml: String,
    #[arg(long = "optim_yaml", alias = "optim-yaml", default_value = "adamw_lr6e-5")]
    optim_yaml: String,
    #[arg(long = "test_yaml", alias = "test-yaml", default_value = "test_iou")]
    test_yaml: String,
    #[arg(long = "predict_yaml", alias = "predict-yaml", default_value = "argmax")]
    predict_yaml: String,
    /// Evaluate only (training is not implemented yet).
    #[arg(long = "test-only", alias = "test_only")]
    test_only: bool,
    /// Rerun even when the output directory already holds this predictor's results.
    #[arg(long)]
    force: bool,
    /// cpu, or cuda / cuda:N (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ExpArgs {
    fn request(self) -> Request {
        Request {
            yamls: YamlNames {
                model: self.model_yaml,
                data: self.data_yaml,
                loss: self.loss_yaml,
                schedule: self.schedule_yaml,
                optim: self.optim_yaml,
                test: self.test_yaml,
                predict: self.predict_yaml,
            },
            model_checkpoint: self.model_checkpoint,
            data_dir: self.data_dir,
            output_dir: self.output_dir,
            force: self.force,
            device: self.device,
        }
    }
}

pub fn run(args: ExpArgs) -> Result<()> {
    if !args.test_only {
        bail!("training is not implemented yet: pass --test-only to evaluate a checkpoint");
    }
    let request = args.request();
    match experiment::test_only(&request)? {
        Report::AlreadyDone { predict } => eprintln!(
            "{} already holds the finished {predict} run from the same inputs: nothing to do (--force reruns it)",
            request.output_dir.display()
        ),
        Report::Evaluated { predict, outcome } => {
            for (key, value) in &outcome.metrics {
                println!("{key}: {value:.2}");
            }
            eprintln!(
                "{} images: forward {:.2} s, predict {:.2} s, metrics {:.2} s; results in {}",
                outcome.images,
                outcome.seconds.forward,
                outcome.seconds.predict,
                outcome.seconds.metric,
                results::metrics_path(&request.output_dir, &predict).display()
            );
        }
    }
    Ok(())
}
