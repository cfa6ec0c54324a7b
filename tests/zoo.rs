//! The experiment's own models (tests/fixtures/zoo, made by scripts/make_zoo_fixtures.py
//! with the experiment's `Segmentor` and timm): logits for every method and backbone family,
//! the checkpoint formats its `main.py` writes, strict loading, and `exp` on a LiTS layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{DType, Device, Tensor};
use rankseg::tensor_io::{read_probs, ProbArray};

fn zoo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zoo")
        .join(name)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read_f32(path: &Path) -> (Vec<f32>, Vec<usize>) {
    match read_probs(path).unwrap() {
        ProbArray::F32(data, shape) => (data, shape),
        ProbArray::F64(..) => panic!("{} is float64", path.display()),
    }
}

/// The fixtures' seeded weights (tests/fixtures/zoo/README.md, "Formula weights").
mod formula {
    pub fn fnv1a64(name: &str) -> u64 {
        name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The i-th uniform in [0, 1) of the stream seeded by `seed` (splitmix64).
    fn unit(seed: u64, i: u64) -> f64 {
        let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f64 / 16_777_216.0
    }

    pub fn values(name: &str, shape: &[usize], gain: f64) -> Vec<f32> {
        let seed = fnv1a64(name);
        let numel: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product();
        (0..numel as u64)
            .map(|i| {
                let u = unit(seed, i);
                let r = 2.0 * u - 1.0;
                let v = if name.ends_with("running_var") {
                    0.5 + u
                } else if name.ends_with("running_mean") {
                    0.1 * r
                } else if shape.len() == 1 && (name.ends_with(".weight") || name.ends_with("gamma")) {
                    1.0 + 0.2 * r
                } else if shape.len() == 1 {
                    0.1 * r
                } else {
                    r * (3.0 / fan_in as f64).sqrt() * gain
                };
                v as f32
            })
            .collect()
    }

    #[test]
    fn fnv_check_values() {
        assert_eq!(fnv1a64(""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64("a"), 0xaf63dc4c8601ec8c);
    }
}

/// A case's state dict with the formula weights, keyed and shaped as its keys.json.
fn formula_state_dict(keys: &Path, gain: f64) -> HashMap<String, Tensor> {
    let list = json(keys);
    list.as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let name = entry[0].as_str().unwrap();
            let shape: Vec<usize> = entry[2]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let tensor = match entry[1].as_str().unwrap() {
                "I64" => Tensor::zeros(shape.as_slice(), DType::I64, &Device::Cpu).unwrap(),
                _ => Tensor::from_vec(
                    formula::values(name, &shape, gain),
                    shape.as_slice(),
                    &Device::Cpu,
                )
                .unwrap(),
            };
            (name.to_string(), tensor)
        })
        .collect()
}

fn write_formula_safetensors(case: &Path, to: &Path) {
    let gain = json(&case.join("case.json"))["gain"].as_f64().unwrap_or(1.0);
    let tensors = formula_state_dict(&case.join("keys.json"), gain);
    candle_core::safetensors::save(&tensors, to).unwrap();
}

/// `rankseg logits --model_yaml --data_yaml --model_checkpoint` on a case's input.
fn logits_command(model_yaml: &Path, case: &Path, checkpoint: &Path, out_file: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rankseg").unwrap();
    cmd.args(["logits", "--model_yaml"])
        .arg(model_yaml)
        .arg("--data_yaml")
        .arg(case.join("data.yaml"))
        .arg("--model_checkpoint")
        .arg(checkpoint)
        .arg("--input")
        .arg(case.join("input.npy"))
        .arg("--out")
        .arg(out_file);
    cmd
}

/// The logits `rankseg logits` writes for a case, and their shape.
fn logits(case: &Path, checkpoint: &Path) -> (Vec<f32>, Vec<usize>) {
    logits_with(case, checkpoint, &[])
}

fn logits_with(case: &Path, checkpoint: &Path, env: &[(&str, &str)]) -> (Vec<f32>, Vec<usize>) {
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("logits.npy");
    let mut cmd = logits_command(&case.join("model.yaml"), case, checkpoint, &out_file);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.assert().success();
    read_f32(&out_file)
}

/// max |ours - theirs| relative to the scale of theirs (at least 0.01, so that small
/// logits are still compared closely).
fn relative_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0.01f32, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn logits_equal_the_experiment_for_every_method_and_backbone() {
    let cases: Vec<String> = serde_json::from_value(json(&zoo("cases.json"))).unwrap();
    assert!(cases.len() >= 17);
    let mut failures = Vec::new();
    for name in &cases {
        let case = zoo(name);
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("checkpoint.safetensors");
        write_formula_safetensors(&case, &weights);
        let (ours, shape) = logits(&case, &weights);
        let (theirs, expected_shape) = read_f32(&case.join("logits.npy"));
        assert_eq!(shape, expected_shape, "{name}");
        let diff = relative_diff(&ours, &theirs);
        eprintln!("{name}: max |diff| / max |logit| = {diff:.2e}");
        if diff > 1e-4 {
            failures.push(format!("{name}: {diff:.2e}"));
        }
    }
    assert!(failures.is_empty(), "logits differ: {failures:?}");
}

/// The path CUDA takes (candle's own convolutions, pooling, resizing instead of our CPU
/// kernels), forced on the CPU by RANKSEG_PORTABLE_OPS, on one case per backbone family.
#[test]
fn portable_ops_equal_the_experiment() {
    for name in [
        "deeplabv3plus_resnet34d",
        "unet_resnet50d",
        "deeplabv3plus_efficientnet_b0",
        "pspnet_resnet50d",
        "segformer_mit_b0",
        "upernet_convnext_base",
    ] {
        let case = zoo(name);
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("checkpoint.safetensors");
        write_formula_safetensors(&case, &weights);
        let (ours, _) = logits_with(&case, &weights, &[("RANKSEG_PORTABLE_OPS", "1")]);
        let (theirs, _) = read_f32(&case.join("logits.npy"));
        let diff = relative_diff(&ours, &theirs);
        assert!(diff <= 1e-4, "{name} with portable ops: {diff:.2e}");
    }
}

/// The auxiliary branch loads and computes `Segmentor.forward(x)[1]`.
#[test]
fn aux_branch_equals_the_experiment() {
    use rankseg::models::zoo::{Segmentor, SegmentorConfig};
    for name in ["deeplabv3plus_resnet34d", "unet_resnet50d"] {
        let case = zoo(name);
        let (cfg, _) = SegmentorConfig::from_yamls(
            case.join("model.yaml").to_str().unwrap(),
            case.join("data.yaml").to_str().unwrap(),
        )
        .unwrap();
        let tensors = formula_state_dict(&case.join("keys.json"), 1.0);
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = Segmentor::load(vb, &cfg).unwrap();
        let (input, shape) = read_f32(&case.join("input.npy"));
        let x = Tensor::from_vec(input, shape.as_slice(), &Device::Cpu).unwrap();
        let ours = model
            .forward_with_aux(&x)
            .unwrap()
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (theirs, _) = read_f32(&case.join("aux.npy"));
        let diff = relative_diff(&ours, &theirs);
        assert!(diff < 1e-4, "{name} aux: {diff:.2e}");
    }
}

/// main.py's `checkpointNNN.pth` (epoch, state_dict with `module.` prefixes, AdamW and
/// LambdaLR states inside) and a bare state-dict `.pth`, both written by torch.save with
/// the tensors as views into shared storages.
#[test]
fn torch_checkpoints_load() {
    let case = zoo("pth");
    let (theirs, expected_shape) = read_f32(&case.join("logits.npy"));
    for file in ["checkpoint003.pth", "state_dict.pth"] {
        let (ours, shape) = logits(&case, &case.join(file));
        assert_eq!(shape, expected_shape, "{file}");
        let diff = relative_diff(&ours, &theirs);
        // Weights drawn without regard to fan-in: rounding differences grow more here.
        assert!(diff < 2e-4, "{file}: {diff:.2e}");
    }
}

/// The `logits` command on a bad checkpoint: exit code 1 and a message naming the file
/// and the key, never a panic or a backtrace.
fn logits_error(checkpoint: &Path) -> String {
    let case = zoo("pth");
    let out = tempfile::tempdir().unwrap();
    let output = logits_command(
        &case.join("model.yaml"),
        &case,
        checkpoint,
        &out.path().join("out.npy"),
    )
    .env("RUST_BACKTRACE", "1")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains(" 0: "),
        "{stderr}"
    );
    assert!(!out.path().join("out.npy").exists());
    assert!(stderr.lines().count() <= 2, "{stderr}");
    stderr
}

#[test]
fn bad_checkpoints_are_named_errors() {
    let case = zoo("pth");
    let facts = json(&case.join("case.json"));
    let wrong_shape = logits_error(&case.join("wrong_shape.pth"));
    let key = facts["wrong_shape_key"].as_str().unwrap();
    assert!(
        wrong_shape.contains(key) && wrong_shape.contains("wrong_shape.pth"),
        "{wrong_shape}"
    );
    assert!(
        wrong_shape.contains("[4, 16, 1, 1]") && wrong_shape.contains("model.yaml"),
        "{wrong_shape}"
    );
    let missing = logits_error(&case.join("missing_key.pth"));
    assert!(
        missing.contains(facts["missing_key"].as_str().unwrap()),
        "{missing}"
    );
    let unexpected = logits_error(&case.join("unexpected_key.pth"));
    assert!(
        unexpected.contains("unexpected key method.extra.weight"),
        "{unexpected}"
    );
    let truncated = logits_error(&case.join("truncated.pth"));
    assert!(truncated.contains("truncated.pth"), "{truncated}");
    let absent = logits_error(&case.join("no_such_checkpoint.pth"));
    assert!(absent.contains("does not exist"), "{absent}");
}

/// A model yaml whose backbone or method this harness does not build says so by name.
#[test]
fn unsupported_architectures_are_named() {
    let case = zoo("pth");
    let dir = tempfile::tempdir().unwrap();
    for (backbone, method, want) in [
        ("xception65", "deeplabv3", "xception65"),
        ("mobilevitv2_100", "deeplabv3plus", "mobilevitv2_100"),
        ("swin_large_patch4_window12_384.ms_in22k", "cpt", "cpt"),
        ("resnet50d", "fcn", "unknown method \"fcn\""),
        ("resnet77d", "deeplabv3", "unknown backbone \"resnet77d\""),
    ] {
        let yaml = dir.path().join("model.yaml");
        std::fs::write(
            &yaml,
            format!(
                "backbone: \"{backbone}\"\nmethod: \"{method}\"\noutput_stride: 8\nout_channels: 16\naux_out_channels: 8\nshortcut_channels: 4\ndropout: 0.1\natrous_rates: [12, 24, 36]\nalign_corners: False\naux: True\n"
            ),
        )
        .unwrap();
        let out = logits_command(
            &yaml,
            &case,
            &case.join("state_dict.pth"),
            &dir.path().join("out.npy"),
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backbone}: {stderr}");
        assert!(stderr.contains(want), "{backbone}: {stderr}");
    }
}

/// `exp --test-only` with a UNet checkpoint on the tiny LiTS layout: the experiment's
/// `test_medical` metrics per predictor; without --model_checkpoint the latest checkpoint
/// in --output_dir is taken (a broken older one beside it proves which).
#[test]
fn exp_evaluates_a_unet_checkpoint_like_test_medical() {
    let case = zoo("lits_unet");
    let facts = json(&case.join("case.json"));
    let expected = json(&case.join("expected.json"));
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(facts["data_dir"].as_str().unwrap());
    let out = tempfile::tempdir().unwrap();
    let gain = facts["gain"].as_f64().unwrap();
    let tensors = formula_state_dict(&case.join("keys.json"), gain);
    candle_core::safetensors::save(&tensors, out.path().join("checkpoint150.safetensors")).unwrap();
    std::fs::write(out.path().join("checkpoint149.pth"), b"not a checkpoint").unwrap();
    for predict in ["argmax", "rankseg_rma"] {
        let output = Command::cargo_bin("rankseg")
            .unwrap()
            .args(["exp", "--test-only", "--data_dir"])
            .arg(&data_dir)
            .arg("--output_dir")
            .arg(out.path())
            .arg("--model_yaml")
            .arg(case.join("model.yaml"))
            .arg("--data_yaml")
            .arg(case.join("lits_unet.yaml"))
            .args(["--test_yaml", "test_iou", "--predict_yaml", predict])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let got = json(&out.path().join(format!("{predict}.metrics.json")));
        let want = &expected["predictors"][predict]["metrics"];
        let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{predict}"
        );
        for (key, w) in want {
            let g = got[key].as_f64().unwrap();
            // argmax is exact; RMA cut points can move by a pixel with logits equal to ~1e-6.
            let tolerance = if predict == "argmax" { 1e-9 } else { 0.05 };
            assert!(
                (g - w.as_f64().unwrap()).abs() <= tolerance,
                "{predict} {key}: {g} vs {w}"
            );
        }
    }
    let run = json(&out.path().join("run.json"));
    assert!(
        run.to_string().contains("checkpoint150.safetensors"),
        "run.json names the checkpoint used"
    );
}
