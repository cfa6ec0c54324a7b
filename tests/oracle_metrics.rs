//! `rankseg score` against an independent implementation of the reference metrics
//! (tests/fixtures/metrics, made by scripts/reference_metrics.py).

mod common;

use assert_cmd::Command;

#[test]
fn score_matches_the_reference_metrics() {
    let mut failures = Vec::new();
    for case in common::fixtures("metrics") {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let p = common::params(&case);
        let output = Command::cargo_bin("rankseg")
            .unwrap()
            .args(["score", "--pred"])
            .arg(case.join("pred.npy"))
            .arg("--label")
            .arg(case.join("label.npy"))
            .args(["--num-classes", &p["num_classes"].to_string()])
            .args(["--ignore-index", &p["ignore_index"].to_string()])
            .args(["--q", &p["q"].to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ours: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap();
        let expected: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let our_keys: Vec<&String> = ours.keys().collect();
        let expected_keys: Vec<&String> = expected.keys().collect();
        if our_keys != expected_keys {
            failures.push(format!("{name}: keys {our_keys:?} expected {expected_keys:?}"));
            continue;
        }
        for (key, want) in &expected {
            let got = &ours[key];
            let close = match (got.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                (None, None) => true,
                _ => false,
            };
            if !close {
                failures.push(format!("{name}: {key} = {got}, expected {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn labels_outside_the_classes_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let label = tmp.path().join("label.npy");
    rankseg::tensor_io::write_npy(&label, &[1, 2, 2], &[0i64, 1, 7, 255]).unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["score", "--num-classes", "3", "--pred"])
        .arg(&label)
        .arg("--label")
        .arg(&label)
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "label value 7 is outside the classes 0..2",
        ));
}
