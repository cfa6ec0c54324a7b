//! `rankseg demo --probs`: a seeded synthetic benchmark whose labels are drawn from its own
//! probability maps, so the maps are calibrated and the expected-metric optimum RankSEG
//! targets is the real one; argmax, threshold and RMA are scored on it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::metrics::{summarize, ImageCounts, MetricSpec, Prediction as Pred};
use crate::predict::{predict, Metric, OutputMode, PredictOptions, Prediction, ProbMap, Solver};
use crate::report::Table;
use crate::synthetic::{sample_labels, softmax_map, MapSpec};

/// The synthetic probability maps.
pub struct ProbsSpec {
    pub images: usize,
    pub size: usize,
    pub classes: usize,
    pub seed: u64,
    /// Where demo_probs.csv and demo_probs.md go.
    pub out: PathBuf,
}

struct Method {
    name: &'static str,
    options: PredictOptions,
}

fn methods() -> Vec<Method> {
    let rma = |metric| PredictOptions {
        solver: Solver::Rma,
        metric,
        ..PredictOptions::default()
    };
    vec![
        Method {
            name: "argmax",
            options: PredictOptions {
                solver: Solver::Argmax,
                ..PredictOptions::default()
            },
        },
        Method {
            name: "threshold",
            options: PredictOptions {
                solver: Solver::Threshold,
                output_mode: OutputMode::Multilabel,
                ..PredictOptions::default()
            },
        },
        Method {
            name: "rma_dice",
            options: rma(Metric::Dice),
        },
        Method {
            name: "rma_iou",
            options: rma(Metric::Iou),
        },
    ]
}

pub fn run(args: ProbsSpec) -> Result<()> {
    anyhow::ensure!(
        args.images > 0 && args.size > 1 && args.classes > 1,
        "demo needs images >= 1, size >= 2, classes >= 2"
    );
    let methods = methods();
    let spec = MetricSpec {
        num_classes: args.classes,
        ignore_index: 255,
    };
    let mut counts: Vec<Vec<ImageCounts>> = vec![Vec::new(); methods.len()];
    let mut seconds = vec![0.0f64; methods.len()];
    let progress = ProgressBar::new(args.images as u64)
        .with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images ({eta})")?
                .progress_chars("=> "),
        )
        .with_message("demo");
    for i in 0..args.images {
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        // Vary blob size, sharpness and the number of objects across images.
        let map_spec = MapSpec {
            classes: args.classes,
            height: args.size,
            width: args.size,
            grid: 4 + i % 6,
            sharpness: 1.5 + (i % 5) as f32 * 0.75,
            present: 2 + i % 4,
        };
        let probs = softmax_map(&map_spec, seed);
        let labels = sample_labels(&probs, args.classes, seed ^ 0x5eed);
        let shape = [1, args.classes, args.size, args.size];
        let map = ProbMap::new(&probs, &shape)?;
        for (k, method) in methods.iter().enumerate() {
            let start = Instant::now();
            let prediction = predict(&map, &method.options)?;
            seconds[k] += start.elapsed().as_secs_f64();
            let pred = match &prediction {
                Prediction::ClassMap(classes) => Pred::ClassMap(classes),
                Prediction::Masks(masks) => Pred::Masks(masks),
            };
            counts[k].extend(ImageCounts::of(pred, &labels, &spec)?);
        }
        progress.inc(1);
    }
    progress.finish_and_clear();

    let mut table = Table::new(&["method", "mIoUI", "mDiceI", "mIoUD", "mDiceD", "ms_per_image"]);
    for (k, method) in methods.iter().enumerate() {
        let summary = summarize(&counts[k], &spec, 10);
        let cell = |key: &str| format!("{:.2}", summary.get(key).unwrap_or(f64::NAN));
        table.push(vec![
            method.name.to_string(),
            cell("mIoUI"),
            cell("mDiceI"),
            cell("mIoUD"),
            cell("mDiceD"),
            format!("{:.2}", 1e3 * seconds[k] / args.images as f64),
        ]);
    }
    let preamble = format!(
        "Synthetic benchmark: {} images of {}x{} with {} classes, labels drawn from the maps (seed {}).\n\n",
        args.images, args.size, args.size, args.classes, args.seed
    );
    table.write(&args.out, "demo_probs", &preamble)?;
    print!("{preamble}{}", table.to_markdown()?);
    println!(
        "\nwritten: {}/demo_probs.csv, {}/demo_probs.md",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
