//! `rankseg exp --test-only` end to end, against the Python pipeline of
//! scripts/make_exp_fixtures.py (the experiment's own dataset, inference and predictor code,
//! transformers, and the reference metrics) on the tiny datasets in tests/fixtures/exp, and
//! on datasets written on the fly in each layout.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

mod common;
use common::copy_dir;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exp")
        .join(path)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `rankseg exp --test-only` with the given flags; panics with its stderr on failure.
fn exp(args: &[&str]) -> std::process::Output {
    let out = Command::cargo_bin("rankseg")
        .unwrap()
        .arg("exp")
        .arg("--test-only")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rankseg exp {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of a shipped test yaml with `save_pred: True`, in `dir`.
fn saving_test_yaml(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}_save.yaml"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/test/{name}.yaml"));
    let text = std::fs::read_to_string(shipped)
        .unwrap()
        .replace("save_pred: False", "save_pred: True");
    std::fs::write(&path, text).unwrap();
    path
}

/// One evaluation: `exp` on `data` (dir, yaml) with a model and predictor; its metrics.json.
fn evaluate(data: (&Path, &str), test_yaml: &str, model: Option<&Path>, predict: &str, out: &Path) -> Value {
    let mut args = vec![
        "--data_dir",
        path_str(data.0),
        "--data_yaml",
        data.1,
        "--test_yaml",
        test_yaml,
    ];
    args.extend(["--predict_yaml", predict, "--output_dir", path_str(out)]);
    if let Some(model) = model {
        args.extend(["--model_checkpoint", path_str(model)]);
    }
    exp(&args);
    read_json(&out.join(format!("{predict}.metrics.json")))
}

/// Every reference key is there, in order, within `tolerance` (null = a mean over nothing).
fn assert_metrics(got: &Value, want: &Value, tolerance: f64, what: &str) {
    let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
    let got_keys: Vec<&String> = got.keys().collect();
    let want_keys: Vec<&String> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "{what}: metric keys");
    for (key, w) in want {
        let g = &got[key];
        match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() <= tolerance, "{what}: {key} = {g}, expected {w}"),
            _ => assert_eq!(g, w, "{what}: {key}"),
        }
    }
}

#[test]
fn voc_matches_the_python_pipeline() {
    let expected = expected();
    let model = fixture("models/segformer_voc");
    let data = fixture("voc");
    let small_yaml = fixture("voc_small.yaml");
    for (name, data_yaml) in [
        ("voc_crop512", "pascal_voc"),
        ("voc_small", path_str(&small_yaml)),
    ] {
        let out = tempfile::tempdir().unwrap();
        for (predict, tolerance) in [("argmax", 1e-9), ("rankseg_rma", 0.05), ("rankseg_rma_iou", 0.05)] {
            let got = evaluate((&data, data_yaml), "test_iou", Some(&model), predict, out.path());
            let want = &expected[name][predict];
            // The probabilities differ from torch's by float rounding, which moves a few
            // RMA cut points; argmax is exact.
            assert_metrics(&got, &want["metrics"], tolerance, &format!("{name} {predict}"));
            let csv = std::fs::read_to_string(out.path().join(format!("{predict}.per_image.csv"))).unwrap();
            let ids: Vec<&str> = csv
                .lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap())
                .collect();
            let want_ids: Vec<&str> = want["image_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(
                ids, want_ids,
                "{name} {predict}: scored images in val.txt order, the all-ignored one left out"
            );
            if predict == "argmax" {
                let ious: Vec<f64> = csv
                    .lines()
                    .skip(1)
                    .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
                    .collect();
                for (got, want) in ious.iter().zip(want["per_image_iou"].as_array().unwrap()) {
                    assert!(
                        (got - want.as_f64().unwrap()).abs() < 1e-9,
                        "{name}: per-image IoU {got} vs {want}"
                    );
                }
            }
        }
        let run = read_json(&out.path().join("run.json"));
        for predict in ["argmax", "rankseg_rma", "rankseg_rma_iou"] {
            let entry = &run["predictions"][predict];
            assert_eq!(entry["configs"]["data_yaml"]["values"]["num_classes"], 21);
            assert_eq!(entry["checkpoint"]["sha256"].as_str().unwrap().len(), 64);
            assert_eq!(entry["images"], 7, "{predict}: every listed image was read");
            assert_eq!(entry["scored_images"], 6);
            assert!(entry["seconds"]["forward"].as_f64().unwrap() > 0.0);
        }
    }
}

fn read_npy_ints(path: &Path) -> Vec<i64> {
    rankseg::tensor_io::read_ints(path).unwrap().data
}

#[test]
fn saved_predictions_score_to_metrics_json() {
    let out = tempfile::tempdir().unwrap();
    let test_yaml = saving_test_yaml(out.path(), "test_iou_ece");
    let results = out.path().join("results");
    let voc = fixture("voc");
    let data = (voc.as_path(), "pascal_voc");
    let model = fixture("models/segformer_voc");
    let metrics = evaluate(data, path_str(&test_yaml), Some(&model), "rankseg_rma", &results);
    for key in ["ECED", "ECEI", "SCED", "SCEI"] {
        assert!(metrics[key].as_f64().is_some(), "test_iou_ece asks for {key}");
    }
    // Stack the saved class maps and labels (all 512x512 after padding) and score them.
    let pred_dir = results.join("rankseg_rma.pred");
    let ids =
        std::fs::read_to_string(fixture("voc/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt")).unwrap();
    let (mut preds, mut labels) = (Vec::new(), Vec::new());
    let mut count = 0;
    for id in ids.lines().filter(|l| !l.trim().is_empty()) {
        let (pred, h, w) = rankseg::data::read_label(&pred_dir.join(format!("{id}_pred.png"))).unwrap();
        let (label, _, _) = rankseg::data::read_label(&pred_dir.join(format!("{id}.png"))).unwrap();
        assert_eq!((h, w), (512, 512));
        preds.extend(pred);
        labels.extend(label);
        count += 1;
    }
    let pred_npy = out.path().join("pred.npy");
    let label_npy = out.path().join("label.npy");
    rankseg::tensor_io::write_npy(&pred_npy, &[count, 512, 512], &preds).unwrap();
    // Saved labels mark ignored pixels with num_classes (21).
    rankseg::tensor_io::write_npy(&label_npy, &[count, 512, 512], &labels).unwrap();
    assert!(
        read_npy_ints(&label_npy).contains(&21),
        "ignored pixels are saved as 21"
    );
    let scored = Command::cargo_bin("rankseg")
        .unwrap()
        .args([
            "score",
            "--pred",
            path_str(&pred_npy),
            "--label",
            path_str(&label_npy),
        ])
        .args(["--num-classes", "21", "--ignore-index", "21", "--q", "5"])
        .output()
        .unwrap();
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let scored: Value = serde_json::from_slice(&scored.stdout).unwrap();
    for (key, value) in scored.as_object().unwrap() {
        let got = metrics[key].as_f64();
        assert_eq!(
            got,
            value.as_f64(),
            "{key}: metrics.json vs score on the saved predictions"
        );
    }
}

#[test]
fn probs_dataset_matches_the_oracle_exactly() {
    let expected = expected();
    let out = tempfile::tempdir().unwrap();
    let yaml = out.path().join("probs.yaml");
    std::fs::write(
        &yaml,
        "dataset: probs\nnum_classes: 21\nignore_index: 255\nimage_prefix: /probs/\nimage_suffix: .npy\n\
         label_prefix: /probs/\nlabel_suffix: _label.npy\n",
    )
    .unwrap();
    for (predict, want) in expected["probs"]["predictors"].as_object().unwrap() {
        let predict_yaml =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/predict/{predict}.yaml"));
        exp(&[
            "--data_dir",
            path_str(&fixture("")),
            "--data_yaml",
            path_str(&yaml),
            "--predict_yaml",
            path_str(&predict_yaml),
            "--output_dir",
            path_str(out.path()),
        ]);
        let got = read_json(&out.path().join(format!("{predict}.metrics.json")));
        assert_metrics(&got, &want["metrics"], 1e-9, &format!("probs {predict}"));
    }
}

#[test]
fn lits_matches_the_experiment_per_case() {
    let expected = expected();
    let out = tempfile::tempdir().unwrap();
    for predict in ["argmax", "rankseg_rma", "rankseg_ba"] {
        let (slices, yaml) = (fixture("lits_slices"), fixture("lits_small.yaml"));
        let data = (slices.as_path(), path_str(&yaml));
        let got = evaluate(
            data,
            "test_iou",
            Some(&fixture("models/segformer_bin")),
            predict,
            out.path(),
        );
        let want = &expected["lits_small"]["predictors"][predict]["metrics"];
        assert_metrics(&got, want, 1e-9, &format!("lits {predict}"));
    }
    let csv = std::fs::read_to_string(out.path().join("argmax.per_image.csv")).unwrap();
    assert!(csv.starts_with("image,case,IoU,Dice\n"), "{csv}");
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| l.split(',').nth(1) == Some("0") || l.split(',').nth(1) == Some("1")));
}

#[test]
fn prepare_lits_matches_the_experiments_slices() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let lits = dir.path().join("lits");
    std::fs::create_dir_all(&lits).unwrap();
    for entry in std::fs::read_dir(fixture("lits_nifti/lits")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, lits.join(path.file_name().unwrap())).unwrap();
    }
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["prepare", "lits", "--data_dir", path_str(dir.path())])
        .assert()
        .success()
        .stderr(contains("4 slices written"));
    for slice in expected["lits_prepare"]["slices"].as_array().unwrap() {
        let name = slice["name"].as_str().unwrap();
        let mut npz = rankseg::tensor_io::Npz::open(&lits.join("train").join(name)).unwrap();
        let rankseg::tensor_io::ProbArray::F64(ct, shape) = npz.probs("ct").unwrap() else {
            panic!("{name}: ct must be float64");
        };
        assert_eq!(shape, vec![512, 512]);
        let sum: f64 = ct.iter().sum();
        assert!(
            (sum - slice["ct_sum"].as_f64().unwrap()).abs() < 1e-6,
            "{name}: ct sum {sum}"
        );
        for (key, (y, x)) in [
            ("ct_0_0", (0, 0)),
            ("ct_100_200", (100, 200)),
            ("ct_256_256", (256, 256)),
        ] {
            assert_eq!(ct[y * 512 + x], slice[key].as_f64().unwrap(), "{name}: {key}");
        }
        let mask = npz.ints("mask").unwrap();
        assert_eq!(mask.dtype, "'|i1'");
        let count = |v: i64| mask.data.iter().filter(|&&m| m == v).count() as u64;
        for (value, want) in slice["mask_counts"].as_object().unwrap() {
            assert_eq!(
                count(value.parse().unwrap()),
                want.as_u64().unwrap(),
                "{name}: mask value {value}"
            );
        }
    }
}

/// A data yaml of `dataset` with 21 classes (so the VOC test model fits) and a small crop.
fn layout_yaml(dir: &Path, dataset: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{dataset}.yaml"));
    std::fs::write(
        &path,
        format!(
            "dataset: {dataset}\nin_channels: 3\nnum_classes: 21\ncrop_size: [48, 64]\nignore_index: 255\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(data).unwrap();
}

fn write_jpeg(path: &Path, width: usize, height: usize, rgb: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    compress.set_size(width, height);
    compress.set_quality(90.0);
    let mut started = compress.start_compress(Vec::new()).unwrap();
    started.write_scanlines(rgb).unwrap();
    std::fs::write(path, started.finish().unwrap()).unwrap();
}

fn pattern_rgb(width: usize, height: usize, seed: usize) -> Vec<u8> {
    (0..width * height * 3)
        .map(|i| ((i * 7 + seed * 31) % 251) as u8)
        .collect()
}

/// Runs argmax with prediction PNGs and returns the saved label of `id` (padded canvas).
fn saved_label(data_dir: &Path, data_yaml: &Path, out: &Path, id: &str) -> (Vec<i64>, usize, usize) {
    let test_yaml = saving_test_yaml(out, "test_iou");
    let model = fixture("models/segformer_voc");
    evaluate(
        (data_dir, path_str(data_yaml)),
        path_str(&test_yaml),
        Some(&model),
        "argmax",
        &out.join("results"),
    );
    rankseg::data::read_label(&out.join(format!("results/argmax.pred/{id}.png"))).unwrap()
}

#[test]
fn cityscapes_labels_come_from_label_ids_when_train_ids_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stem = "aachen_000000_000019";
    let (w, h) = (70usize, 40usize);
    write_png(
        &data.join(format!(
            "cityscapes/leftImg8bit/val/aachen/{stem}_leftImg8bit.png"
        )),
        w as u32,
        h as u32,
        png::ColorType::Rgb,
        &pattern_rgb(w, h, 1),
    );
    // Label ids: 7 (road -> 0), 26 (car -> 13), 0 (unlabeled -> 255).
    let ids: Vec<u8> = (0..w * h).map(|i| [7u8, 26, 0][i % 3]).collect();
    write_png(
        &data.join(format!("cityscapes/gtFine/val/aachen/{stem}_gtFine_labelIds.png")),
        w as u32,
        h as u32,
        png::ColorType::Grayscale,
        &ids,
    );
    let yaml = layout_yaml(
        dir.path(),
        "cityscapes",
        "image_prefix: /leftImg8bit/\nimage_suffix: _leftImg8bit.png\nlabel_prefix: /gtFine/\nlabel_suffix: _gtFine_labelTrainIds.png\n",
    );
    let (label, lh, lw) = saved_label(&data, &yaml, dir.path(), stem);
    // 70x40 is padded to 70x48: 4 rows above, 4 below, ignored (saved as 21).
    assert_eq!((lh, lw), (48, 70));
    assert!(label[..4 * 70].iter().all(|&v| v == 21));
    let first_row: Vec<i64> = label[4 * 70..4 * 70 + 6].to_vec();
    assert_eq!(first_row, vec![0, 13, 21, 0, 13, 21]);
}

#[test]
fn ade20k_reduces_the_zero_label() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = data.join("ade/ADEChallengeData2016");
    let (w, h) = (64usize, 48usize);
    write_jpeg(
        &root.join("images/validation/ADE_val_00000001.jpg"),
        w,
        h,
        &pattern_rgb(w, h, 2),
    );
    // 0 (other) -> ignored, 1 -> 0, 21 -> 20.
    let labels: Vec<u8> = (0..w * h).map(|i| [0u8, 1, 21][i % 3]).collect();
    write_png(
        &root.join("annotations/validation/ADE_val_00000001.png"),
        w as u32,
        h as u32,
        png::ColorType::Grayscale,
        &labels,
    );
    let yaml = layout_yaml(
        dir.path(),
        "ade20k",
        "reduce_zero_label: True\nimage_prefix: /images/\nimage_suffix: .jpg\nlabel_prefix: /annotations/\nlabel_suffix: .png\n",
    );
    let (label, lh, lw) = saved_label(&data, &yaml, dir.path(), "ADE_val_00000001");
    assert_eq!((lh, lw), (48, 64));
    assert_eq!(label[..6].to_vec(), vec![21, 0, 20, 21, 0, 20]);
}

#[test]
fn kits_volumes_prepare_and_evaluate_per_case() {
    use ndarray::Array3;
    let dir = tempfile::tempdir().unwrap();
    let kits = dir.path().join("kits");
    // Five cases so that fold 0 of num_cases 5 validates case 0 alone.
    for case in 0..5u32 {
        let case_dir = kits.join(format!("case_{case:05}"));
        std::fs::create_dir_all(&case_dir).unwrap();
        // KiTS19 volumes are (slices, H, W); slice 1 shows tumor (2), slice 0 only kidney.
        let ct = Array3::from_shape_fn((2, 12, 10), |(s, y, x)| (s * 50 + y * 10 + x) as f32 - 100.0);
        let seg = Array3::from_shape_fn((2, 12, 10), |(s, y, x)| {
            if s == 1 && y < 6 && x < 5 {
                2u8
            } else if y > 8 {
                1
            } else {
                0
            }
        });
        nifti::writer::WriterOptions::new(case_dir.join("imaging.nii.gz"))
            .write_nifti(&ct)
            .unwrap();
        nifti::writer::WriterOptions::new(case_dir.join("segmentation.nii.gz"))
            .write_nifti(&seg)
            .unwrap();
    }
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["prepare", "kits", "--data_dir", path_str(dir.path())])
        .assert()
        .success()
        .stderr(contains("5 slices written"));
    assert!(kits.join("train/00000_1.npz").is_file());
    assert!(
        !kits.join("train/00000_0.npz").exists(),
        "slices without tumor are left out"
    );
    let yaml = dir.path().join("kits.yaml");
    std::fs::write(
        &yaml,
        "dataset: kits\nfold: 0\nnum_cases: 5\nin_channels: 1\nnum_classes: 2\nwindow_low: -200\nwindow_high: 300\n\
         crop_size: [32, 32]\nignore_index: 255\n",
    )
    .unwrap();
    let out = dir.path().join("results");
    evaluate(
        (dir.path(), path_str(&yaml)),
        "test_iou",
        Some(&fixture("models/segformer_bin")),
        "rankseg_rma",
        &out,
    );
    let csv = std::fs::read_to_string(out.join("rankseg_rma.per_image.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "fold 0 of 5 cases holds case 0 only: {csv}");
    assert!(rows[0].starts_with("00000_1,0,"), "{csv}");
}

#[test]
fn a_finished_run_is_not_redone_and_any_changed_input_needs_force() {
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    copy_dir(&fixture("voc"), data.path());
    let small_yaml = fixture("voc_small.yaml");
    let args = |data_yaml: &str| -> Vec<String> {
        [
            "--data_dir",
            path_str(data.path()),
            "--data_yaml",
            data_yaml,
            "--model_checkpoint",
            path_str(&fixture("models/segformer_voc")),
            "--output_dir",
            path_str(out.path()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |data_yaml: &str, extra: &[&str]| {
        Command::cargo_bin("rankseg")
            .unwrap()
            .args(["exp", "--test-only"])
            .args(args(data_yaml))
            .args(extra)
            .assert()
    };
    run(path_str(&small_yaml), &[]).success();
    let metrics = out.path().join("argmax.metrics.json");
    let modified = std::fs::metadata(&metrics).unwrap().modified().unwrap();
    run(path_str(&small_yaml), &[])
        .success()
        .stderr(contains("nothing to do"));
    assert_eq!(std::fs::metadata(&metrics).unwrap().modified().unwrap(), modified);
    run("pascal_voc", &[])
        .code(1)
        .stderr(contains("--force"))
        .stderr(contains("config.data_yaml.name"));

    // One label changed in place, same size: the data digest sees it.
    let label = data
        .path()
        .join("VOCdevkit/VOC2012/SegmentationClassAug/2007_000033.png");
    let (mut pixels, info) = {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&label).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        (buf, info)
    };
    pixels[0] = if pixels[0] == 1 { 2 } else { 1 };
    write_png(
        &label,
        info.width,
        info.height,
        png::ColorType::Grayscale,
        &pixels[..info.buffer_size()],
    );
    run(path_str(&small_yaml), &[])
        .code(1)
        .stderr(contains("data.files"))
        .stderr(contains("--force"));
    assert_eq!(std::fs::metadata(&metrics).unwrap().modified().unwrap(), modified);
    run(path_str(&small_yaml), &["--force"]).success();
    assert_ne!(std::fs::metadata(&metrics).unwrap().modified().unwrap(), modified);
    let run_json = read_json(&out.path().join("run.json"));
    let parts = &run_json["predictions"]["argmax"]["fingerprint"]["parts"];
    for key in [
        "build.git_revision",
        "build.rankseg",
        "device",
        "checkpoint.weights",
        "checkpoint.config",
        "data.files",
    ] {
        assert!(parts[key].is_string(), "the fingerprint covers {key}: {parts}");
    }
}

#[test]
fn bad_configs_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("voc_typo.yaml");
    let text = std::fs::read_to_string(fixture("voc_small.yaml"))
        .unwrap()
        .replace("crop_size", "crop_sise");
    std::fs::write(&yaml, text).unwrap();
    let model = fixture("models/segformer_voc");
    let base = [
        "exp",
        "--test-only",
        "--model_checkpoint",
        path_str(&model),
        "--output_dir",
        path_str(dir.path()),
    ];
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(base)
        .args([
            "--data_dir",
            path_str(&fixture("voc")),
            "--data_yaml",
            path_str(&yaml),
        ])
        .assert()
        .failure()
        .stderr(contains("voc_typo.yaml"))
        .stderr(contains("unknown field `crop_sise`"));
    let predict = dir.path().join("rma_typo.yaml");
    std::fs::write(&predict, "METHOD: rankseg_rma\nPARAMS:\n  opt_metrics: dice\n").unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(base)
        .args([
            "--data_dir",
            path_str(&fixture("voc")),
            "--data_yaml",
            "pascal_voc",
        ])
        .args(["--predict_yaml", path_str(&predict)])
        .assert()
        .failure()
        .stderr(contains("rma_typo.yaml"))
        .stderr(contains("unknown field `opt_metrics`"));
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(base)
        .args([
            "--data_dir",
            path_str(&fixture("voc")),
            "--data_yaml",
            "no_such_dataset",
        ])
        .assert()
        .failure()
        .stderr(contains("configs/datas/"))
        .stderr(contains("pascal_voc"));
    // A model for 21 classes on two-class data: named, not a panic.
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(base)
        .args(["--data_yaml", path_str(&fixture("lits_small.yaml"))])
        .args(["--data_dir", path_str(&fixture("lits_slices"))])
        .assert()
        .failure()
        .stderr(contains("num_classes"));
    // Training is a later issue.
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["exp", "--data_dir", ".", "--output_dir", path_str(dir.path())])
        .assert()
        .failure()
        .stderr(contains("--test-only"));
}

#[test]
fn multi_scale_with_flip_matches_the_experiment() {
    let expected = expected();
    let out = tempfile::tempdir().unwrap();
    for (predict, tolerance) in [("argmax", 1e-9), ("rankseg_rma", 0.05)] {
        // The kebab-case spellings of the flags work too.
        exp(&[
            "--data-dir",
            path_str(&fixture("voc")),
            "--data-yaml",
            path_str(&fixture("voc_small.yaml")),
            "--test-yaml",
            path_str(&fixture("test_ms.yaml")),
            "--model-checkpoint",
            path_str(&fixture("models/segformer_voc")),
            "--predict-yaml",
            predict,
            "--output-dir",
            path_str(out.path()),
        ]);
        let got = read_json(&out.path().join(format!("{predict}.metrics.json")));
        let want = &expected["voc_small_ms"][predict]["metrics"];
        assert_metrics(&got, want, tolerance, &format!("multi-scale {predict}"));
    }
}
