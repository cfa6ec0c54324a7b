//! `rankseg table` on synthetic finished runs: the papers' layout, the deltas, and paired
//! bootstrap intervals that behave as intervals should.

use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::json;

/// A finished `exp` output directory with the given predictions' per-image IoU values.
fn fake_run(dir: &Path, model: &str, data: &str, predictions: &[(&str, Vec<f64>)]) {
    fake_run_of(dir, model, data, "w0", predictions)
}

/// The same, evaluated with the checkpoint whose digest `weights` stands for.
fn fake_run_of(dir: &Path, model: &str, data: &str, weights: &str, predictions: &[(&str, Vec<f64>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = serde_json::Map::new();
    for (name, ious) in predictions {
        let mean = ious.iter().sum::<f64>() / ious.len() as f64;
        let metrics = json!({ "Acc": 90.0, "mIoUI": mean, "mDiceI": mean + 5.0 });
        std::fs::write(dir.join(format!("{name}.metrics.json")), metrics.to_string()).unwrap();
        let mut csv = String::from("image,IoU,Dice\n");
        for (i, v) in ious.iter().enumerate() {
            csv += &format!("img{i:03},{v},{}\n", v + 5.0);
        }
        std::fs::write(dir.join(format!("{name}.per_image.csv")), csv).unwrap();
        entries.insert(name.to_string(), run_entry(model, data, weights));
    }
    write_run_json(dir, entries);
}

/// A run.json entry as `exp` writes it; `weights` stands for the checkpoint's digest.
fn run_entry(model: &str, data: &str, weights: &str) -> serde_json::Value {
    json!({
        "model": model,
        "dataset": data,
        "configs": {},
        "predict": {},
        "data_dir": "/data",
        "checkpoint": null,
        "build": { "rankseg": "0", "git_revision": "x", "candle_core": "0", "polars": "0", "hf_hub": "0" },
        "device": "cpu",
        "threads": 1,
        "batch_size": 1,
        "fingerprint": { "digest": weights, "parts": { "checkpoint.weights": weights, "data.files": "d0" } },
        "images": 1,
        "scored_images": 1,
        "seconds": { "forward": 0.0, "predict": 0.0, "metric": 0.0 },
    })
}

fn write_run_json(dir: &Path, entries: serde_json::Map<String, serde_json::Value>) {
    let run = json!({ "format": 2, "predictions": entries });
    std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
}

fn ious(n: usize, offset: f64, spread: f64) -> Vec<f64> {
    (0..n)
        .map(|i| 50.0 + offset + spread * ((i * 37 % 11) as f64 - 5.0))
        .collect()
}

#[test]
fn tables_have_the_papers_layout_and_intervals_around_the_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let base = ious(40, 0.0, 2.0);
    // RMA: +1 on every image but a little noise, so the interval is narrow and above zero.
    let better: Vec<f64> = base
        .iter()
        .enumerate()
        .map(|(i, v)| v + 1.0 + 0.1 * (i % 3) as f64)
        .collect();
    // A predictor that helps half the images and hurts the other half: interval spans zero.
    let mixed: Vec<f64> = base
        .iter()
        .enumerate()
        .map(|(i, v)| v + if i % 2 == 0 { 3.0 } else { -3.0 })
        .collect();
    fake_run(
        &dir.path().join("voc"),
        "segformer_mit_b0",
        "pascal_voc",
        &[
            ("argmax", base.clone()),
            ("rankseg_rma", better),
            ("rankseg_rma_iou", mixed),
        ],
    );
    fake_run(
        &dir.path().join("city"),
        "segformer_mit_b0",
        "cityscapes",
        &[("argmax", base.clone())],
    );
    let out = dir.path().join("tables/paper.md");
    Command::cargo_bin("rankseg")
        .unwrap()
        .args([
            "table",
            "--metric",
            "mIoUI",
            "--out",
            out.to_str().unwrap(),
            "--runs",
        ])
        .arg(dir.path().join("voc"))
        .arg(dir.path().join("city"))
        .assert()
        .success();
    let csv = std::fs::read_to_string(dir.path().join("tables/paper.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "model,prediction,pascal_voc,cityscapes");
    let base_mean = base.iter().sum::<f64>() / 40.0;
    assert_eq!(
        lines[1],
        format!("segformer_mit_b0,argmax,{base_mean:.2},{base_mean:.2}")
    );
    assert!(lines[2].starts_with("segformer_mit_b0,rankseg_rma,"), "{csv}");
    assert!(
        lines[2].contains("(+1.10)"),
        "mean delta 1 + 0.1 * mean(i % 3) = 1.0975: {csv}"
    );
    assert!(
        lines[2].ends_with(','),
        "no cityscapes RMA run: empty cell: {csv}"
    );

    let deltas = std::fs::read_to_string(dir.path().join("tables/paper.deltas.csv")).unwrap();
    let rows: Vec<Vec<&str>> = deltas.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{deltas}");
    let field = |row: &[&str], i: usize| -> f64 { row[i].parse().unwrap() };
    // Columns: model, prediction, dataset, value, baseline, delta, ci_low, ci_high, units.
    let (delta, lo, hi) = (field(&rows[0], 5), field(&rows[0], 6), field(&rows[0], 7));
    assert!(lo <= delta && delta <= hi && lo > 0.9 && hi < 1.3, "{deltas}");
    assert_eq!(rows[0][8], "40");
    let (delta, lo, hi) = (field(&rows[1], 5), field(&rows[1], 6), field(&rows[1], 7));
    assert!(lo < 0.0 && 0.0 < hi && lo <= delta && delta <= hi, "{deltas}");
    let markdown = std::fs::read_to_string(&out).unwrap();
    assert!(
        markdown.contains("| segformer_mit_b0 | rankseg_rma"),
        "{markdown}"
    );
    assert!(markdown.contains("95%"), "{markdown}");
}

#[test]
fn table_errors_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    fake_run(
        &dir.path().join("run"),
        "m",
        "d",
        &[("argmax", ious(5, 0.0, 1.0))],
    );
    let out = dir.path().join("t");
    Command::cargo_bin("rankseg")
        .unwrap()
        .args([
            "table",
            "--metric",
            "mIoUX",
            "--out",
            out.to_str().unwrap(),
            "--runs",
        ])
        .arg(dir.path().join("run"))
        .assert()
        .failure()
        .stderr(contains("mIoUX"))
        .stderr(contains("mIoUI"));
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["table", "--out", out.to_str().unwrap(), "--runs"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(contains("run.json"));
}

#[test]
fn ct_runs_bootstrap_over_cases() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("lits");
    std::fs::create_dir_all(&run).unwrap();
    // Three cases of four slices: the paired units are the cases, each the mean of its slices.
    for (name, shift) in [("argmax", 0.0), ("rankseg_rma", 2.0)] {
        let mut csv = String::from("image,case,IoU,Dice\n");
        for case in 0..3 {
            for slice in 0..4 {
                csv += &format!(
                    "{case}_{slice},{case},{},{}\n",
                    40.0 + case as f64 + slice as f64 + shift,
                    50.0
                );
            }
        }
        std::fs::write(run.join(format!("{name}.per_image.csv")), csv).unwrap();
        let metrics = json!({ "mIoUI": 42.5 + shift });
        std::fs::write(run.join(format!("{name}.metrics.json")), metrics.to_string()).unwrap();
    }
    let mut entries = serde_json::Map::new();
    for name in ["argmax", "rankseg_rma"] {
        entries.insert(name.into(), run_entry("segformer_mit_b0", "lits_fold0", "w0"));
    }
    write_run_json(&run, entries);
    let out = dir.path().join("t");
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["table", "--out", out.to_str().unwrap(), "--runs"])
        .arg(&run)
        .assert()
        .success();
    let deltas = std::fs::read_to_string(dir.path().join("t.deltas.csv")).unwrap();
    let row: Vec<&str> = deltas.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[8], "3", "three cases: {deltas}");
    assert_eq!(
        (row[6], row[7]),
        ("2.0", "2.0"),
        "every case improves by exactly 2: {deltas}"
    );
}

fn table(runs: &[&Path], out: &Path) -> assert_cmd::assert::Assert {
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["table", "--out", out.to_str().unwrap(), "--runs"])
        .args(runs)
        .assert()
}

#[test]
fn runs_of_one_model_from_two_checkpoints_get_their_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("seed0"), dir.path().join("seed1"));
    fake_run_of(
        &a,
        "unet_resnet50d",
        "lits_fold0",
        "w0",
        &[("argmax", ious(8, 0.0, 1.0)), ("rankseg_rma", ious(8, 1.0, 1.0))],
    );
    fake_run_of(
        &b,
        "unet_resnet50d",
        "lits_fold0",
        "w1",
        &[("argmax", ious(8, 5.0, 1.0)), ("rankseg_rma", ious(8, 7.0, 1.0))],
    );
    let out = dir.path().join("t");
    table(&[&a, &b], &out).success();
    let csv = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    for (run, argmax, rma) in [
        (&a, mean(ious(8, 0.0, 1.0)), mean(ious(8, 1.0, 1.0))),
        (&b, mean(ious(8, 5.0, 1.0)), mean(ious(8, 7.0, 1.0))),
    ] {
        let model = format!("unet_resnet50d [{}]", run.display());
        let row = |p: &str| {
            rows.iter()
                .find(|r| r.starts_with(&format!("{model},{p},")))
                .unwrap_or_else(|| panic!("no {model} {p} row in {csv}"))
                .to_string()
        };
        assert!(row("argmax").contains(&format!("{argmax:.2}")), "{csv}");
        // Each run's delta is against its own baseline.
        assert!(
            row("rankseg_rma").contains(&format!("{rma:.2} (+{:.2})", rma - argmax)),
            "{csv}"
        );
    }
}

#[test]
fn predictions_of_one_checkpoint_in_two_directories_share_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("argmax"), dir.path().join("rma"));
    fake_run_of(
        &a,
        "unet_resnet50d",
        "lits_fold0",
        "w0",
        &[("argmax", ious(8, 0.0, 1.0))],
    );
    fake_run_of(
        &b,
        "unet_resnet50d",
        "lits_fold0",
        "w0",
        &[("rankseg_rma", ious(8, 1.0, 1.0))],
    );
    let out = dir.path().join("t");
    table(&[&a, &b], &out).success();
    let csv = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
    let rma = ious(8, 1.0, 1.0).iter().sum::<f64>() / 8.0;
    assert!(
        csv.contains(&format!("unet_resnet50d,rankseg_rma,{rma:.2} (+1.00)")),
        "{csv}"
    );
}

#[test]
fn a_run_given_twice_or_an_unreadable_run_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fake_run(&a, "m", "d", &[("argmax", ious(4, 0.0, 1.0))]);
    let out = dir.path().join("t");
    table(&[&a, &a], &out).code(1).stderr(contains("given twice"));
    let b = dir.path().join("b");
    fake_run(&b, "m", "d", &[("argmax", ious(4, 0.0, 1.0))]);
    std::fs::write(
        b.join("run.json"),
        "{\"format\": 2, \"predictions\": {\"argmax\": {}}}",
    )
    .unwrap();
    table(&[&a, &b], &out)
        .code(1)
        .stderr(contains(b.join("run.json").display().to_string()));
    assert!(
        !dir.path().join("t.csv").exists(),
        "no table from unreadable runs"
    );
}
