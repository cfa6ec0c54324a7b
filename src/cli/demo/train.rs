//! The training demo: synthetic VOC data -> `exp` training (argmax evaluation at the end,
//! as main.py) -> `exp --test-only` with rankseg_rma -> the table of both.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use super::super::table::write_table;
use crate::atomic::write_string_atomic;
use crate::data::synthetic::{write_voc, SyntheticSpec, CLASSES};
use crate::experiment::train::{train, TrainOptions};
use crate::experiment::{test_only, Request, YamlNames};
use crate::report::paper::TableSpec;

pub struct TrainDemo {
    pub images: usize,
    pub size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub out: PathBuf,
}

/// A DeepLabV3+ on ResNet-18-D with narrow heads, from scratch (no pretrained weights: the
/// demo needs no download).
const MODEL_YAML: &str = "backbone: resnet18d\nmethod: deeplabv3plus\noutput_stride: 16\nout_channels: 32\n\
aux_out_channels: 16\nshortcut_channels: 8\ndropout: 0\natrous_rates: [2, 4, 6]\nalign_corners: false\naux: true\n";

const BATCH: usize = 8;

fn data_yaml(size: usize) -> String {
    format!(
        "dataset: pascal_voc\nin_channels: 3\nnum_classes: {CLASSES}\nscale_min: 0.75\nscale_max: 1.25\n\
         crop_size: [{size}, {size}]\nignore_index: 255\nreduce_zero_label: false\n\
         image_prefix: /JPEGImages/\nimage_suffix: .jpg\nlabel_prefix: /SegmentationClassAug/\nlabel_suffix: .png\n"
    )
}

fn schedule_yaml(epochs: usize) -> String {
    format!(
        "train_iters: -1\ntrain_epochs: {epochs}\nlog_iters: 10\nsave_epochs: {epochs}\nwarmup_ratio: 0.05\n\
         num_workers: 2\nbatch_size: {BATCH}\nby_epoch: true\n"
    )
}

fn write(path: &Path, text: &str) -> Result<String> {
    write_string_atomic(path, text)?;
    Ok(path.display().to_string())
}

pub fn run(demo: TrainDemo) -> Result<()> {
    ensure!(
        demo.images >= BATCH && demo.size >= 32 && demo.epochs > 0,
        "the training demo needs --images >= {BATCH}, --size >= 32 and --epochs >= 1"
    );
    let out = &demo.out;
    let data_dir = out.join("synthetic_voc");
    let val = (demo.images / 2).max(4);
    write_voc(
        &data_dir,
        &SyntheticSpec {
            train: demo.images,
            val,
            size: demo.size,
            seed: demo.seed,
        },
    )?;
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs).with_context(|| format!("cannot create {}", configs.display()))?;
    let names = YamlNames {
        model: Some(write(
            &configs.join("deeplabv3plus_resnet18d_small.yaml"),
            MODEL_YAML,
        )?),
        data: write(&configs.join("synthetic_voc.yaml"), &data_yaml(demo.size))?,
        loss: "ce".into(),
        schedule: write(&configs.join("schedule.yaml"), &schedule_yaml(demo.epochs))?,
        optim: "adamw_lr6e-4".into(),
        test: "test_iou".into(),
        predict: "argmax".into(),
    };
    // The demo's own run folder: a rerun trains again rather than resuming a finished run.
    let run_dir = out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("cannot clear {}", run_dir.display()))?;
    }
    let request = Request {
        yamls: names.clone(),
        model_checkpoint: None,
        data_dir: data_dir.clone(),
        output_dir: run_dir.clone(),
        force: false,
        device: "cpu".into(),
    };
    eprintln!(
        "training deeplabv3plus / resnet18d from scratch on {} synthetic {}x{} images ({} epochs, batch {BATCH})",
        demo.images, demo.size, demo.size, demo.epochs
    );
    let options = TrainOptions {
        seed: demo.seed,
        backbone_weights: None,
    };
    let trained = train(&request, &options)?;
    let rma = Request {
        yamls: YamlNames {
            predict: "rankseg_rma".into(),
            ..names
        },
        ..request
    };
    test_only(&rma)?;
    let spec = TableSpec {
        metric: "mDiceI",
        baseline: "argmax",
        draws: 2000,
        seed: demo.seed,
    };
    let text = write_table(std::slice::from_ref(&run_dir), &spec, &out.join("demo"))?;
    println!(
        "{} training steps ({} validation images).\n\n{text}\nwritten: {}/demo.md, demo.csv, demo.deltas.csv; the run (train_log.csv, train_loss.png, checkpoint, metrics) in {}",
        trained.steps,
        val,
        out.display(),
        run_dir.display()
    );
    Ok(())
}
