//! The error paths of `score`, `exp`, `logits`, `prepare` and `bench`: each exits with code 1
//! (an error, not a panic's 101), names the file, key or value at fault, and writes no
//! output. (`predict`'s are in tests/invalid_input.rs; clap's own usage errors exit 2.)

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rankseg::tensor_io::write_npy;

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `rankseg args` in `dir`; asserts exit code 1, every message in `messages` on
/// stderr, and no panic.
fn fails(dir: &Path, args: &[&str], messages: &[&str]) {
    let out = Command::cargo_bin("rankseg")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "rankseg {args:?}:\n{stderr}");
    for message in messages {
        assert!(
            stderr.contains(message),
            "rankseg {args:?}: no {message:?} in\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "rankseg {args:?}:\n{stderr}");
}

#[test]
fn score_errors_name_the_flag_or_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_npy(&dir.join("label.npy"), &[1, 2, 2], &[0i64, 1, 1, 7]).unwrap();
    write_npy(&dir.join("pred.npy"), &[1, 2, 2], &[0i64, 1, 1, 0]).unwrap();
    write_npy(&dir.join("pred_1x3x2.npy"), &[1, 3, 2], &[0i64; 6]).unwrap();
    write_npy(
        &dir.join("masks.npy"),
        &[1, 2, 2, 2],
        &[0i64, 1, 1, 2, 0, 0, 0, 0],
    )
    .unwrap();
    write_npy(&dir.join("scalar.npy"), &[], &[0i64]).unwrap();
    write_npy(&dir.join("float.npy"), &[1, 2, 2], &[0.0f32; 4]).unwrap();
    std::fs::write(dir.join("garbage.npy"), b"not an npy file").unwrap();
    let score = |pred: &str, label: &str, extra: &[&str], messages: &[&str]| {
        let mut args = vec!["score", "--pred", pred, "--label", label];
        args.extend(extra);
        fails(dir, &args, messages);
    };
    let classes = ["--num-classes", "8"];
    score(
        "pred.npy",
        "label.npy",
        &["--num-classes", "0"],
        &["--num-classes must be at least 1"],
    );
    for q in ["0", "101"] {
        score(
            "pred.npy",
            "label.npy",
            &["--num-classes", "8", "--q", q],
            &["--q must be a percentage in 1..=100", q],
        );
    }
    score(
        "pred.npy",
        "label.npy",
        &["--num-classes", "2"],
        &[
            "label.npy",
            "image 0",
            "label value 7 is outside the classes 0..1",
        ],
    );
    score("missing.npy", "label.npy", &classes, &["cannot open missing.npy"]);
    score("pred.npy", "missing.npy", &classes, &["cannot open missing.npy"]);
    score(
        "garbage.npy",
        "label.npy",
        &classes,
        &["garbage.npy is not a readable .npy file"],
    );
    score(
        "float.npy",
        "label.npy",
        &classes,
        &["float.npy", "expected an integer or bool array", "<f4"],
    );
    score(
        "scalar.npy",
        "scalar.npy",
        &classes,
        &["scalar.npy", "got a scalar"],
    );
    score(
        "pred_1x3x2.npy",
        "label.npy",
        &classes,
        &[
            "pred_1x3x2.npy",
            "[1, 3, 2]",
            "matches neither the label shape [1, 2, 2]",
        ],
    );
    score(
        "masks.npy",
        "label.npy",
        &["--num-classes", "2", "--ignore-index", "7"],
        &["masks.npy", "masks must be 0/1, found 2"],
    );
}

/// A two-class probs dataset of one 2x3 map under `dir`; returns its data yaml.
fn probs_dataset(dir: &Path) -> PathBuf {
    let probs = [0.3f32, 0.6, 0.5, 0.2, 0.1, 0.4, 0.7, 0.4, 0.5, 0.8, 0.9, 0.6];
    std::fs::create_dir_all(dir.join("probs")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    write_npy(&dir.join("probs/a.npy"), &[2, 2, 3], &probs).unwrap();
    write_npy(&dir.join("labels/a.npy"), &[2, 3], &[0i64, 1, 1, 0, 1, 0]).unwrap();
    let yaml = dir.join("probs2.yaml");
    std::fs::write(
        &yaml,
        "dataset: probs\nnum_classes: 2\nignore_index: 255\nimage_prefix: /probs/\nimage_suffix: .npy\n\
         label_prefix: /labels/\nlabel_suffix: .npy\n",
    )
    .unwrap();
    yaml
}

fn edited(dir: &Path, from: &Path, name: &str, replace: (&str, &str)) -> String {
    let text = std::fs::read_to_string(from).unwrap();
    assert!(
        text.contains(replace.0),
        "{} has no {:?}",
        from.display(),
        replace.0
    );
    std::fs::write(dir.join(name), text.replace(replace.0, replace.1)).unwrap();
    name.to_string()
}

#[test]
fn exp_errors_name_the_config_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let yaml = probs_dataset(&data);
    let yaml = yaml.to_str().unwrap();
    let exp = |extra: &[&str], messages: &[&str]| {
        let mut args = vec!["exp", "--test-only", "--output_dir", "out"];
        args.extend(extra);
        fails(dir, &args, messages);
        let results: Vec<_> = std::fs::read_dir(dir.join("out"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".json") || name.ends_with(".csv"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(results.is_empty(), "{extra:?}: a failed run wrote {results:?}");
    };
    let on_data = |extra: &[&str], messages: &[&str]| {
        let mut args = vec!["--data_dir", "data", "--data_yaml", yaml];
        args.extend(extra);
        exp(&args, messages);
    };

    // Training, the data folder, the dataset layout.
    fails(
        dir,
        &["exp", "--data_dir", "data"],
        &["training needs --model_yaml", "--test-only"],
    );
    exp(
        &["--data_dir", "nowhere", "--data_yaml", yaml],
        &["--data_dir", "nowhere"],
    );
    std::fs::create_dir_all(dir.join("empty/probs")).unwrap();
    exp(
        &["--data_dir", "empty", "--data_yaml", yaml],
        &["no Probs images found under", "empty"],
    );
    std::fs::create_dir_all(dir.join("bare")).unwrap();
    exp(
        &["--data_dir", "bare", "--data_yaml", yaml],
        &["bare/probs is not a directory", "DATA.md"],
    );
    exp(
        &["--data_dir", "data", "--data_yaml", "pascal_voc"],
        &["no model", "--model_checkpoint"],
    );

    // Data yaml values and keys.
    let data_yaml = Path::new(yaml);
    let bad = [
        (
            ("num_classes: 2", "num_classes: 1"),
            vec!["num_classes must be at least 2"],
        ),
        (
            ("num_classes: 2", "num_classes: 300"),
            vec!["num_classes must be at most 256"],
        ),
        (
            ("ignore_index: 255", "ignore_index: 1"),
            vec!["ignore_index 1 is one of the classes 0..1"],
        ),
        (
            ("dataset: probs", "dataset: nope"),
            vec!["dataset: unknown variant `nope`"],
        ),
        (
            ("num_classes", "num_klasses"),
            vec!["unknown field `num_klasses`"],
        ),
        (
            ("dataset: probs", "dataset: pascal_voc"),
            vec!["crop_size is missing"],
        ),
    ];
    for (k, (replace, messages)) in bad.into_iter().enumerate() {
        let name = edited(dir, data_yaml, &format!("data{k}.yaml"), replace);
        let mut messages: Vec<&str> = messages;
        messages.push(&name);
        exp(&["--data_dir", "data", "--data_yaml", &name], &messages);
    }
    exp(
        &["--data_dir", "data", "--data_yaml", "no_such_data"],
        &["--data_yaml", "\"no_such_data\"", "configs/datas/", "pascal_voc"],
    );

    // Test yaml values and keys.
    let test_yaml = manifest("configs/test/test_iou.yaml");
    let bad = [
        (
            ("ratios: [1]", "ratios: []"),
            "INF.ratios must be positive numbers, got []",
        ),
        (
            ("ratios: [1]", "ratios: [0.5, -1]"),
            "INF.ratios must be positive numbers",
        ),
        (
            ("stride_rate: 0.6667", "stride_rate: 0"),
            "INF.stride_rate must be in (0, 1], got 0",
        ),
        (
            ("stride_rate: 0.6667", "stride_rate: 1.5"),
            "INF.stride_rate must be in (0, 1]",
        ),
        (
            ("q: 10", "q: 0"),
            "METRIC.q must be a percentage in 1..=100, got 0",
        ),
        (
            ("num_bins: 10", "num_bins: 0"),
            "METRIC.num_bins must be at least 1",
        ),
        (
            ("log_iters: 10", "log_iters: 0"),
            "ITER.log_iters must be at least 1",
        ),
        (
            ("q_bar: True", "q_bar: False"),
            "METRIC.q_bar: False is not supported",
        ),
        (("flip: False", "flipped: False"), "unknown field `flipped`"),
    ];
    for (k, (replace, message)) in bad.into_iter().enumerate() {
        let name = edited(dir, &test_yaml, &format!("test{k}.yaml"), replace);
        on_data(&["--test_yaml", &name], &[&name, message]);
    }

    // Predict yamls.
    let bad: [(&str, &[&str]); 9] = [
        ("METHOD: nope\n", &["METHOD: unknown method \"nope\""]),
        ("PARAMS: {}\n", &["missing field `METHOD`"]),
        (
            "METHOD: rankseg_rma\nPARAMS:\n  to_nonverlap_method: x\n",
            &["PARAMS.to_nonverlap_method: unknown method \"x\""],
        ),
        (
            "METHOD: rankseg_rma\nPARAMS:\n  opt_metric: acc\n",
            &["PARAMS.opt_metric", "'acc'"],
        ),
        (
            "METHOD: rankseg_rma\nPARAMS:\n  opt_metrics: dice\n",
            &["unknown field `opt_metrics`"],
        ),
        (
            "METHOD: argmax\nPARAMS:\n  temperature: -1\n",
            &["temperature must be a positive number, got -1"],
        ),
        (
            "METHOD: argmax\nPARAMS:\n  temperature: 0\n",
            &["temperature must be a positive number, got 0"],
        ),
        (
            "METHOD: rankseg\nPARAMS:\n  solver: nope\n",
            &["PARAMS.solver: unknown solver 'nope'"],
        ),
        (
            "METHOD: rankseg_ba\nPARAMS:\n  smooth: -1\n",
            &["PARAMS.smooth must be finite and >= 0"],
        ),
    ];
    for (k, (text, messages)) in bad.into_iter().enumerate() {
        let name = format!("predict{k}.yaml");
        std::fs::write(dir.join(&name), text).unwrap();
        let mut messages = messages.to_vec();
        messages.push(&name);
        on_data(&["--predict_yaml", &name], &messages);
    }
    std::fs::write(dir.join("ba.yaml"), "METHOD: rankseg_ba\n").unwrap();
    let three = edited(dir, data_yaml, "three.yaml", ("num_classes: 2", "num_classes: 3"));
    exp(
        &[
            "--data_dir",
            "data",
            "--data_yaml",
            &three,
            "--predict_yaml",
            "ba.yaml",
        ],
        &[
            "ba.yaml with three.yaml",
            "rankseg_ba needs two classes (the data yaml has 3)",
        ],
    );
    on_data(
        &["--predict_yaml", "no_such_predict"],
        &["--predict_yaml", "configs/predict/", "rankseg_rma"],
    );
    on_data(&["--device", "tpu"], &["unknown --device \"tpu\""]);
    on_data(&["--device", "cuda"], &["--device cuda", "`cuda` feature"]);

    // The files of the dataset.
    exp(
        &["--data_dir", "data", "--data_yaml", &three],
        &[
            "probs/a.npy",
            "expected probabilities of shape (3, H, W), got [2, 2, 3]",
        ],
    );
    let bad_data = dir.join("bad");
    probs_dataset(&bad_data);
    write_npy(&bad_data.join("labels/a.npy"), &[3, 2], &[0i64; 6]).unwrap();
    exp(
        &["--data_dir", "bad", "--data_yaml", yaml],
        &["labels/a.npy is 3x2 but the probabilities", "probs/a.npy are 2x3"],
    );
    write_npy(&bad_data.join("labels/a.npy"), &[2, 3], &[0i64, 1, 1, 0, 1, 7]).unwrap();
    exp(
        &["--data_dir", "bad", "--data_yaml", yaml],
        &["labels/a.npy", "label value 7 is outside the classes 0..1"],
    );
    std::fs::remove_file(bad_data.join("labels/a.npy")).unwrap();
    exp(
        &["--data_dir", "bad", "--data_yaml", yaml],
        &["cannot read the label file", "labels/a.npy"],
    );
    write_npy(&bad_data.join("labels/a.npy"), &[2, 3], &[0i64, 1, 1, 0, 1, 0]).unwrap();
    write_npy(&bad_data.join("probs/a.npy"), &[2, 2, 3], &[0i32; 12]).unwrap();
    exp(
        &["--data_dir", "bad", "--data_yaml", yaml],
        &["probs/a.npy", "probabilities must be float32 or float64"],
    );
    write_npy(&bad_data.join("probs/a.npy"), &[2, 2, 3], &[1.5f32; 12]).unwrap();
    exp(
        &["--data_dir", "bad", "--data_yaml", yaml],
        &["probs/a.npy", "[0, 1]"],
    );
}

#[test]
fn logits_errors_name_the_input_model_or_device() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = manifest("tests/fixtures/exp/models/segformer_voc");
    let model = model.to_str().unwrap();
    write_npy(&dir.join("f64.npy"), &[1, 3, 64, 64], &vec![0.0f64; 3 * 64 * 64]).unwrap();
    write_npy(&dir.join("four.npy"), &[1, 4, 64, 64], &vec![0.0f32; 4 * 64 * 64]).unwrap();
    write_npy(&dir.join("flat.npy"), &[3, 64, 64], &vec![0.0f32; 3 * 64 * 64]).unwrap();
    write_npy(&dir.join("ok.npy"), &[1, 3, 64, 64], &vec![0.0f32; 3 * 64 * 64]).unwrap();
    std::fs::write(dir.join("garbage.npy"), b"not an npy file").unwrap();
    let logits = |extra: &[&str], messages: &[&str]| {
        let mut args = vec!["logits", "--out", "out.npy"];
        args.extend(extra);
        fails(dir, &args, messages);
        assert!(
            !dir.join("out.npy").exists(),
            "{extra:?}: a failed run wrote logits"
        );
    };
    logits(
        &["--model", model, "--input", "missing.npy"],
        &["cannot open missing.npy"],
    );
    logits(
        &["--model", model, "--input", "garbage.npy"],
        &["garbage.npy is not a readable .npy file"],
    );
    logits(
        &["--model", model, "--input", "f64.npy"],
        &["f64.npy: the input must be float32"],
    );
    for input in ["four.npy", "flat.npy"] {
        logits(
            &["--model", model, "--input", input],
            &[input, "the input must have shape (B, 3, H, W) for this model"],
        );
    }
    logits(
        &["--model", model, "--input", "ok.npy", "--device", "tpu"],
        &["unknown --device \"tpu\""],
    );
    logits(
        &["--model", model, "--input", "ok.npy", "--device", "cuda:x"],
        &["--device cuda:N needs a number"],
    );
    logits(
        &["--model", "no/such/dir", "--input", "ok.npy"],
        &["\"no/such/dir\" is neither a yaml file nor a name under configs/models/"],
    );
    let segmentor = |model_yaml: &str, data_yaml: &str, checkpoint: &str, messages: &[&str]| {
        logits(
            &[
                "--model_yaml",
                model_yaml,
                "--data_yaml",
                data_yaml,
                "--model_checkpoint",
                checkpoint,
                "--input",
                "ok.npy",
            ],
            messages,
        );
    };
    segmentor(
        "no_such_model",
        "pascal_voc",
        "x.pth",
        &["--model_yaml", "\"no_such_model\"", "configs/models/"],
    );
    segmentor(
        "unet_resnet18d",
        "no_such_data",
        "x.pth",
        &["\"no_such_data\"", "configs/datas/"],
    );
    segmentor(
        "unet_resnet18d",
        "pascal_voc",
        "x.pth",
        &["checkpoint x.pth does not exist"],
    );
    segmentor(
        "unet_resnet18d",
        "pascal_voc",
        "garbage.npy",
        &["garbage.npy: expected a .pth (torch.save) or .safetensors state dict"],
    );
}

#[test]
fn prepare_errors_name_the_folder_or_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let prepare = |challenge: &str, data: &str, messages: &[&str]| {
        fails(dir, &["prepare", challenge, "--data_dir", data], messages);
    };
    prepare("lits", "nowhere", &["cannot list nowhere/lits", "DATA.md"]);
    std::fs::create_dir_all(dir.join("d/lits")).unwrap();
    std::fs::create_dir_all(dir.join("d/kits")).unwrap();
    prepare("lits", "d", &["no lits cases with segmentations under d/lits"]);
    prepare("kits", "d", &["no kits cases with segmentations under d/kits"]);
    // A volume without its segmentation is a test case: skipped, so still no case.
    let nifti = manifest("tests/fixtures/exp/lits_nifti/lits");
    std::fs::copy(nifti.join("volume-0.nii"), dir.join("d/lits/volume-0.nii")).unwrap();
    prepare(
        "lits",
        "d",
        &["no segmentation (a test case), skipped", "no lits cases"],
    );
    // A segmentation of another shape than its volume.
    std::fs::copy(
        nifti.join("segmentation-1.nii"),
        dir.join("d/lits/segmentation-0.nii"),
    )
    .unwrap();
    prepare("lits", "d", &["volume-0.nii has shape", "segmentation-0.nii"]);
    // Unreadable NIfTI files.
    std::fs::write(dir.join("d/lits/segmentation-0.nii"), b"not a NIfTI file").unwrap();
    prepare("lits", "d", &["cannot read the NIfTI file", "segmentation-0.nii"]);
    std::fs::create_dir_all(dir.join("d/kits/case_00000")).unwrap();
    std::fs::write(dir.join("d/kits/case_00000/imaging.nii.gz"), b"junk").unwrap();
    std::fs::write(dir.join("d/kits/case_00000/segmentation.nii.gz"), b"junk").unwrap();
    prepare("kits", "d", &["cannot read the NIfTI file", "case_00000/"]);
    for challenge in ["lits", "kits"] {
        let written = std::fs::read_dir(dir.join("d").join(challenge).join("train"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(written, 0, "{challenge}: a failed prepare left slices behind");
    }
}

#[test]
fn bench_errors_name_the_method_size_or_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fails(
        dir,
        &["bench", "--methods", "argmax,nope", "--out", "out"],
        &["unknown bench method 'nope'", "rma_dice"],
    );
    fails(
        dir,
        &[
            "bench",
            "--sizes",
            "voc_small,huge",
            "--methods",
            "argmax",
            "--out",
            "out",
        ],
        &["unknown bench size 'huge'", "voc_small"],
    );
    std::fs::write(dir.join("a_file"), b"").unwrap();
    fails(
        dir,
        &[
            "bench",
            "--sizes",
            "voc_small",
            "--methods",
            "argmax",
            "--repeats",
            "1",
            "--out",
            "a_file/out",
        ],
        &["cannot create directory a_file/out"],
    );
    assert!(!dir.join("out").exists(), "a failed bench wrote results");
}
