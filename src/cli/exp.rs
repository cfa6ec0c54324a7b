//! `rankseg exp`: the experiment's `main.py`, with its flags. Without `--test-only` it trains
//! (`experiment::train::train`) and evaluates at the test epochs; with it, it evaluates a
//! model on a dataset's evaluation split with one predictor (`experiment::test_only`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::experiment::train::{self, TrainOptions};
use crate::experiment::{self, Report, Request, YamlNames};
use crate::runner::results;

#[derive(Args, Clone)]
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
    /// Evaluate only; without it, train first (resuming from --model_checkpoint or the
    /// latest checkpoint in --output_dir).
    #[arg(long = "test-only", alias = "test_only")]
    test_only: bool,
    /// Training: seeds the shuffles, augmentations, dropout masks and a fresh model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training without a checkpoint: the backbone's pretrained timm safetensors (default:
    /// `timm/<backbone>.*` in the Hugging Face cache, else a random initialisation).
    #[arg(long = "backbone_weights", alias = "backbone-weights")]
    backbone_weights: Option<PathBuf>,
    /// Rerun even when the output directory already holds this predictor's results.
    #[arg(long)]
    force: bool,
    /// cpu, or cuda / cuda:N (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl ExpArgs {
    fn request(&self) -> Request {
        let s = self.clone();
        Request {
            yamls: YamlNames {
                model: s.model_yaml,
                data: s.data_yaml,
                loss: s.loss_yaml,
                schedule: s.schedule_yaml,
                optim: s.optim_yaml,
                test: s.test_yaml,
                predict: s.predict_yaml,
            },
            model_checkpoint: s.model_checkpoint,
            data_dir: s.data_dir,
            output_dir: s.output_dir,
            force: s.force,
            device: s.device,
        }
    }
}

pub fn run(args: ExpArgs) -> Result<()> {
    let request = args.request();
    if !args.test_only {
        let options = TrainOptions {
            seed: args.seed,
            backbone_weights: args.backbone_weights,
        };
        let trained = train::train(&request, &options)?;
        eprintln!(
            "{} steps, trained to epoch {}; train_log.csv and checkpoints in {}",
            trained.steps,
            trained.last_epoch,
            request.output_dir.display()
        );
        for report in trained.reports {
            print_report(&request, report);
        }
        return Ok(());
    }
    print_report(&request, experiment::test_only(&request)?);
    Ok(())
}

fn print_report(request: &Request, report: Report) {
    match report {
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
}
