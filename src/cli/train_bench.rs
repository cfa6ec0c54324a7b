//! `rankseg train-bench`: the time of one training iteration of the experiment's model
//! (zero_grad, forward_loss, backward, optimizer and scheduler step), as
//! `scripts/bench_train_torch.py` times PyTorch's, on seeded random images and labels.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::atomic::write_string_atomic;
use crate::experiment::train::{build, target, Trainer};
use crate::experiment::{Configs, YamlNames};
use crate::train::store::Start;

#[derive(Args)]
pub struct TrainBenchArgs {
    /// A name under configs/models/ or a yaml path.
    #[arg(long = "model_yaml", alias = "model-yaml")]
    model_yaml: String,
    #[arg(long = "loss_yaml", alias = "loss-yaml", default_value = "ce")]
    loss_yaml: String,
    #[arg(long = "optim_yaml", alias = "optim-yaml", default_value = "adamw_lr6e-4")]
    optim_yaml: String,
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 4)]
    batch_size: usize,
    /// Square crop side.
    #[arg(long, default_value_t = 256)]
    crop: usize,
    #[arg(long = "num_classes", alias = "num-classes", default_value_t = 21)]
    num_classes: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Writes {"model", "seconds": [...], "median"} here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: TrainBenchArgs) -> Result<()> {
    ensure!(
        args.iters > 0 && args.batch_size > 0 && args.crop > 0,
        "--iters, --batch_size and --crop must be positive"
    );
    let names = YamlNames {
        model: Some(args.model_yaml.clone()),
        data: "pascal_voc".into(),
        loss: args.loss_yaml.clone(),
        schedule: "40k_iters".into(),
        optim: args.optim_yaml.clone(),
        test: "test_iou".into(),
        predict: "argmax".into(),
    };
    let mut configs = Configs::load(&names)?;
    configs.data.value.crop_size = Some([args.crop, args.crop]);
    configs.data.value.num_classes = args.num_classes;
    let (model, store) = build(
        &configs,
        Start::Fresh {
            pretrained: None,
            seed: 0,
        },
        0,
    )?;
    let mut trainer = Trainer::new(model, store, &configs, 1000)?;
    let (b, side, classes) = (args.batch_size, args.crop, args.num_classes);
    let mut rng = StdRng::seed_from_u64(0);
    let images: Vec<f32> = (0..b * 3 * side * side)
        .map(|_| rng.random::<f32>() * 4.0 - 2.0)
        .collect();
    let labels: Vec<i64> = (0..b * side * side)
        .map(|_| {
            if rng.random::<f64>() < 0.05 {
                255
            } else {
                rng.random_range(0..classes as i64)
            }
        })
        .collect();
    let images = Tensor::from_vec(images, (b, 3, side, side), &Device::Cpu)?;
    let target = target(&labels, (b, side, side), 255, classes)?;
    let mut seconds = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        let started = Instant::now();
        let step = trainer.step(i as u64 + 1, &images, &target)?;
        if i >= args.warmup {
            seconds.push(started.elapsed().as_secs_f64());
        }
        eprintln!(
            "iteration {}: {:.3} s, loss {:.4}",
            i + 1,
            started.elapsed().as_secs_f64(),
            step.loss
        );
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{}: {median:.3} s per training iteration (median of {})",
        args.model_yaml,
        seconds.len()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({"model": args.model_yaml, "seconds": seconds, "median": median});
        write_string_atomic(path, &serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
