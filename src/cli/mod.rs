//! The `rankseg` command line: one file per subcommand.

mod ablate;
mod bench;
mod demo;
mod exp;
mod logits;
mod predict;
mod prepare;
mod score;
mod table;
mod train_bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rankseg",
    version,
    about = "Metric-optimal segmentation predictions (RankSEG) and the papers' tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a probability map (.npy) into a prediction (.npy).
    Predict(predict::PredictArgs),
    /// Score a prediction against a label map and print the reference metrics as JSON.
    Score(score::ScoreArgs),
    /// Time the predictors on seeded synthetic maps and write the figures.
    Bench(bench::BenchArgs),
    /// The embedded default: a seeded synthetic benchmark comparing argmax, threshold and RMA.
    Demo(demo::DemoArgs),
    /// Solver ablation: every solver's expected Dice/IoU gap to the optimum, and its time.
    Ablate(ablate::AblateArgs),
    /// The experiment's main.py: evaluate a model on a dataset with a predictor (--test-only).
    Exp(exp::ExpArgs),
    /// The papers' table (rows model x prediction, columns dataset) from finished exp runs.
    Table(table::TableArgs),
    /// Turn the LiTS or KiTS NIfTI volumes into the CT slices `exp` reads.
    Prepare(prepare::PrepareArgs),
    /// A segmentation model's logits for a normalised batch (SegFormer, UperNet-ConvNeXt).
    Logits(logits::LogitsArgs),
    /// Time one training iteration of the experiment's model (scripts/bench_train_torch.py).
    TrainBench(train_bench::TrainBenchArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Ablate(args) => ablate::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Exp(args) => exp::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Table(args) => table::run(args),
        Command::TrainBench(args) => train_bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
