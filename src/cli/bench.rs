//! `rankseg bench`: the predictors timed on seeded smooth softmax maps at the sizes of
//! the papers' datasets. Ratios against argmax come from the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use crate::atomic::write_string_atomic;
use crate::predict::experiment::{ExperimentRma, NonOverlap};
use crate::predict::{predict, Metric, PredictOptions, ProbMap, Solver};
use crate::report::Table;
use crate::synthetic::{softmax_map, MapSpec};
use crate::tensor_io::write_npy;

#[derive(Args)]
pub struct BenchArgs {
    /// Comma-separated sizes: voc (1x21x512x512), ade20k (1x150x512x512),
    /// cityscapes (1x19x1024x2048), binary (1x2x512x512), voc_small (1x21x96x96),
    /// binary_small (1x2x128x128). BA/TRNA run at the voc and binary sizes only.
    #[arg(long, default_value = "voc,ade20k,cityscapes,binary", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Comma-separated methods (default: all): argmax, threshold, rma_dice, rma_iou,
    /// exp_rma_dice, exp_rma_iou (the experiment's rankseg_rma), ba, trna, ba_trna.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Timed repetitions per method (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Two repetitions and the two smaller sizes only (voc, binary), for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Writes bench.csv and bench.md here.
    #[arg(long, default_value = "results/bench/rust")]
    out: PathBuf,
    /// Also saves each input map as DIR/<size>.npy (for scripts/bench_vs_rankseg.py).
    #[arg(long)]
    dump_inputs: Option<PathBuf>,
    /// Also writes the timings as JSON ([{size, method, seconds}]).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn size_spec(name: &str) -> Result<MapSpec> {
    let (classes, height, width, present) = match name {
        "voc" => (21, 512, 512, 3),
        "ade20k" => (150, 512, 512, 8),
        "cityscapes" => (19, 1024, 2048, 10),
        "binary" => (2, 512, 512, 2),
        // Sizes at which rankseg's TRNA (a Python loop over volumes) finishes in seconds.
        "voc_small" => (21, 96, 96, 3),
        "binary_small" => (2, 128, 128, 2),
        other => bail!(
            "unknown bench size '{other}' (expected voc, ade20k, cityscapes, binary, voc_small or binary_small)"
        ),
    };
    Ok(MapSpec {
        classes,
        height,
        width,
        grid: 12,
        sharpness: 3.0,
        present,
    })
}

/// What a bench method runs: rankseg 0.0.8's `RankSEG` with a solver, or the RankSEG-RMA
/// experiment's own `rankseg_rma` (pruning at 0.1, overlaps by RMA score).
#[derive(Clone, Copy)]
enum Method {
    Package(Solver, Metric),
    Experiment(Metric),
}

const METHODS: [(&str, Method); 9] = [
    ("argmax", Method::Package(Solver::Argmax, Metric::Dice)),
    ("threshold", Method::Package(Solver::Threshold, Metric::Dice)),
    ("rma_dice", Method::Package(Solver::Rma, Metric::Dice)),
    ("rma_iou", Method::Package(Solver::Rma, Metric::Iou)),
    ("exp_rma_dice", Method::Experiment(Metric::Dice)),
    ("exp_rma_iou", Method::Experiment(Metric::Iou)),
    ("ba", Method::Package(Solver::Ba, Metric::Dice)),
    ("trna", Method::Package(Solver::Trna, Metric::Dice)),
    ("ba_trna", Method::Package(Solver::BaTrna, Metric::Dice)),
];

impl Method {
    fn run(self, map: &ProbMap<f32>) -> Result<()> {
        match self {
            Method::Package(solver, metric) => {
                let mut options = PredictOptions {
                    solver,
                    metric,
                    ..PredictOptions::default()
                };
                if !matches!(solver, Solver::Argmax | Solver::Rma) {
                    options.output_mode = crate::predict::OutputMode::Multilabel;
                }
                predict(map, &options)?;
            }
            Method::Experiment(metric) => {
                let rma = ExperimentRma {
                    metric,
                    allow_overlap: false,
                    non_overlap: NonOverlap::RmaScore,
                };
                rma.predict(map)?;
            }
        }
        Ok(())
    }

    fn solver(self) -> Solver {
        match self {
            Method::Package(solver, _) => solver,
            Method::Experiment(_) => Solver::Rma,
        }
    }
}

/// The RankDice solvers (per-class masks, sorted rows, a refined-normal law per volume
/// for TRNA) are benchmarked at the sizes the JMLR paper used them on.
fn runs_at(solver: Solver, size: &str) -> bool {
    !matches!(solver, Solver::Ba | Solver::Trna | Solver::BaTrna)
        || matches!(size, "voc" | "binary" | "voc_small" | "binary_small")
}

#[derive(Serialize)]
struct Timing {
    size: String,
    method: String,
    seconds: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(unknown) = args
        .methods
        .iter()
        .find(|m| !METHODS.iter().any(|(name, _)| name == m))
    {
        let known: Vec<&str> = METHODS.iter().map(|(name, _)| *name).collect();
        bail!(
            "unknown bench method '{unknown}' (expected one of {})",
            known.join(", ")
        );
    }
    let (sizes, repeats) = if args.quick {
        (vec!["voc".to_string(), "binary".to_string()], 2)
    } else {
        (args.sizes.clone(), args.repeats.max(1))
    };
    let mut timings = Vec::new();
    let mut table = Table::new(&["size", "method", "median_s", "vs_argmax"]);
    for size in &sizes {
        let spec = size_spec(size)?;
        let probs = softmax_map(&spec, 2023);
        let shape = [1, spec.classes, spec.height, spec.width];
        if let Some(dir) = &args.dump_inputs {
            write_npy(&dir.join(format!("{size}.npy")), &shape, &probs)?;
        }
        let map = ProbMap::new(&probs, &shape)?;
        let mut argmax_s = f64::NAN;
        let chosen = |name: &str| args.methods.is_empty() || args.methods.iter().any(|m| m == name);
        for (method, kind) in METHODS
            .into_iter()
            .filter(|m| runs_at(m.1.solver(), size) && chosen(m.0))
        {
            kind.run(&map)?; // warm-up
            let mut runs: Vec<f64> = (0..repeats)
                .map(|_| {
                    let start = Instant::now();
                    let out = kind.run(&map);
                    let s = start.elapsed().as_secs_f64();
                    out.map(|_| s)
                })
                .collect::<Result<_>>()?;
            runs.sort_by(f64::total_cmp);
            let median = runs[runs.len() / 2];
            if method == "argmax" {
                argmax_s = median;
            }
            eprintln!(
                "{size:>10} {method:>9}: {:.4} s (x{:.2} argmax)",
                median,
                median / argmax_s
            );
            table.push(vec![
                size.clone(),
                method.into(),
                format!("{median:.4}"),
                format!("{:.2}", median / argmax_s),
            ]);
            timings.push(Timing {
                size: size.clone(),
                method: method.into(),
                seconds: median,
            });
        }
    }
    let preamble = format!(
        "Median of {repeats} runs, {} threads ({}), seeded smooth softmax maps.\n\n",
        rayon::current_num_threads(),
        std::env::consts::ARCH
    );
    table.write(&args.out, "bench", &preamble)?;
    print!("{preamble}{}", table.to_markdown()?);
    if let Some(path) = &args.json {
        write_string_atomic(path, &serde_json::to_string_pretty(&timings)?)?;
    }
    Ok(())
}
