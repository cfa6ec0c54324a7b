//! The training losses against the reference code's own torch results (tests/fixtures/loss/,
//! written by scripts/make_loss_fixtures.py from RankSEG-RMA, JDTLosses and the JMLR RankSEG
//! code): every case's value and gradients w.r.t. both heads' logits, in float32.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Var};
use rankseg::config::training::LossConfig;
use rankseg::train::loss::{Criterion, Loss, Target};

mod common;
use common::{load_tensors, rel_diff, tensor};

/// Float32 noise, relative to max(1, the largest reference value): torch's own float32 result
/// differs from its float64 one by up to 5.5e-7 in these cases (manifest.json); ours from
/// torch's float32 by at most 1.2e-7 (a value) and 5.2e-8 (a gradient).
const TOL: f64 = 1e-6;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loss")
}

#[test]
fn losses_match_the_reference_code() -> Result<()> {
    let text = std::fs::read_to_string(dir().join("manifest.json"))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    let cases = manifest["cases"].as_object().context("manifest: no cases")?;
    let num_classes = manifest["shape"][1].as_u64().context("manifest: shape")? as usize;
    let mut worst = (0f64, String::new());
    for (name, case) in cases {
        let config: LossConfig =
            serde_json::from_value(case["yaml"].clone()).with_context(|| format!("{name}: yaml"))?;
        let loss = Loss::from_config(&config, num_classes).with_context(|| name.clone())?;
        let inputs = load_tensors(
            "loss",
            &format!("inputs_{}", case["labels"].as_str().context("labels")?),
        )?;
        let reference = load_tensors("loss", name)?;
        let main = Var::from_tensor(tensor(&inputs, "logits_main")?)?;
        let aux = Var::from_tensor(tensor(&inputs, "logits_aux")?)?;
        let target = Target::new(tensor(&inputs, "labels")?, num_classes, DType::F32, &Device::Cpu)?;
        let value = loss.forward(main.as_tensor(), Some(aux.as_tensor()), &target)?;
        let grads = value.backward()?;
        let mut diffs = vec![(
            "value",
            rel_diff(&value.reshape(1)?, tensor(&reference, "value")?)?,
        )];
        let gm = grads
            .get(main.as_tensor())
            .context("no grad for the main logits")?;
        diffs.push(("grad_main", rel_diff(gm, tensor(&reference, "grad_main")?)?));
        match grads.get(aux.as_tensor()) {
            Some(ga) => diffs.push(("grad_aux", rel_diff(ga, tensor(&reference, "grad_aux")?)?)),
            // torch left the aux logits without a gradient: so must we (its optimizers skip
            // such parameters).
            None => assert!(!case["aux_grad"].as_bool().unwrap_or(true), "{name}: no aux grad"),
        }
        if case["aux_grad"] == false {
            assert!(
                grads.get(aux.as_tensor()).is_none(),
                "{name}: aux grad torch has not"
            );
        }
        for (what, d) in diffs {
            println!("{name:24} {what:10} rel max diff {d:.2e}");
            assert!(d < TOL, "{name} {what}: {d:e}");
            if d > worst.0 {
                worst = (d, format!("{name} {what}"));
            }
        }
    }
    println!("worst: {:.2e} ({})", worst.0, worst.1);
    Ok(())
}

#[test]
fn jdt_soft_labels_match_jdtlosses() -> Result<()> {
    let text = std::fs::read_to_string(dir().join("manifest.json"))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    let cases = manifest["soft_cases"]
        .as_object()
        .context("manifest: no soft_cases")?;
    let num_classes = manifest["shape"][1].as_u64().context("manifest: shape")? as usize;
    let inputs = load_tensors("loss", "inputs_soft")?;
    for (name, case) in cases {
        let config: LossConfig = serde_json::from_value(case["yaml"].clone())?;
        let Criterion::Jdt { jdt, .. } = Loss::from_config(&config, num_classes)?.spec.criterion else {
            panic!("{name}: not a JDT yaml");
        };
        let reference = load_tensors("loss", name)?;
        let logits = Var::from_tensor(tensor(&inputs, "logits_main")?)?;
        let value = jdt.forward_soft(logits.as_tensor(), tensor(&inputs, "soft_labels")?)?;
        let grads = value.backward()?;
        let g = grads.get(logits.as_tensor()).context("no grad")?;
        for (what, d) in [
            (
                "value",
                rel_diff(&value.reshape(1)?, tensor(&reference, "value")?)?,
            ),
            ("grad_main", rel_diff(g, tensor(&reference, "grad_main")?)?),
        ] {
            println!("{name:24} {what:10} rel max diff {d:.2e}");
            assert!(d < TOL, "{name} {what}: {d:e}");
        }
    }
    Ok(())
}
