//! AdamW and SGD-momentum over the experiment's parameter groups under its LambdaLR, step by
//! step against torch (tests/fixtures/optim/, written by scripts/make_optim_fixtures.py).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use rankseg::train::optim::{groups::module_groups, AdamWConfig, Module};
use rankseg::train::{LambdaLr, Optimizer, ParamState, Rule, WarmupPoly};

const STEPS: usize = 12;
const PARAMS: [&str; 4] = ["bb.w", "bb.b", "head.w", "head.b"];

fn load(name: &str) -> Result<HashMap<String, Tensor>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/optim/{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).with_context(|| format!("{}", path.display()))
}

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    t.get(key).with_context(|| format!("no tensor {key}"))
}

/// (elements differing, largest difference in float32 ulps of torch's value).
fn ulps(ours: &[f32], theirs: &[f32]) -> (usize, f32) {
    ours.iter().zip(theirs).fold((0, 0f32), |(n, worst), (&a, &b)| {
        let ulp = (f32::from_bits(b.abs().to_bits() + 1) - b.abs()).max(f32::MIN_POSITIVE);
        let d = (a - b).abs() / ulp;
        (n + (a != b) as usize, worst.max(d))
    })
}

/// Replays the fixture's grads through our optimizer and schedule; returns the largest
/// per-element difference in ulps over all steps, after checking the learning rates exactly.
fn replay(
    name: &str,
    rule: Rule,
    lr: f64,
    start_lr: f64,
    multiplier: f64,
    power: f64,
    wd: f64,
) -> Result<f32> {
    let t = load(name)?;
    let vars: Vec<Var> = PARAMS
        .iter()
        .map(|p| Ok(Var::from_tensor(get(&t, &format!("init.{p}"))?)?))
        .collect::<Result<_>>()?;
    let modules = vec![
        Module {
            params: vars[..2].to_vec(),
            lr_multiplier: 1.0,
        },
        Module {
            params: vars[2..].to_vec(),
            lr_multiplier: multiplier,
        },
    ];
    let mut opt = Optimizer::new(rule, module_groups(modules, lr, wd))?;
    assert_eq!(
        opt.groups.iter().map(|g| g.params.len()).collect::<Vec<_>>(),
        [1, 1, 1, 1]
    );
    let schedule = WarmupPoly::new(lr, start_lr, 0.25, STEPS - 1, power)?;
    let mut sched = LambdaLr::new(schedule, &mut opt)?;
    let torch_lrs = get(&t, "lr")?.to_vec2::<f64>()?;
    let (mut worst, mut differing, mut total) = (0f32, 0, 0);
    for step in 1..=STEPS {
        let lrs: Vec<f64> = opt.groups.iter().map(|g| g.lr).collect();
        assert_eq!(lrs, torch_lrs[step - 1], "{name} step {step} learning rates");
        // A GradStore holding exactly the fixture's grads (candle makes them only by backward).
        let mut grads = vars[0].as_tensor().sum_all()?.backward()?;
        grads.remove(vars[0].as_tensor());
        for (p, v) in PARAMS.iter().zip(&vars) {
            if let Some(g) = t.get(&format!("grad{step}.{p}")) {
                grads.insert(v.as_tensor(), g.clone());
            }
        }
        opt.step(&grads)?;
        sched.step(&mut opt)?;
        for (p, v) in PARAMS.iter().zip(&vars) {
            let ours = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let theirs = get(&t, &format!("step{step}.{p}"))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let (n, d) = ulps(&ours, &theirs);
            differing += n;
            total += ours.len();
            worst = worst.max(d);
        }
    }
    println!("{name}: {differing} of {total} parameter values differ from torch's; at most {worst} ulp");
    // The state after the last step, as a resume would save it.
    for (i, p) in PARAMS.iter().enumerate() {
        let state = &opt.state()[i][0];
        let keyed: Vec<(&str, &[f32])> = match state {
            ParamState::Adam(a) => vec![("exp_avg", &a.exp_avg), ("exp_avg_sq", &a.exp_avg_sq)],
            ParamState::Momentum(m) => vec![("momentum_buffer", &m.buffer)],
            ParamState::Empty => panic!("{name}: {p} has no state"),
        };
        if let ParamState::Adam(a) = state {
            assert_eq!(a.step, get(&t, &format!("state.{p}.step"))?.to_scalar::<f32>()?);
        }
        for (key, ours) in keyed {
            let theirs = get(&t, &format!("state.{p}.{key}"))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            worst = worst.max(ulps(ours, &theirs).1);
        }
    }
    Ok(worst)
}

#[test]
fn adamw_matches_torch() -> Result<()> {
    let worst = replay(
        "adamw",
        Rule::AdamW(AdamWConfig::default()),
        6e-4,
        1e-6,
        10.0,
        1.0,
        0.01,
    )?;
    // Bit-identical to the fixture (torch's AVX-512 kernels, whose fused multiply-adds we
    // reproduce); float32 rounding alone would allow an ulp or two.
    assert_eq!(worst, 0.0, "adamw: {worst} ulp");
    Ok(())
}

#[test]
fn sgd_momentum_matches_torch() -> Result<()> {
    let worst = replay("sgd", Rule::Sgd { momentum: 0.9 }, 0.01, 1e-6, 10.0, 0.9, 5e-4)?;
    assert_eq!(worst, 0.0, "sgd: {worst} ulp");
    Ok(())
}
