//! The loss yamls' checks, hand-computed values, and finite-difference gradients (float64)
//! of every criterion. Torch parity is in tests/loss_fixtures.rs.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::*;
use crate::train::gradcheck::{check_gradient, seeded_normal};

fn config(yaml: &str) -> Result<LossConfig> {
    Ok(serde_yaml::from_str(yaml)?)
}

fn spec(yaml: &str) -> Result<LossSpec> {
    LossSpec::from_config(&config(yaml)?, 4)
}

const DICE_IC: &str = "main_weight: 0.5\naux_weight: 0.5\nce_weight: 0.25\njdt_weight: 0.75\n\
mIoUD: 0.0\nmIoUI: 0.5\nmIoUC: 0.5\nalpha: 0.5\nbeta: 0.5\ngamma: 1.0\nsmooth: 1.0\n\
threshold: 0.01\nlog_loss: False\nclass_weights: null\nactive_classes_mode_hard: \"PRESENT\"\n\
active_classes_mode_soft: \"ALL\"\n";

fn err(yaml: &str) -> String {
    format!("{:#}", spec(yaml).unwrap_err())
}

#[test]
fn yamls_pick_their_criterion() -> Result<()> {
    let ce = spec("main_weight: 0.5\naux_weight: 0.5\n")?;
    assert_eq!(ce.criterion, Criterion::Experiment { focal_gamma: 0.0 });
    let focal = spec("main_weight: 1\naux_weight: 0.4\nfocal_gamma: 2\n")?;
    assert_eq!(focal.criterion, Criterion::Experiment { focal_gamma: 2.0 });
    let Criterion::Jdt { ce_weight, jdt, .. } = spec(DICE_IC)?.criterion else {
        panic!("not JDT")
    };
    assert_eq!((ce_weight, jdt.alpha, jdt.miou_i), (0.25, 0.5, 0.5));
    assert_eq!(jdt.active_hard, ActiveClasses::Present);
    let l = spec("main_weight: 1\naux_weight: 0\njmlr_loss: LovaszSoftmax\n")?;
    assert_eq!(l.criterion, Criterion::Jmlr(JmlrLoss::LovaszSoftmax));
    Ok(())
}

#[test]
fn shipped_loss_yamls_resolve() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/losses");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        LossSpec::from_config(&config(&text)?, 21)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    }
    Ok(())
}

#[test]
fn bad_yamls_name_the_key() {
    assert!(config("main_weight: 1\naux_weight: 1\nfocal: 2\n").is_err());
    let partial = DICE_IC.replace("smooth: 1.0\n", "");
    assert!(err(&partial).contains("missing: smooth"), "{}", err(&partial));
    let no_cw = DICE_IC.replace("class_weights: null\n", "");
    assert!(err(&no_cw).contains("class_weights"));
    assert!(err(&DICE_IC.replace("gamma: 1.0", "gamma: 0.5")).contains("`gamma` must be >= 1"));
    let bad_mode = DICE_IC.replace("\"ALL\"", "\"SOME\"");
    assert!(err(&bad_mode).contains("active_classes_mode_soft"));
    let cw = DICE_IC.replace("class_weights: null", "class_weights: [1.0, 2.0]");
    assert!(err(&cw).contains("`class_weights` has 2 entries"));
    let mixed = format!("{DICE_IC}focal_gamma: 2\n");
    assert!(err(&mixed).contains("focal_gamma"));
    assert!(err("main_weight: 1\naux_weight: 1\njmlr_loss: Dice\n").contains("jmlr_loss `Dice`"));
    assert!(err("main_weight: 1\naux_weight: 1\njmlr_loss: DiceLoss\nsmooth: 1\n").contains("`smooth`"));
    assert!(err("main_weight: 1\naux_weight: 1\nfocal_gamma: -1\n").contains("focal_gamma"));
}

/// Labels (2, 3, 4) over 4 classes with ignored pixels (4); image 1 lacks class 3.
fn labels() -> Result<Tensor> {
    let v: Vec<u32> = vec![
        0, 1, 2, 3, 4, 0, 1, 1, 2, 2, 4, 3, //
        0, 0, 1, 4, 2, 2, 1, 0, 4, 4, 1, 2,
    ];
    Ok(Tensor::from_vec(v, (2, 3, 4), &Device::Cpu)?)
}

#[test]
fn ce_is_the_mean_over_kept_pixels() -> Result<()> {
    let x = seeded_normal((2, 4, 3, 4), 0.0, 2.0, 7)?;
    let t = Target::new(&labels()?, 4, DType::F64, &Device::Cpu)?;
    let got = ce::experiment_ce(&x, &t, 0.0)?.to_scalar::<f64>()?;
    let flat = x.flatten_all()?.to_vec1::<f64>()?;
    let (mut sum, mut n) = (0.0, 0);
    for (i, &l) in t.labels().iter().enumerate() {
        if l == 4 {
            continue;
        }
        let (b, px) = (i / 12, i % 12);
        let at = |c: usize| flat[(b * 4 + c) * 12 + px];
        let lse = (0..4).map(|c| at(c).exp()).sum::<f64>().ln();
        sum += lse - at(l as usize);
        n += 1;
    }
    assert!(
        (got - sum / n as f64).abs() < 1e-12,
        "{got} vs {}",
        sum / n as f64
    );
    Ok(())
}

#[test]
fn ignored_pixels_get_no_gradient() -> Result<()> {
    let x = candle_core::Var::from_tensor(&seeded_normal((2, 4, 3, 4), 0.0, 2.0, 3)?)?;
    let t = Target::new(&labels()?, 4, DType::F64, &Device::Cpu)?;
    for yaml in [
        "main_weight: 1\naux_weight: 0\nfocal_gamma: 0.5\n",
        DICE_IC,
        "main_weight: 1\naux_weight: 0\njmlr_loss: LovaszSoftmax\n",
    ] {
        let loss = Loss::from_config(&config(yaml)?, 4)?;
        let g = loss.forward(x.as_tensor(), None, &t)?.backward()?;
        let g = g
            .get(x.as_tensor())
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f64>()?;
        for (i, &l) in t.labels().iter().enumerate() {
            if l == 4 {
                let (b, px) = (i / 12, i % 12);
                for c in 0..4 {
                    let v = g[(b * 4 + c) * 12 + px];
                    assert!(v == 0.0 && v.is_finite(), "{yaml}: grad {v} at an ignored pixel");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn all_ignored_batch_is_zero_not_nan() -> Result<()> {
    let lab = Tensor::from_vec(vec![4u32; 24], (2, 3, 4), &Device::Cpu)?;
    let t = Target::new(&lab, 4, DType::F64, &Device::Cpu)?;
    let x = seeded_normal((2, 4, 3, 4), 0.0, 1.0, 1)?;
    assert_eq!(ce::experiment_ce(&x, &t, 2.0)?.to_scalar::<f64>()?, 0.0);
    assert_eq!(lovasz::lovasz_softmax(&x, &t)?.to_scalar::<f64>()?, 0.0);
    assert!(dice::soft_dice(&x, &t)?.to_scalar::<f64>()?.is_finite());
    Ok(())
}

#[test]
fn labels_out_of_range_are_rejected() {
    let lab = Tensor::from_vec(vec![255u32; 24], (2, 3, 4), &Device::Cpu).unwrap();
    let e = Target::new(&lab, 4, DType::F32, &Device::Cpu).err().unwrap();
    assert!(format!("{e}").contains("found 255"), "{e}");
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let t = Target::new(&labels()?, 4, DType::F64, &Device::Cpu)?;
    let yamls = [
        "main_weight: 1\naux_weight: 0\n".to_string(),
        "main_weight: 1\naux_weight: 0\nfocal_gamma: 2\n".into(),
        "main_weight: 1\naux_weight: 0\nfocal_gamma: 1.5\n".into(),
        DICE_IC.replace("aux_weight: 0.5", "aux_weight: 0"),
        DICE_IC
            .replace("aux_weight: 0.5", "aux_weight: 0")
            .replace("mIoUD: 0.0", "mIoUD: 1.0")
            .replace("gamma: 1.0", "gamma: 2.0")
            .replace("log_loss: False", "log_loss: True")
            .replace("class_weights: null", "class_weights: [1.0, 0.5, 2.0, 1.5]"),
        "main_weight: 1\naux_weight: 0\njmlr_loss: FocalLoss\n".into(),
        "main_weight: 1\naux_weight: 0\njmlr_loss: BCEWithLogitsLoss2d\n".into(),
        "main_weight: 1\naux_weight: 0\njmlr_loss: DiceLoss\n".into(),
        "main_weight: 1\naux_weight: 0\njmlr_loss: BDiceLoss\n".into(),
        "main_weight: 1\naux_weight: 0\njmlr_loss: LovaszSoftmax\n".into(),
    ];
    for (k, yaml) in yamls.iter().enumerate() {
        let loss = Loss::from_config(&config(yaml)?, 4)?;
        let x = seeded_normal((2, 4, 3, 4), 0.0, 1.5, 11 + k as u64)?;
        let f = |x: &Tensor| {
            loss.forward(x, None, &t)
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
        };
        let d = check_gradient(&x, f, k as u64)?;
        assert!(d < 1e-6, "{yaml}: finite-difference mismatch {d:e}");
    }
    Ok(())
}

#[test]
fn soft_label_jdt_gradient_matches_finite_differences() -> Result<()> {
    let yaml = DICE_IC.replace("mIoUD: 0.0", "mIoUD: 0.5").replace(
        "active_classes_mode_soft: \"ALL\"",
        "active_classes_mode_soft: \"PRESENT\"",
    );
    let Criterion::Jdt { jdt, .. } = spec(&yaml)?.criterion else {
        panic!("not JDT")
    };
    let soft = target::softmax_classes(&seeded_normal((2, 4, 3, 4), 0.0, 2.0, 5)?)?;
    let x = seeded_normal((2, 4, 3, 4), 0.0, 1.5, 6)?;
    let f = |x: &Tensor| {
        jdt.forward_soft(x, &soft)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    };
    let d = check_gradient(&x, f, 9)?;
    assert!(d < 1e-6, "finite-difference mismatch {d:e}");
    Ok(())
}
