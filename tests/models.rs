//! Models against transformers (tests/fixtures/models, made by
//! scripts/make_model_fixtures.py), and checkpoint loading: local directories, model
//! yamls, the Hugging Face cache offline, and bad weights named in the error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use candle_core::{DType, Device, Tensor};
use predicates::str::contains;
use rankseg::tensor_io::{read_probs, ProbArray};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn read_f32(path: &Path) -> (Vec<f32>, Vec<usize>) {
    match read_probs(path).unwrap() {
        ProbArray::F32(data, shape) => (data, shape),
        ProbArray::F64(..) => panic!("{} is float64", path.display()),
    }
}

/// `rankseg logits --model MODEL` on the tiny SegFormer's input, writing `out_dir/out.npy`.
fn logits_cmd(model: &str, out_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rankseg").unwrap();
    cmd.args(["logits", "--model", model, "--input"])
        .arg(fixture("segformer_tiny").join("input.npy"))
        .arg("--out")
        .arg(out_dir.join("out.npy"));
    cmd
}

/// Runs `rankseg logits` and returns the max |ours - transformers|.
fn logits_diff(model: &str, dir: &Path, input: &str, expected: &str, env: &[(&str, &Path)]) -> f32 {
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("logits.npy");
    let mut cmd = Command::cargo_bin("rankseg").unwrap();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["logits", "--model", model, "--input"])
        .arg(dir.join(input))
        .arg("--out")
        .arg(&out_file)
        .assert()
        .success();
    let (ours, ours_shape) = read_f32(&out_file);
    let (theirs, theirs_shape) = read_f32(&dir.join(expected));
    assert_eq!(ours_shape, theirs_shape, "{model} {input}");
    ours.iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_equal_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 4,
        "model fixtures missing under {}",
        root.display()
    );
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        for (input, expected) in [("input.npy", "logits.npy"), ("input_odd.npy", "logits_odd.npy")] {
            if dir.join(input).exists() {
                let diff = logits_diff(dir.to_str().unwrap(), &dir, input, expected, &[]);
                assert!(diff <= 2e-5, "{name} {input}: max abs diff {diff}");
            }
        }
    }
}

/// The path other devices take (candle's own grouped conv, upsample + concatenate + conv)
/// must agree with transformers too: forced on CPU by RANKSEG_PORTABLE_OPS.
#[test]
fn portable_ops_equal_transformers() {
    let portable = Path::new("1");
    for name in ["segformer_tiny", "upernet_convnext_tiny"] {
        let dir = fixture(name);
        let diff = logits_diff(
            dir.to_str().unwrap(),
            &dir,
            "input_odd.npy",
            "logits_odd.npy",
            &[("RANKSEG_PORTABLE_OPS", portable)],
        );
        assert!(diff <= 2e-5, "{name}: max abs diff {diff}");
    }
}

#[test]
fn model_yaml_with_a_local_path() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tmp.path().join("tiny.yaml");
    std::fs::write(
        &yaml,
        format!(
            "method: segformer\npath: {}\n",
            fixture("segformer_tiny").display()
        ),
    )
    .unwrap();
    let diff = logits_diff(
        yaml.to_str().unwrap(),
        &fixture("segformer_tiny"),
        "input.npy",
        "logits.npy",
        &[],
    );
    assert!(diff <= 1e-4);

    std::fs::write(
        &yaml,
        format!("method: upernet\npath: {}\n", fixture("segformer_tiny").display()),
    )
    .unwrap();
    logits_cmd(yaml.to_str().unwrap(), tmp.path())
        .assert()
        .code(1)
        .stderr(contains(
            "the model yaml says \"upernet\" but config.json is a \"segformer\" model",
        ));

    std::fs::write(&yaml, "method: segformer\npath: x\nhub_repoo: y\n").unwrap();
    logits_cmd(yaml.to_str().unwrap(), tmp.path())
        .assert()
        .code(1)
        .stderr(contains("unknown field `hub_repoo`"));
}

/// A hub repo found in a Hugging Face cache laid out as huggingface_hub lays it out, with
/// the network forbidden.
#[test]
fn hub_repo_loads_from_the_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--acme--tiny-segformer");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("segformer_tiny").join(file), snapshot.join(file)).unwrap();
    }
    let yaml = home.path().join("hub.yaml");
    std::fs::write(
        &yaml,
        "method: segformer\nhub_repo: acme/tiny-segformer\nrevision: main\n",
    )
    .unwrap();
    let env = [("HF_HOME", home.path()), ("HF_HUB_OFFLINE", Path::new("1"))];
    let diff = logits_diff(
        yaml.to_str().unwrap(),
        &fixture("segformer_tiny"),
        "input.npy",
        "logits.npy",
        &env,
    );
    assert!(diff <= 1e-4);

    std::fs::write(&yaml, "method: segformer\nhub_repo: acme/not-cached\n").unwrap();
    logits_cmd(yaml.to_str().unwrap(), home.path())
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .assert()
        .code(1)
        .stderr(contains(
            "acme/not-cached@main: config.json is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
        ));
}

/// A copy of the tiny SegFormer whose weights were edited by `edit`.
fn broken_checkpoint(edit: impl Fn(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("segformer_tiny");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn logits_fails(dir: &Path, message: &str) {
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["logits", "--model"])
        .arg(dir)
        .arg("--input")
        .arg(fixture("segformer_tiny").join("input.npy"))
        .arg("--out")
        .arg(dir.join("out.npy"))
        .assert()
        .code(1)
        .stderr(contains(message))
        .stderr(contains("panicked").not());
    assert!(!dir.join("out.npy").exists());
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn bad_weights_are_named() {
    let name = "decode_head.classifier.weight";
    let missing = broken_checkpoint(|t| {
        t.remove(name);
    });
    logits_fails(missing.path(), &format!("the checkpoint has no tensor {name}"));
    let reshaped = broken_checkpoint(|t| {
        t.insert(
            name.into(),
            Tensor::zeros((3, 16, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    logits_fails(
        reshaped.path(),
        &format!("tensor {name} has shape [3, 16, 1, 1], the config implies [5, 16, 1, 1]"),
    );
    let integer = broken_checkpoint(|t| {
        t.insert(
            name.into(),
            Tensor::zeros((5, 16, 1, 1), DType::U32, &Device::Cpu).unwrap(),
        );
    });
    logits_fails(integer.path(), &format!("tensor {name} in"));
}

#[test]
fn shipped_model_names_resolve_without_network() {
    // A shipped name resolves to its yaml; offline with an empty cache it must say so.
    let home = tempfile::tempdir().unwrap();
    logits_cmd("upernet_convnext_tiny", home.path())
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .assert()
        .code(1)
        .stderr(contains(
            "openmmlab/upernet-convnext-tiny@main: config.json is not in the Hugging Face cache",
        ));
}
