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

/// `rankseg logits --model_yaml --data_yaml --model_checkpoint` on a case's input; returns
/// the logits and their shape.
fn logits(case: &Path, checkpoint: &Path) -> (Vec<f32>, Vec<usize>) {
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("logits.npy");
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["logits", "--model_yaml"])
        .arg(case.join("model.yaml"))
        .arg("--data_yaml")
        .arg(case.join("data.yaml"))
        .arg("--model_checkpoint")
        .arg(checkpoint)
        .arg("--input")
        .arg(case.join("input.npy"))
        .arg("--out")
        .arg(&out_file)
        .assert()
        .success();
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
