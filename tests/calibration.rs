//! ECED/ECEI/SCED/SCEI of `rankseg exp` against the experiment's own ece_metric.py and
//! sce_metric.py, on the probs datasets of scripts/make_calibration_fixtures.py.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The reference accumulates its bins in float32 and this project in float64: they agree
/// to float32 rounding.
const RELATIVE: f64 = 1e-6;

#[test]
fn ece_and_sce_match_the_experiment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/calibration");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 4, "fixtures under {}", root.display());
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/test/test_iou_ece.yaml");
    let test_text = std::fs::read_to_string(shipped).unwrap();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected = read_json(&case.join("expected.json"));
        let tmp = tempfile::tempdir().unwrap();
        let data_yaml = tmp.path().join("data.yaml");
        std::fs::write(
            &data_yaml,
            format!(
                "dataset: probs\nnum_classes: {}\nignore_index: {}\nimage_prefix: /probs/\nimage_suffix: .npy\n\
                 label_prefix: /labels/\nlabel_suffix: .npy\n",
                expected["num_classes"], expected["ignore_index"]
            ),
        )
        .unwrap();
        let test_yaml = tmp.path().join("test.yaml");
        std::fs::write(
            &test_yaml,
            test_text.replace("num_bins: 10", &format!("num_bins: {}", expected["num_bins"])),
        )
        .unwrap();
        let out = tmp.path().join("out");
        Command::cargo_bin("rankseg")
            .unwrap()
            .args(["exp", "--test-only", "--data_dir"])
            .arg(&case)
            .arg("--data_yaml")
            .arg(&data_yaml)
            .arg("--test_yaml")
            .arg(&test_yaml)
            .arg("--output_dir")
            .arg(&out)
            .assert()
            .success();
        let got = read_json(&out.join("argmax.metrics.json"));
        for (key, want) in expected["values"].as_object().unwrap() {
            let (g, w) = (got[key].as_f64().unwrap(), want.as_f64().unwrap());
            assert!(
                (g - w).abs() <= RELATIVE * w.abs(),
                "{name}: {key} = {g}, the experiment gives {w} (relative {:.1e})",
                (g - w).abs() / w.abs()
            );
        }
    }
}
