//! The embedded default: on labels drawn from the maps themselves, RMA must beat argmax on
//! the per-image Dice it optimises, and the table must hold every method.

use assert_cmd::Command;

#[test]
fn demo_rma_beats_argmax_on_image_dice() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("rankseg")
        .unwrap()
        .args(["demo", "--images", "16", "--size", "64", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    let csv = std::fs::read_to_string(tmp.path().join("demo.csv")).unwrap();
    assert!(tmp.path().join("demo.md").exists());
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
