//! Every predictor against rankseg 0.0.8's outputs (tests/fixtures/predict, made by
//! scripts/make_oracle_fixtures.py), through the command line exactly as users call it.

mod common;

use assert_cmd::Command;
use rankseg::tensor_io::{read_ints, read_probs};

#[test]
fn predict_matches_rankseg_on_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in common::fixtures("predict") {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.npy"));
        let output = Command::cargo_bin("rankseg")
            .unwrap()
            .arg("predict")
            .arg("--probs")
            .arg(case.join("probs.npy"))
            .arg("--out")
            .arg(&out)
            .args(common::predict_flags(&case))
            .output()
            .unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{name}: failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let ours = read_ints(&out).unwrap();
        let expected = read_ints(&case.join("expected.npy")).unwrap();
        if ours.shape != expected.shape || ours.dtype != expected.dtype {
            failures.push(format!(
                "{name}: got {:?} {} expected {:?} {}",
                ours.shape, ours.dtype, expected.shape, expected.dtype
            ));
            continue;
        }
        let differ = ours
            .data
            .iter()
            .zip(&expected.data)
            .filter(|(a, b)| a != b)
            .count();
        if differ > 0 {
            failures.push(format!("{name}: {differ} of {} values differ", ours.data.len()));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn float64_input_is_read_as_float64() {
    let case = common::fixtures("predict")
        .into_iter()
        .find(|c| c.ends_with("rma_dice_mc_f64"))
        .unwrap();
    assert!(matches!(
        read_probs(&case.join("probs.npy")).unwrap(),
        rankseg::tensor_io::ProbArray::F64(..)
    ));
}
