//! `rankseg exp` training (no --test-only) against the experiment's own main.py + train.py
//! (tests/fixtures/train_exp/, written by scripts/make_train_fixtures.py): a deeplabv3plus /
//! resnet18d from the fixture's formula weights, 5 optimizer steps with AdamW and with SGD,
//! for `ce` and a JDT loss. Same steps, epochs and rates; losses, weights and BatchNorm
//! statistics within the float32 noise the script measured. Plus resume after a kill.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_exp")
}

/// The fixture README's formula: every state-dict entry from its name and shape.
/// `model`: the fixture folder of the model ("" for deeplabv3plus, "mit").
fn formula_state_dict(model: &str) -> HashMap<String, Tensor> {
    let keys = std::fs::read_to_string(fixture().join(model).join("keys.txt")).unwrap();
    let mut out = HashMap::new();
    for line in keys.lines() {
        let (name, rest) = line.split_once(' ').unwrap();
        let shape_text = rest
            .split_once(' ')
            .unwrap()
            .1
            .trim_matches(|c| c == '[' || c == ']');
        let shape: Vec<usize> = shape_text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        if name.ends_with("num_batches_tracked") {
            out.insert(name.to_string(), Tensor::new(0i64, &Device::Cpu).unwrap());
            continue;
        }
        let n: usize = shape.iter().product();
        let len = name.len() as f64;
        let fan_in: usize = shape.iter().skip(1).product();
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let s = (0.7 * i as f64 + 0.1 * len).sin();
                let v = if name.ends_with("running_mean") {
                    0.1 * s
                } else if name.ends_with("running_var") {
                    1.0 + 0.5 * s.abs()
                } else if name.ends_with("bias") {
                    0.1 * s
                } else if shape.len() == 1 {
                    1.0 + 0.1 * s
                } else {
                    s / (fan_in as f64).sqrt()
                };
                v as f32
            })
            .collect();
        out.insert(
            name.to_string(),
            Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap(),
        );
    }
    out
}

fn rankseg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rankseg"))
}

/// `rankseg exp` on the fixture's data and yamls, starting from `init` when given.
fn train_command(
    out: &Path,
    model: &str,
    loss: &str,
    optim: &str,
    schedule: &Path,
    init: Option<&Path>,
) -> Command {
    let f = fixture();
    let mut cmd = rankseg();
    cmd.arg("exp")
        .arg("--data_dir")
        .arg(f.join("data"))
        .arg("--output_dir")
        .arg(out)
        .arg("--model_yaml")
        .arg(f.join(model).join("model.yaml"))
        .arg("--data_yaml")
        .arg(f.join("data.yaml"))
        .args(["--loss_yaml", loss, "--optim_yaml"])
        .arg(f.join(format!("{optim}.yaml")))
        .arg("--schedule_yaml")
        .arg(schedule)
        .args([
            "--test_yaml",
            "test_iou",
            "--predict_yaml",
            "argmax",
            "--seed",
            "0",
        ]);
    if let Some(init) = init {
        cmd.arg("--model_checkpoint").arg(init);
    }
    cmd
}

fn write_init(dir: &Path, model: &str) -> PathBuf {
    let path = dir.join("init.safetensors");
    candle_core::safetensors::save(&formula_state_dict(model), &path).unwrap();
    path
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "rankseg exp failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (iter, epoch, lr, loss) per row of train_log.csv.
fn log_rows(out: &Path) -> Vec<(i64, i64, f64, f64)> {
    let text = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("iter,epoch,lr,loss,seconds"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn vec_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Largest |ours - theirs| / max(1, |theirs|) over the fixture's stored values (whole small
/// tensors, strided samples of the big ones), and for the sums of the big ones
/// |ours - theirs| / max(1, sum |w|): a sum of millions of weights near zero in total moves
/// with the rounding of every one of them.
fn weight_diff(ours: &HashMap<String, Tensor>, expected: &HashMap<String, Tensor>) -> (f64, String) {
    let mut worst = (0.0f64, String::new());
    let mut note = |d: f64, key: &str| {
        if d > worst.0 {
            worst = (d, key.to_string());
        }
    };
    for (key, theirs) in expected {
        let Some((kind, name)) = key.split_once('.') else {
            continue;
        };
        let Some(mine) = ours.get(name) else {
            assert!(
                !["final", "sample", "sum"].contains(&kind),
                "no {name} in our checkpoint"
            );
            continue;
        };
        let (mine, theirs) = (vec_f64(mine), vec_f64(theirs));
        let compared: Vec<f64> = match kind {
            "final" => mine.clone(),
            "sample" => mine.iter().step_by(mine.len() / 512).copied().collect(),
            "sum" => {
                let scale = mine.iter().map(|v| v.abs()).sum::<f64>().max(1.0);
                note((mine.iter().sum::<f64>() - theirs[0]).abs() / scale, key);
                continue;
            }
            _ => continue,
        };
        assert_eq!(compared.len(), theirs.len(), "{key}");
        for (a, b) in compared.iter().zip(&theirs) {
            note((a - b).abs() / b.abs().max(1.0), key);
        }
    }
    worst
}

/// The fixture's float32 noise for this case, the larger of two measurements: torch in
/// float32 against float64, and against itself with the batch in another order (our
/// shuffle cannot be torch's); per step for the loss, overall for the weights.
fn float32_noise(model: &str, name: &str) -> (Vec<f64>, f64) {
    let path = fixture().join(model).join(format!("expected_{name}.json"));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let runs = ["noise_float32_vs_float64", "noise_float32_other_batch_order"].map(|k| &json[k]);
    let steps = |run: &serde_json::Value| -> Vec<f64> {
        run["loss_rel_per_step"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let per_step = steps(runs[0])
        .iter()
        .zip(steps(runs[1]))
        .map(|(a, b)| a.max(b))
        .collect();
    let weights = runs
        .iter()
        .map(|run| {
            run["weights_rel_max (|w32 - w64| / max(1, |w64|))"]
                .as_f64()
                .unwrap()
        })
        .fold(0.0, f64::max);
    (per_step, weights)
}

/// One fixture case; the tolerances are floors under twice the measured float32 noise (the
/// weight floor, 3e-5 of max(1, |w|), is float32 rounding: our convolutions and BatchNorm
/// sums run in other orders than torch's).
fn check_case(model: &str, loss: &str, optim: &str, loss_floor: f64, weight_floor: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let init = write_init(tmp.path(), model);
    let out = tmp.path().join("out");
    run_ok(&mut train_command(
        &out,
        model,
        loss,
        optim,
        &fixture().join("schedule.yaml"),
        Some(&init),
    ));
    let name = if optim == "adamw_lr6e-4" {
        loss.to_string()
    } else {
        format!("{loss}_sgd")
    };
    let expected = candle_core::safetensors::load(
        fixture().join(model).join(format!("expected_{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let (loss_noise, weight_noise) = float32_noise(model, &name);
    let rows = log_rows(&out);
    let (iters, epochs) = (vec_f64(&expected["iter"]), vec_f64(&expected["epoch"]));
    let (lrs, losses) = (vec_f64(&expected["lr"]), vec_f64(&expected["loss"]));
    assert_eq!(rows.len(), lrs.len(), "{name}: optimizer steps");
    for (k, &(iter, epoch, lr, value)) in rows.iter().enumerate() {
        assert_eq!(
            (iter as f64, epoch as f64),
            (iters[k], epochs[k]),
            "{name} step {k}"
        );
        assert!(
            (lr - lrs[k]).abs() <= 1e-12 * lrs[k].abs().max(1e-6),
            "{name} step {k}: lr {lr} vs {}",
            lrs[k]
        );
        let rel = (value - losses[k]).abs() / losses[k].abs();
        let tolerance = loss_floor.max(2.0 * loss_noise[k]);
        assert!(
            rel <= tolerance,
            "{name} step {k}: loss {value} vs {} ({rel:.1e} > {tolerance:.1e})",
            losses[k]
        );
    }
    let ours = candle_core::safetensors::load(out.join("checkpoint005.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        ours["aux_conv.1.num_batches_tracked"].to_scalar::<i64>().unwrap(),
        5
    );
    let (diff, key) = weight_diff(&ours, &expected);
    let tolerance = weight_floor.max(2.0 * weight_noise);
    assert!(
        diff <= tolerance,
        "{name}: {key} differs by {diff:.2e} > {tolerance:.1e}"
    );
    // main.py evaluates after the last epoch: the argmax results of the trained model.
    assert!(out.join("argmax.metrics.json").exists());
}

#[test]
fn sgd_ce_matches_the_experiment() {
    check_case("", "ce", "sgd_lr1e-2", 1e-6, 3e-5);
}

#[test]
fn sgd_jdt_dice_matches_the_experiment() {
    check_case("", "dice_ic_present_all", "sgd_lr1e-2", 1e-6, 3e-5);
}

#[test]
fn adamw_ce_matches_the_experiment() {
    check_case("", "ce", "adamw_lr6e-4", 1e-6, 1e-5);
}

/// MiT-B0 with the SegFormer head (no DropPath: the fixture's yaml sets drop_path_rate 0):
/// differentiable norms, attention, fused kv, the depthwise MixFFN.
#[test]
fn mit_sgd_ce_matches_the_experiment() {
    check_case("mit", "ce", "sgd_lr1e-2", 1e-6, 3e-5);
}

#[test]
fn mit_adamw_ce_matches_the_experiment() {
    check_case("mit", "ce", "adamw_lr6e-4", 1e-6, 3e-5);
}

#[test]
fn adamw_jdt_dice_matches_the_experiment() {
    check_case("", "dice_ic_present_all", "adamw_lr6e-4", 1e-6, 1e-5);
}

/// A run killed mid-epoch and restarted (from the latest checkpoint in --output_dir, as
/// main.py) ends with the same weights, optimizer state and log as one never interrupted.
#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let init = write_init(tmp.path(), "");
    let schedule = tmp.path().join("schedule.yaml");
    // Two batches per epoch, three epochs, a checkpoint after each.
    std::fs::write(
        &schedule,
        "{train_iters: -1, train_epochs: 3, log_iters: 1, save_epochs: 1, warmup_ratio: 0.3, num_workers: 1, batch_size: 2, by_epoch: true}\n",
    )
    .unwrap();
    let (whole, resumed) = (tmp.path().join("whole"), tmp.path().join("resumed"));
    run_ok(&mut train_command(
        &whole,
        "",
        "ce",
        "adamw_lr6e-4",
        &schedule,
        Some(&init),
    ));

    let mut child = train_command(&resumed, "", "ce", "adamw_lr6e-4", &schedule, Some(&init))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = resumed.join("checkpoint001.safetensors");
    while !first.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !resumed.join("checkpoint003.safetensors").exists(),
        "killed too late to test a resume"
    );
    run_ok(&mut train_command(
        &resumed,
        "",
        "ce",
        "adamw_lr6e-4",
        &schedule,
        None,
    ));

    for file in ["checkpoint003.safetensors", "checkpoint003.resume.safetensors"] {
        let a = candle_core::safetensors::load(whole.join(file), &Device::Cpu).unwrap();
        let b = candle_core::safetensors::load(resumed.join(file), &Device::Cpu).unwrap();
        assert_eq!(a.len(), b.len(), "{file}");
        for (name, t) in &a {
            let diff = (vec_f64(t)
                .iter()
                .zip(vec_f64(&b[name]))
                .map(|(x, y)| (x - y).abs()))
            .fold(0.0, f64::max);
            assert_eq!(diff, 0.0, "{file}: {name}");
        }
    }
    assert_eq!(log_rows(&whole), log_rows(&resumed));
    assert_eq!(log_rows(&whole).len(), 6);
}

/// The store numbers parameters in creation order, which torch's optimizer state follows in
/// state-dict order: the model files must create them in that order.
#[test]
fn parameters_are_created_in_state_dict_order() {
    use rankseg::models::zoo::{Segmentor, SegmentorConfig};
    use rankseg::train::store::{Start, TrainStore};
    let f = fixture();
    let (cfg, _) = SegmentorConfig::from_yamls(
        f.join("model.yaml").to_str().unwrap(),
        f.join("data.yaml").to_str().unwrap(),
    )
    .unwrap();
    let store = TrainStore::new(Start::Fresh {
        pretrained: None,
        seed: 0,
    });
    Segmentor::load(store.var_builder(&Device::Cpu), &cfg).unwrap();
    let ours: Vec<String> = store.entries().into_iter().map(|(name, _)| name).collect();
    let keys = std::fs::read_to_string(f.join("keys.txt")).unwrap();
    let theirs: Vec<&str> = keys.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ours, theirs);
}
