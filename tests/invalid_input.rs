//! Bad input: a message that names the problem, a non-zero exit that is not a panic, and
//! no output file.

use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/invalid")
        .join(name)
}

fn predict_fails(probs: &Path, extra: &[&str], message: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.npy");
    Command::cargo_bin("rankseg")
        .unwrap()
        .arg("predict")
        .arg("--probs")
        .arg(probs)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .assert()
        .code(1)
        .stderr(contains(message))
        .stderr(contains("panicked").not());
    assert!(!out.exists(), "an output was written for {}", probs.display());
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn bad_arrays_are_rejected_by_name() {
    let cases = [
        ("nan.npy", "only finite values"),
        ("inf.npy", "only finite values"),
        ("neg_inf.npy", "only finite values"),
        ("greater_than_one.npy", "in the range [0, 1]"),
        ("negative.npy", "in the range [0, 1]"),
        ("too_few_dims_2x3.npy", "shape (batch, classes, *spatial)"),
        ("no_classes_1x0x4x4.npy", "at least one class"),
        (
            "empty_spatial_1x3x0x4.npy",
            "spatial dimensions must be non-empty",
        ),
        ("int32_dtype.npy", "must be float32 or float64"),
        ("fortran_order.npy", "Fortran order"),
        ("single_channel_multiclass.npy", "single-channel"),
    ];
    for (file, message) in cases {
        for solver in ["rma", "argmax"] {
            predict_fails(&fixture(file), &["--solver", solver], message);
        }
        // One channel is valid input for per-class masks.
        if file != "single_channel_multiclass.npy" {
            predict_fails(
                &fixture(file),
                &["--solver", "threshold", "--output-mode", "multilabel"],
                message,
            );
        }
    }
}

#[test]
fn unsupported_options_are_rejected() {
    let probs =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/predict/rma_dice_mc_voc21/probs.npy");
    let cases: [(&[&str], &str); 14] = [
        (&["--smooth", "-1"], "smooth must be finite and >= 0"),
        (
            &["--pruning-prob", "1.5"],
            "pruning_prob must be in the range [0, 1]",
        ),
        (
            &["--unassigned-policy", "void", "--void-index", "3"],
            "inside the class range [0, 21)",
        ),
        (
            &["--void-index", "300"],
            "requires --output-mode multiclass and --unassigned-policy void",
        ),
        (
            &["--unassigned-policy", "void", "--output-mode", "multilabel"],
            "only supported with --output-mode multiclass",
        ),
        (&["--solver", "threshold"], "use --output-mode multilabel"),
        (
            &["--solver", "argmax", "--unassigned-policy", "void"],
            "does not take --unassigned-policy",
        ),
        (&["--solver", "magic"], "unknown solver 'magic'"),
        (&["--metric", "f1"], "unknown metric 'f1'"),
        (&["--solver", "ba"], "use --output-mode multilabel"),
        (
            &[
                "--solver",
                "trna",
                "--output-mode",
                "multilabel",
                "--metric",
                "iou",
            ],
            "optimises Dice only",
        ),
        (&["--solver", "exact"], "use --output-mode multilabel"),
        (&["--eps", "0.01"], "does not take --eps"),
        (
            &[
                "--solver",
                "ba+trna",
                "--output-mode",
                "multilabel",
                "--eps",
                "1.5",
            ],
            "eps must be in the range (0, 1)",
        ),
    ];
    for (flags, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.npy");
        let assert = Command::cargo_bin("rankseg")
            .unwrap()
            .arg("predict")
            .arg("--probs")
            .arg(&probs)
            .arg("--out")
            .arg(&out)
            .args(flags)
            .assert()
            .failure()
            .stderr(contains(message));
        assert!(!assert.get_output().status.success());
        assert!(!out.exists());
    }
}

#[test]
fn missing_and_corrupt_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.npy");
    std::fs::write(&junk, b"not an npy file").unwrap();
    predict_fails(&junk, &[], "junk.npy is not a readable .npy file");
    predict_fails(&tmp.path().join("absent.npy"), &[], "cannot open");
}

#[test]
fn failing_predict_leaves_an_existing_output_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.npy");
    std::fs::write(&out, b"previous result").unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .arg("predict")
        .arg("--probs")
        .arg(fixture("nan.npy"))
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
}
