//! `rankseg ablate --quick`: the table's columns and invariants, and the plot.

use std::collections::{BTreeMap, BTreeSet};

use assert_cmd::Command;

#[test]
fn quick_ablation_table_holds_its_invariants() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["ablate", "--quick", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    // The plot decodes whole, at its size, and has its labels drawn (the built-in font) and
    // points in colour: not only the white background.
    let decoder = png::Decoder::new(std::fs::File::open(tmp.path().join("ablation.png")).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (900, 600));
    let rgb = &pixels[..frame.buffer_size()];
    assert!(
        rgb.chunks_exact(3).any(|p| p == [0, 0, 0]),
        "no black text or axes"
    );
    assert!(
        rgb.chunks_exact(3).any(|p| p[0] != p[1] || p[1] != p[2]),
        "no coloured points"
    );
    assert!(tmp.path().join("ablation.md").exists());

    let csv = std::fs::read_to_string(tmp.path().join("ablation.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "case",
            "solver",
            "metric",
            "expected_value",
            "std_error",
            "gap_to_best",
            "seconds"
        ]
    );
    // (case, metric) -> solver -> (value, gap)
    let mut groups: BTreeMap<(String, String), BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        assert!(num(3).is_finite() && num(4) >= 0.0 && num(6) >= 0.0, "{line}");
        groups
            .entry((f[0].into(), f[2].into()))
            .or_default()
            .insert(f[1].into(), (num(3), num(5)));
    }
    let solvers: BTreeSet<&str> = ["argmax", "threshold", "rma", "ba", "trna", "ba+trna", "exact"].into();
    let metrics: BTreeSet<&str> = groups.keys().map(|(_, m)| m.as_str()).collect();
    assert_eq!(metrics, ["dice", "iou"].into());
    for ((case, metric), results) in &groups {
        let present: BTreeSet<&str> = results.keys().map(String::as_str).collect();
        assert_eq!(
            present, solvers,
            "{case} {metric}: the quick suite's rows all fit the exact solver"
        );
        let exact = results["exact"].0;
        for (solver, &(value, gap)) in results {
            assert!(
                value <= exact + 1e-9,
                "{case} {metric}: {solver} ({value}) beats exact ({exact})"
            );
            // The gap is measured from exact, the best; the csv rounds both to 6 decimals.
            assert!(
                (gap - (exact - value)).abs() <= 2e-6,
                "{case} {metric}: {solver}'s gap {gap} is not exact - value = {}",
                exact - value
            );
        }
        // On every case of the quick suite the metric-aware solvers improve on argmax (by
        // at least 0.0009 here): a solver that fell back to argmax would fail this.
        let argmax = results["argmax"].0;
        for solver in ["rma", "trna", "ba+trna", "exact"] {
            assert!(
                results[solver].0 > argmax + 5e-4,
                "{case} {metric}: {solver} ({}) does not improve on argmax ({argmax})",
                results[solver].0
            );
        }
        assert!(
            results["exact"].1.abs() < 1e-12,
            "{case} {metric}: exact is the best, its gap is 0"
        );
    }
}

#[test]
fn exact_refuses_rows_it_cannot_afford() {
    let tmp = tempfile::tempdir().unwrap();
    let probs = tmp.path().join("big.npy");
    let data = vec![0.5f32; 2 * 80 * 80];
    rankseg::tensor_io::write_npy(&probs, &[1, 2, 80, 80], &data).unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .arg("predict")
        .arg("--probs")
        .arg(&probs)
        .arg("--out")
        .arg(tmp.path().join("out.npy"))
        .args(["--solver", "exact", "--output-mode", "multilabel"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("at most 4096 pixels"));
    assert!(!tmp.path().join("out.npy").exists());
}
