//! Odd inputs through the CLIs: exit code 1 (not a panic's 101), a message naming the
//! problem, no panic text or backtrace on stderr, and no output file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use rankseg::tensor_io::write_npy;

mod common;
use common::copy_dir;

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn rankseg() -> Command {
    let mut cmd = Command::cargo_bin("rankseg").unwrap();
    // A backtrace would show here if anything panicked.
    cmd.env("RUST_BACKTRACE", "1");
    cmd
}

/// Runs `cmd`, requires exit 1, `message` on stderr and no panic; returns stderr.
fn fails_with(cmd: &mut Command, message: &str) -> String {
    let out = cmd
        .assert()
        .code(1)
        .stderr(contains(message))
        .stderr(contains("panicked").not())
        .stderr(contains("stack backtrace").not());
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

/// A .npy with a hand-written header (and `body` after it).
fn raw_npy(path: &Path, header: &str, body: &[u8]) {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(body);
    std::fs::write(path, bytes).unwrap();
}

fn logits_cmd(model: &Path, input: &Path, out: &Path) -> Command {
    let mut cmd = rankseg();
    cmd.args(["logits", "--model"])
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn an_input_smaller_than_the_model_takes_names_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("small.npy");
    write_npy(&input, &[1, 3, 20, 20], &[0f32; 1200]).unwrap();
    let out = dir.path().join("out.npy");
    // The tiny SegFormer's first stage strides by 4 and reduces its keys by 8 more.
    let stderr = fails_with(
        &mut logits_cmd(&root("tests/fixtures/models/segformer_tiny"), &input, &out),
        "the input is 20x20 pixels but this model needs at least 29x29",
    );
    assert!(stderr.lines().count() <= 2, "{stderr}");
    fails_with(
        &mut logits_cmd(&root("tests/fixtures/models/upernet_convnext_tiny"), &input, &out),
        "needs at least 32x32",
    );
    assert!(!out.exists());
}

#[test]
fn a_huge_class_count_is_bounded_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let label = dir.path().join("label.npy");
    write_npy(&label, &[1, 2, 2], &[0i64, 1, 1, 0]).unwrap();
    fails_with(
        rankseg()
            .args(["score", "--num-classes", "1000000000000", "--pred"])
            .arg(&label)
            .arg("--label")
            .arg(&label),
        "--num-classes is 1000000000000, more than the 65536 classes supported",
    );

    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let tiny = root("tests/fixtures/models/segformer_tiny");
    std::fs::copy(tiny.join("model.safetensors"), model.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json")).unwrap()).unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("id2label");
    object.remove("label2id");
    object.insert("num_labels".into(), 1_000_000_000_000u64.into());
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let out = dir.path().join("out.npy");
    fails_with(
        &mut logits_cmd(&model, &tiny.join("input.npy"), &out),
        "num_labels is 1000000000000, more than the 65536 classes supported",
    );
    assert!(!out.exists());
}

#[test]
fn an_npy_shape_that_overflows_or_outgrows_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let overflow = dir.path().join("overflow.npy");
    raw_npy(
        &overflow,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
        &[],
    );
    let short = dir.path().join("short.npy");
    raw_npy(
        &short,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100), }",
        &[0; 64],
    );
    let out = dir.path().join("out.npy");
    for (file, message) in [
        (
            &overflow,
            "the shape [4294967296, 4294967296, 16] in its .npy header overflows",
        ),
        (
            &short,
            "(4000000000000 bytes) but the file holds 64 bytes of data",
        ),
    ] {
        fails_with(
            rankseg()
                .args(["predict", "--probs"])
                .arg(file)
                .arg("--out")
                .arg(&out),
            message,
        );
        fails_with(
            rankseg()
                .args(["score", "--num-classes", "2", "--pred"])
                .arg(file)
                .arg("--label")
                .arg(file),
            message,
        );
    }
    assert!(!out.exists());
}

/// KiTS19 volumes in `kits/<folder>/` (two slices, the second with tumor).
fn kits_case(kits: &Path, folder: &str) {
    use ndarray::Array3;
    let case = kits.join(folder);
    std::fs::create_dir_all(&case).unwrap();
    let ct = Array3::from_shape_fn((2, 6, 5), |(s, y, x)| (s * 50 + y * 10 + x) as f32);
    let seg = Array3::from_shape_fn((2, 6, 5), |(s, y, _)| if s == 1 && y < 3 { 2u8 } else { 0 });
    nifti::writer::WriterOptions::new(case.join("imaging.nii.gz"))
        .write_nifti(&ct)
        .unwrap();
    nifti::writer::WriterOptions::new(case.join("segmentation.nii.gz"))
        .write_nifti(&seg)
        .unwrap();
}

#[test]
fn kits_folders_with_non_ascii_names() {
    // The experiment keeps the last five characters: here digits after a non-ASCII one.
    let dir = tempfile::tempdir().unwrap();
    kits_case(&dir.path().join("kits"), "case_é00003");
    rankseg()
        .args(["prepare", "kits", "--data_dir"])
        .arg(dir.path())
        .assert()
        .success()
        .stderr(contains("1 slices written"));
    assert!(dir.path().join("kits/train/00003_1.npz").is_file());

    // Here the last five characters are no case number: named, nothing written.
    let dir = tempfile::tempdir().unwrap();
    kits_case(&dir.path().join("kits"), "case_0001é");
    fails_with(
        rankseg().args(["prepare", "kits", "--data_dir"]).arg(dir.path()),
        "case_0001é: the case id \"0001é\" is not a number; rename it to case_<5 digits>",
    );
    assert!(!dir.path().join("kits/train").exists());
}

#[test]
fn a_corrupt_nifti_volume_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let kits = dir.path().join("kits");
    kits_case(&kits, "case_00000");
    std::fs::write(kits.join("case_00000/imaging.nii.gz"), b"\x1f\x8bnot gzip at all").unwrap();
    fails_with(
        rankseg().args(["prepare", "kits", "--data_dir"]).arg(dir.path()),
        "cannot read the NIfTI file",
    );
    assert!(!kits.join("train").exists());
}

#[test]
fn a_corrupt_jpeg_gives_libjpegs_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("voc");
    copy_dir(&root("tests/fixtures/exp/voc"), &data);
    let images = data.join("VOCdevkit/VOC2012/JPEGImages");
    let victim = std::fs::read_dir(&images)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    // Past the SOI marker, a marker the decoder cannot parse.
    bytes[2..8].copy_from_slice(&[0xff, 0x01, 0xff, 0x02, 0x00, 0x00]);
    std::fs::write(&victim, &bytes).unwrap();
    let out = dir.path().join("results");
    let stderr = fails_with(
        rankseg()
            .args(["exp", "--test-only", "--data_dir"])
            .arg(&data)
            .args(["--data_yaml"])
            .arg(root("tests/fixtures/exp/voc_small.yaml"))
            .args([
                "--test_yaml",
                "test_iou",
                "--predict_yaml",
                "argmax",
                "--model_checkpoint",
            ])
            .arg(root("tests/fixtures/exp/models/segformer_voc"))
            .arg("--output_dir")
            .arg(&out),
        "not a decodable JPEG (libjpeg fatal error: ",
    );
    assert!(
        stderr.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
    assert!(!out.join("argmax.metrics.json").exists());
}

/// A local stand-in for the hub answering every request with `status`; returns its URL.
fn fake_hub(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

fn hub_logits(endpoint: &str, dir: &Path) -> Command {
    let yaml = dir.join("hub.yaml");
    std::fs::write(&yaml, "method: segformer\nhub_repo: acme/tiny-segformer\n").unwrap();
    let mut cmd = logits_cmd(
        &yaml,
        &root("tests/fixtures/models/segformer_tiny/input.npy"),
        &dir.join("out.npy"),
    );
    cmd.env("HF_HOME", dir.join("hf"))
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    cmd
}

#[test]
fn hub_errors_are_reported_as_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        &mut hub_logits(&fake_hub("401 Unauthorized"), dir.path()),
        "refused config.json (HTTP 401): the repo is private, gated or does not exist",
    );
    fails_with(
        &mut hub_logits(&fake_hub("404 Not Found"), dir.path()),
        "acme/tiny-segformer@main: the repo has no config.json",
    );
    fails_with(
        &mut hub_logits(&fake_hub("503 Service Unavailable"), dir.path()),
        "answered HTTP 503 for config.json",
    );
    // Nothing listens on a port just released.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    fails_with(
        &mut hub_logits(&closed, dir.path()),
        "cannot reach the Hugging Face hub for config.json",
    );
    assert!(!dir.path().join("out.npy").exists());
}
