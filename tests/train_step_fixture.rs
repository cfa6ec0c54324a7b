//! The training pieces together against torch (tests/fixtures/train_step/, written by
//! scripts/make_train_step_fixtures.py): a tiny conv / BatchNorm / pool / upsample net trained
//! by SGD with momentum over the experiment's groups under its LambdaLR, with candle's conv2d
//! backward between our ops. Per-step losses, final weights and BatchNorm buffers within
//! float32 noise.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rankseg::train::optim::{groups::module_groups, Module};
use rankseg::train::{
    avg_pool2d, batch_norm2d_train, max_pool2d, upsample_bilinear2d, BatchNormStats, LambdaLr, Optimizer,
    Pool2d, Rule, WarmupPoly,
};

const STEPS: usize = 5;

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    t.get(key).with_context(|| format!("no tensor {key}"))
}

struct Tiny {
    conv_w: Var,
    conv_b: Var,
    bn_w: Var,
    bn_b: Var,
    head_w: Var,
    head_b: Var,
    bn: BatchNormStats,
}

impl Tiny {
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let y = x
            .conv2d(&self.conv_w, 1, 1, 1, 1)?
            .broadcast_add(&self.conv_b.reshape((1, 4, 1, 1))?)?;
        let y =
            batch_norm2d_train(&y, Some(&self.bn_w), Some(&self.bn_b), &mut self.bn, 0.1, 1e-5)?.relu()?;
        let y = max_pool2d(&y, Pool2d::new(3, 2, 1, false))?;
        let y = avg_pool2d(&y, Pool2d::new(2, 2, 0, true), false)?;
        let y = y
            .conv2d(&self.head_w, 0, 1, 1, 1)?
            .broadcast_add(&self.head_b.reshape((1, 3, 1, 1))?)?;
        Ok(upsample_bilinear2d(&y, h, w, false)?)
    }
}

/// `F.cross_entropy(logits, label)`: the mean over all pixels of -log softmax at the label.
fn cross_entropy(logits: &Tensor, label: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let picked = logp.gather(&label.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

fn rel_diff(ours: &Tensor, theirs: &Tensor) -> Result<f64> {
    let (a, b) = (ours.to_dtype(DType::F64)?, theirs.to_dtype(DType::F64)?);
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(diff / b.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0))
}

#[test]
fn tiny_net_trains_as_torch() -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_step/tiny.safetensors");
    let t = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let var = |k: &str| -> Result<Var> { Ok(Var::from_tensor(get(&t, &format!("init.{k}"))?)?) };
    let mut net = Tiny {
        conv_w: var("conv.weight")?,
        conv_b: var("conv.bias")?,
        bn_w: var("bn.weight")?,
        bn_b: var("bn.bias")?,
        head_w: var("head.weight")?,
        head_b: var("head.bias")?,
        bn: BatchNormStats {
            running_mean: get(&t, "init.bn.running_mean")?.clone(),
            running_var: get(&t, "init.bn.running_var")?.clone(),
            num_batches_tracked: 0,
        },
    };
    let (lr, multiplier) = (0.01, 10.0);
    let modules = vec![
        Module {
            params: vec![
                net.conv_w.clone(),
                net.conv_b.clone(),
                net.bn_w.clone(),
                net.bn_b.clone(),
            ],
            lr_multiplier: 1.0,
        },
        Module {
            params: vec![net.head_w.clone(), net.head_b.clone()],
            lr_multiplier: multiplier,
        },
    ];
    let mut opt = Optimizer::new(Rule::Sgd { momentum: 0.9 }, module_groups(modules, lr, 5e-4))?;
    let mut sched = LambdaLr::new(WarmupPoly::new(lr, 1e-6, 0.3, STEPS - 1, 0.9)?, &mut opt)?;
    let torch_losses = get(&t, "loss")?.to_vec1::<f64>()?;
    let mut worst_loss = 0f64;
    for step in 1..=STEPS {
        let logits = net.forward(get(&t, &format!("image{step}"))?)?;
        let loss = cross_entropy(&logits, get(&t, &format!("label{step}"))?)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        worst_loss = worst_loss.max((value - torch_losses[step - 1]).abs() / torch_losses[step - 1]);
        opt.step(&loss.backward()?)?;
        sched.step(&mut opt)?;
    }
    println!("losses: rel max diff {worst_loss:.2e}");
    assert!(worst_loss < 1e-6, "{worst_loss:e}");
    let finals = [
        ("conv.weight", net.conv_w.as_tensor()),
        ("conv.bias", net.conv_b.as_tensor()),
        ("bn.weight", net.bn_w.as_tensor()),
        ("bn.bias", net.bn_b.as_tensor()),
        ("head.weight", net.head_w.as_tensor()),
        ("head.bias", net.head_b.as_tensor()),
        ("bn.running_mean", &net.bn.running_mean),
        ("bn.running_var", &net.bn.running_var),
    ];
    for (name, ours) in finals {
        let d = rel_diff(ours, get(&t, &format!("final.{name}"))?)?;
        println!("{name:16} rel max diff {d:.2e}");
        assert!(d < 1e-5, "{name}: {d:e}");
    }
    assert_eq!(
        net.bn.num_batches_tracked,
        get(&t, "final.bn.num_batches_tracked")?.to_scalar::<i64>()?
    );
    Ok(())
}
