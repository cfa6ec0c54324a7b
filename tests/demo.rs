//! The embedded default: a small training run on synthetic data evaluated with argmax and
//! rankseg_rma; and `--probs`: on labels drawn from the maps themselves, RMA must beat
//! argmax on the per-image Dice it optimises, and the table must hold every method.

use assert_cmd::Command;

/// A shortened training demo: two epochs of two batches, then both evaluations and the
/// table with its interval.
#[test]
fn training_demo_trains_evaluates_and_tabulates() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["demo", "--images", "16", "--size", "32", "--epochs", "2", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    let run = tmp.path().join("run");
    let log = std::fs::read_to_string(run.join("train_log.csv")).unwrap();
    assert_eq!(log.lines().count(), 1 + 4, "{log}");
    for file in [
        "checkpoint002.safetensors",
        "argmax.metrics.json",
        "rankseg_rma.metrics.json",
        "train_loss.png",
    ] {
        assert!(run.join(file).exists(), "no {file}");
    }
    let table = std::fs::read_to_string(tmp.path().join("demo.md")).unwrap();
    assert!(
        table.contains("| deeplabv3plus_resnet18d_small | rankseg_rma |"),
        "{table}"
    );
    let deltas = std::fs::read_to_string(tmp.path().join("demo.deltas.csv")).unwrap();
    assert!(deltas.lines().any(|l| l.contains("rankseg_rma")), "{deltas}");
}

#[test]
fn demo_rma_beats_argmax_on_image_dice() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["demo", "--probs", "--images", "16", "--size", "64", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    let csv = std::fs::read_to_string(tmp.path().join("demo_probs.csv")).unwrap();
    assert!(tmp.path().join("demo_probs.md").exists());
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        ["method", "mIoUI", "mDiceI", "mIoUD", "mDiceD", "ms_per_image"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let dice_i = |method: &str| -> f64 {
        rows.iter()
            .find(|r| r[0] == method)
            .unwrap_or_else(|| panic!("no {method} row"))[2]
            .parse()
            .unwrap()
    };
    assert_eq!(rows.len(), 4);
    assert!(dice_i("rma_dice") > dice_i("argmax"), "{csv}");
    assert!(dice_i("rma_iou") > dice_i("argmax"), "{csv}");
}

#[test]
fn empty_batch_gives_empty_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let probs = tmp.path().join("empty.npy");
    rankseg::tensor_io::write_npy::<f32>(&probs, &[0, 3, 4, 5], &[]).unwrap();
    for (mode, shape) in [
        ("multiclass", vec![0usize, 4, 5]),
        ("multilabel", vec![0, 3, 4, 5]),
    ] {
        let out = tmp.path().join(format!("{mode}.npy"));
        Command::cargo_bin("rankseg")
            .unwrap()
            .arg("predict")
            .arg("--probs")
            .arg(&probs)
            .arg("--out")
            .arg(&out)
            .args(["--output-mode", mode])
            .assert()
            .success();
        assert_eq!(rankseg::tensor_io::read_ints(&out).unwrap().shape, shape);
    }
}
