//! The training ops' forwards and backwards against torch (tests/fixtures/grad/, written by
//! scripts/make_grad_fixtures.py): every case within float32 noise of torch's CPU result.

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};
use rankseg::train::{
    avg_pool2d, batch_norm2d_train, layer_norm, max_pool2d, rms_norm, softmax_last_dim, upsample_bilinear2d,
    BatchNormStats, Pool2d,
};

mod common;
use common::{load_tensors, rel_diff, tensor};

/// Float32 noise: a few ulps of the largest reference value, relative.
const TOL: f64 = 1e-6;

fn check(case: &str, what: &str, ours: &Tensor, theirs: &Tensor) -> Result<f64> {
    let d = rel_diff(ours, theirs)?;
    println!("{case:24} {what:14} rel max diff {d:.2e}");
    assert!(d < TOL, "{case} {what}: {d:e}");
    Ok(d)
}

/// Runs `f` on the case's input (and named parameters), backpropagates torch's upstream
/// gradient, and compares the output and every gradient.
fn run_case<F>(case: &str, params: &[&str], f: F) -> Result<f64>
where
    F: Fn(&Tensor, &[Tensor]) -> candle_core::Result<Tensor>,
{
    let t = load_tensors("grad", case)?;
    let x = Var::from_tensor(tensor(&t, "x")?)?;
    let ps: Vec<Var> = params
        .iter()
        .map(|p| Ok(Var::from_tensor(tensor(&t, p)?)?))
        .collect::<Result<_>>()?;
    let tensors: Vec<Tensor> = ps.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(x.as_tensor(), &tensors)?;
    let mut worst = check(case, "out", &y, tensor(&t, "out")?)?;
    let grads = (y * tensor(&t, "grad_out")?)?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).context("no grad for x")?;
    worst = worst.max(check(case, "grad_x", gx, tensor(&t, "grad_x")?)?);
    for (name, v) in params.iter().zip(&ps) {
        let g = grads.get(v.as_tensor()).context("no grad for a parameter")?;
        worst = worst.max(check(
            case,
            &format!("grad_{name}"),
            g,
            tensor(&t, &format!("grad_{name}"))?,
        )?);
    }
    Ok(worst)
}

#[test]
fn upsample_matches_torch() -> Result<()> {
    for ac in [false, true] {
        for (tag, h, w) in [("up", 9, 13), ("down", 3, 4), ("mixed", 8, 5)] {
            let case = format!("upsample_{tag}_ac{}", ac as u8);
            run_case(&case, &[], |x, _| upsample_bilinear2d(x, h, w, ac))?;
        }
    }
    Ok(())
}

#[test]
fn pools_match_torch() -> Result<()> {
    let stem = Pool2d::new(3, 2, 1, false);
    run_case("maxpool_stem", &[], |x, _| max_pool2d(x, stem))?;
    run_case("maxpool_stem_ties", &[], |x, _| max_pool2d(x, stem))?;
    run_case("maxpool_ceil", &[], |x, _| {
        max_pool2d(x, Pool2d::new(3, 2, 1, true))
    })?;
    run_case("avgpool_resnetd", &[], |x, _| {
        avg_pool2d(x, Pool2d::new(2, 2, 0, true), false)
    })?;
    run_case("avgpool_pad_include", &[], |x, _| {
        avg_pool2d(x, Pool2d::new(3, 2, 1, true), true)
    })?;
    run_case("avgpool_pad_exclude", &[], |x, _| {
        avg_pool2d(x, Pool2d::new(3, 2, 1, true), false)
    })?;
    // timm's AvgPool2dSame(2, 1): zeros padded after (counted as pixels), then a plain pool.
    run_case("avgpool_same", &[], |x, _| {
        avg_pool2d(
            &x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?,
            Pool2d::new(2, 1, 0, true),
            false,
        )
    })?;
    Ok(())
}

#[test]
fn norms_and_softmax_match_torch() -> Result<()> {
    run_case("layer_norm", &["weight", "bias"], |x, p| {
        layer_norm(x, Some(&p[0]), Some(&p[1]), 1e-6)
    })?;
    run_case("rms_norm", &["weight"], |x, p| rms_norm(x, &p[0], 1e-6))?;
    run_case("softmax", &[], |x, _| softmax_last_dim(x))?;
    Ok(())
}

#[test]
fn batch_norm_train_matches_torch() -> Result<()> {
    let t = load_tensors("grad", "batch_norm")?;
    let weight = Var::from_tensor(tensor(&t, "weight")?)?;
    let bias = Var::from_tensor(tensor(&t, "bias")?)?;
    let mut stats = BatchNormStats {
        running_mean: tensor(&t, "running_mean0")?.clone(),
        running_var: tensor(&t, "running_var0")?.clone(),
        num_batches_tracked: 0,
    };
    for step in 1..=2 {
        let case = format!("batch_norm step {step}");
        let x = Var::from_tensor(tensor(&t, &format!("x{step}"))?)?;
        let y = batch_norm2d_train(x.as_tensor(), Some(&weight), Some(&bias), &mut stats, 0.1, 1e-5)?;
        check(&case, "out", &y, tensor(&t, &format!("out{step}"))?)?;
        let grads = (y * tensor(&t, &format!("grad_out{step}"))?)?
            .sum_all()?
            .backward()?;
        for (what, v) in [("grad_x", &x), ("grad_weight", &weight), ("grad_bias", &bias)] {
            let g = grads.get(v.as_tensor()).context("missing grad")?;
            check(&case, what, g, tensor(&t, &format!("{what}{step}"))?)?;
        }
        check(
            &case,
            "running_mean",
            &stats.running_mean,
            tensor(&t, &format!("running_mean{step}"))?,
        )?;
        check(
            &case,
            "running_var",
            &stats.running_var,
            tensor(&t, &format!("running_var{step}"))?,
        )?;
        let tracked = tensor(&t, &format!("num_batches_tracked{step}"))?.to_scalar::<i64>()?;
        assert_eq!(stats.num_batches_tracked, tracked);
    }
    Ok(())
}
