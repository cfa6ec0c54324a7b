//! Config keys that used to be read and then ignored: each now does what it says or is
//! refused. Every test here fails on the old behaviour (noted per test).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exp")
        .join(path)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `rankseg exp --test-only` with `args`; its output, whether or not it succeeded.
fn exp(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("rankseg")
        .unwrap()
        .arg("exp")
        .arg("--test-only")
        .args(args)
        .output()
        .unwrap()
}

/// As `exp`, asserting success.
fn exp_ok(args: &[&str]) -> std::process::Output {
    let out = exp(args);
    assert!(
        out.status.success(),
        "rankseg exp {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics(out: &Path, predict: &str) -> serde_json::Map<String, Value> {
    let path = out.join(format!("{predict}.metrics.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn assert_close(got: &serde_json::Map<String, Value>, want: &serde_json::Map<String, Value>, tol: f64) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (key, w) in want {
        let (g, w) = (got[key].as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= tol, "{key}: {g} vs {w}");
    }
}

/// A copy of a shipped test yaml with `replace` pairs applied, in `dir`.
fn test_yaml(dir: &Path, name: &str, base: &str, replace: &[(&str, &str)]) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("configs/test/{base}.yaml"));
    let mut text = std::fs::read_to_string(shipped).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{base}.yaml has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn write_grey_png(path: &Path, width: u32, height: u32, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(data).unwrap();
}

const CLASSES: usize = 4;
const H: usize = 9;
const W: usize = 11;

/// A seeded (C, H, W) softmax map and a label that mostly follows it.
fn prob_map(seed: u64) -> (Vec<f64>, Vec<u8>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let dim = H * W;
    let logits: Vec<f64> = (0..CLASSES * dim).map(|_| 4.0 * next()).collect();
    let mut probs = vec![0.0; CLASSES * dim];
    let mut label = vec![0u8; dim];
    for i in 0..dim {
        let sum: f64 = (0..CLASSES).map(|c| logits[c * dim + i].exp()).sum();
        for c in 0..CLASSES {
            probs[c * dim + i] = logits[c * dim + i].exp() / sum;
        }
        let best = (0..CLASSES)
            .max_by(|&a, &b| probs[a * dim + i].total_cmp(&probs[b * dim + i]))
            .unwrap();
        label[i] = if next() < 0.7 {
            best as u8
        } else {
            (next() * CLASSES as f64) as u8
        };
    }
    (probs, label)
}

/// A probs dataset of `images` maps under `dir`, each passed through `map` and written as
/// float32 (or float64); returns the data yaml.
fn probs_dataset(dir: &Path, images: usize, f64_maps: bool, map: impl Fn(Vec<f64>) -> Vec<f64>) -> PathBuf {
    for k in 0..images {
        let (probs, label) = prob_map(k as u64 + 1);
        let probs = map(probs);
        let file = dir.join(format!("probs/img{k}.npy"));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        if f64_maps {
            rankseg::tensor_io::write_npy(&file, &[CLASSES, H, W], &probs).unwrap();
        } else {
            let probs: Vec<f32> = probs.iter().map(|&p| p as f32).collect();
            rankseg::tensor_io::write_npy(&file, &[CLASSES, H, W], &probs).unwrap();
        }
        write_grey_png(
            &dir.join(format!("labels/img{k}.png")),
            W as u32,
            H as u32,
            &label,
        );
    }
    let yaml = dir.join("probs.yaml");
    std::fs::write(
        &yaml,
        format!(
            "dataset: probs\nnum_classes: {CLASSES}\nignore_index: 255\nimage_prefix: /probs/\n\
             image_suffix: .npy\nlabel_prefix: /labels/\nlabel_suffix: .png\n"
        ),
    )
    .unwrap();
    yaml
}

/// Runs `predict` (a yaml path) on a probs dataset; its metrics.
fn run_probs(data: &Path, test: &Path, predict: &Path, out: &Path) -> serde_json::Map<String, Value> {
    exp_ok(&[
        "--data_dir",
        path_str(data),
        "--data_yaml",
        path_str(&data.join("probs.yaml")),
        "--test_yaml",
        path_str(test),
        "--predict_yaml",
        path_str(predict),
        "--output_dir",
        path_str(out),
    ]);
    metrics(out, predict.file_stem().unwrap().to_str().unwrap())
}

/// Old behaviour: a probs dataset's maps went to the predictor as they were.
#[test]
fn temperature_rescales_a_probs_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let t = 0.5;
    let raw = tmp.path().join("raw");
    let tempered = tmp.path().join("tempered");
    probs_dataset(&raw, 3, false, |p| p);
    // softmax(log p / T) by hand, per pixel over the classes.
    probs_dataset(&tempered, 3, false, |p| {
        let dim = H * W;
        let mut out = p.clone();
        for i in 0..dim {
            let sum: f64 = (0..CLASSES).map(|c| p[c * dim + i].powf(1.0 / t)).sum();
            for c in 0..CLASSES {
                out[c * dim + i] = p[c * dim + i].powf(1.0 / t) / sum;
            }
        }
        out
    });
    let ece = test_yaml(tmp.path(), "ece", "test_iou_ece", &[]);
    let hot = tmp.path().join("rma_t.yaml");
    std::fs::write(
        &hot,
        format!("METHOD: rankseg_rma\nPARAMS:\n  opt_metric: dice\n  temperature: {t}\n"),
    )
    .unwrap();
    let plain = tmp.path().join("rma.yaml");
    std::fs::write(&plain, "METHOD: rankseg_rma\nPARAMS:\n  opt_metric: dice\n").unwrap();

    let with_t = run_probs(&raw, &ece, &hot, &tmp.path().join("out_t"));
    let by_hand = run_probs(&tempered, &ece, &plain, &tmp.path().join("out_hand"));
    let without = run_probs(&raw, &ece, &plain, &tmp.path().join("out_plain"));
    assert_close(&with_t, &by_hand, 1e-6);
    let (a, b) = (
        with_t["ECED"].as_f64().unwrap(),
        without["ECED"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() > 1.0,
        "temperature {t} left ECED at {a} (untempered {b})"
    );

    // Values no map may hold are refused before the temperature could hide them.
    let bad = tmp.path().join("bad");
    probs_dataset(&bad, 1, false, |p| p.iter().map(|v| v * 1.5).collect());
    let out = exp(&[
        "--data_dir",
        path_str(&bad),
        "--data_yaml",
        path_str(&bad.join("probs.yaml")),
        "--predict_yaml",
        path_str(&hot),
        "--output_dir",
        path_str(&tmp.path().join("out_bad")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("img0.npy") && stderr.contains("[0, 1]"),
        "{stderr}"
    );
}

/// Old behaviour: float64 maps were cast to float32 without a word.
#[test]
fn float64_probs_say_they_are_cast() {
    let tmp = tempfile::tempdir().unwrap();
    let f64_dir = tmp.path().join("f64");
    let f32_dir = tmp.path().join("f32");
    probs_dataset(&f64_dir, 2, true, |p| p);
    probs_dataset(&f32_dir, 2, false, |p| p);
    let run = |data: &Path, out: &str| {
        let output = exp_ok(&[
            "--data_dir",
            path_str(data),
            "--data_yaml",
            path_str(&data.join("probs.yaml")),
            "--output_dir",
            path_str(&tmp.path().join(out)),
        ]);
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&f64_dir, "out64");
    assert_eq!(stderr.matches("cast to float32").count(), 1, "{stderr}");
    assert!(!run(&f32_dir, "out32").contains("cast to float32"));
    // The cast is what float32 input gives.
    assert_eq!(
        metrics(&tmp.path().join("out64"), "argmax"),
        metrics(&tmp.path().join("out32"), "argmax")
    );
}

/// Old behaviour: `ratios: [0.75]` predicted at scale 1, as `[1]` does.
#[test]
fn a_lone_scale_ratio_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, ratios: &str| {
        let yaml = test_yaml(tmp.path(), name, "test_iou_ece", &[("ratios: [1]", ratios)]);
        let out = tmp.path().join(name);
        exp_ok(&[
            "--data_dir",
            path_str(&fixture("voc")),
            "--data_yaml",
            path_str(&fixture("voc_small.yaml")),
            "--model_checkpoint",
            path_str(&fixture("models/segformer_voc")),
            "--test_yaml",
            path_str(&yaml),
            "--output_dir",
            path_str(&out),
        ]);
        metrics(&out, "argmax")
    };
    let lone = run("lone", "ratios: [0.75]");
    // Averaging one scale with itself is that scale: the multi-scale loop at 0.75.
    let twice = run("twice", "ratios: [0.75, 0.75]");
    let one = run("one", "ratios: [1]");
    assert_eq!(lone, twice);
    assert_ne!(
        lone["ECED"], one["ECED"],
        "ratio 0.75 gave scale 1's probabilities"
    );
}

/// Old behaviour: unevaluated Cityscapes label ids became 255 whatever `ignore_index` said,
/// and a data yaml with another ignore index failed on "label value 255".
#[test]
fn cityscapes_label_ids_map_to_the_configured_ignore_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let stem = "aachen_000000_000019";
    let (w, h) = (70usize, 40usize);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7 + 31) % 251) as u8).collect();
    let file = std::fs::File::create({
        let p = data.join(format!(
            "cityscapes/leftImg8bit/val/aachen/{stem}_leftImg8bit.png"
        ));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    })
    .unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
    // Label ids 7 (road -> 0), 26 (car -> 13), 0 (unlabeled -> ignored).
    let ids: Vec<u8> = (0..w * h).map(|i| [7u8, 26, 0][i % 3]).collect();
    write_grey_png(
        &data.join(format!("cityscapes/gtFine/val/aachen/{stem}_gtFine_labelIds.png")),
        w as u32,
        h as u32,
        &ids,
    );
    let run = |ignore: i64| {
        let yaml = tmp.path().join(format!("cityscapes_{ignore}.yaml"));
        std::fs::write(
            &yaml,
            format!(
                "dataset: cityscapes\nin_channels: 3\nnum_classes: 21\ncrop_size: [48, 64]\n\
                 ignore_index: {ignore}\nimage_prefix: /leftImg8bit/\nimage_suffix: _leftImg8bit.png\n\
                 label_prefix: /gtFine/\nlabel_suffix: _gtFine_labelTrainIds.png\n"
            ),
        )
        .unwrap();
        let out = tmp.path().join(format!("out_{ignore}"));
        exp_ok(&[
            "--data_dir",
            path_str(&data),
            "--data_yaml",
            path_str(&yaml),
            "--model_checkpoint",
            path_str(&fixture("models/segformer_voc")),
            "--output_dir",
            path_str(&out),
        ]);
        metrics(&out, "argmax")
    };
    assert_eq!(run(250), run(255));
}

/// Old behaviour: `log_iters` was read and never used; 0 was accepted.
#[test]
fn log_iters_prints_every_nth_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    probs_dataset(&data, 5, false, |p| p);
    let schedule = tmp.path().join("batch2.yaml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/schedules/40k_iters.yaml"),
    )
    .unwrap()
    .replace("batch_size: 8", "batch_size: 2");
    std::fs::write(&schedule, text).unwrap();
    let run = |every: usize| {
        let yaml = test_yaml(
            tmp.path(),
            &format!("log{every}"),
            "test_iou",
            &[("log_iters: 10", &format!("log_iters: {every}"))],
        );
        exp(&[
            "--data_dir",
            path_str(&data),
            "--data_yaml",
            path_str(&data.join("probs.yaml")),
            "--schedule_yaml",
            path_str(&schedule),
            "--test_yaml",
            path_str(&yaml),
            "--output_dir",
            path_str(&tmp.path().join(format!("out{every}"))),
        ])
    };
    // Five images in batches of two: batches 0, 1 and 2.
    let iters = |out: &std::process::Output| -> Vec<String> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| {
                l.split("Iter: [")
                    .nth(1)
                    .map(|rest| rest.split(']').next().unwrap().to_string())
            })
            .collect()
    };
    assert_eq!(iters(&run(1)), ["0|3", "1|3", "2|3"]);
    assert_eq!(iters(&run(2)), ["0|3", "2|3"]);
    let zero = run(0);
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("log0.yaml") && stderr.contains("ITER.log_iters"),
        "{stderr}"
    );
}

/// Old behaviour: `q_bar: False` was accepted and the Q means reported all the same.
#[test]
fn q_bar_false_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    probs_dataset(&data, 1, false, |p| p);
    let yaml = test_yaml(
        tmp.path(),
        "no_qbar",
        "test_iou",
        &[("q_bar: True", "q_bar: False")],
    );
    let out = exp(&[
        "--data_dir",
        path_str(&data),
        "--data_yaml",
        path_str(&data.join("probs.yaml")),
        "--test_yaml",
        path_str(&yaml),
        "--output_dir",
        path_str(&tmp.path().join("out")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no_qbar.yaml") && stderr.contains("METRIC.q_bar"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // True (and no key) still run.
    let yaml = test_yaml(tmp.path(), "qbar", "test_iou", &[("  q_bar: True\n", "")]);
    exp_ok(&[
        "--data_dir",
        path_str(&data),
        "--data_yaml",
        path_str(&data.join("probs.yaml")),
        "--test_yaml",
        path_str(&yaml),
        "--output_dir",
        path_str(&tmp.path().join("out_default")),
    ]);
}
