//! Finite-difference gradient checks for our backward kernels: the analytic gradient of
//! `sum(f(x) * u)` for a fixed random upstream `u` against central differences, in float64.

use candle_core::{bail, DType, Result, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Central-difference step: small enough that the curvature term (h^2) sits far below the
/// float64 rounding term (eps / h) we compare at.
const STEP: f64 = 1e-6;

/// The largest |analytic - numeric| over the elements of `x`, relative to the largest
/// numeric component (or to 1 when that is smaller). `x` must be float64.
pub fn check_gradient<F>(x: &Tensor, f: F, seed: u64) -> Result<f64>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    if x.dtype() != DType::F64 {
        bail!("check_gradient: float64 inputs only, got {:?}", x.dtype());
    }
    let var = Var::from_tensor(x)?;
    let out = f(var.as_tensor())?;
    let mut rng = StdRng::seed_from_u64(seed);
    let upstream: Vec<f64> = (0..out.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let upstream = Tensor::from_vec(upstream, out.shape(), x.device())?;
    let loss = |t: &Tensor| -> Result<Tensor> { (t * &upstream)?.sum_all() };
    let grads = loss(&out)?.backward()?;
    let analytic = match grads.get(var.as_tensor()) {
        Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
        None => bail!("check_gradient: no gradient reached the input"),
    };
    let base = x.flatten_all()?.to_vec1::<f64>()?;
    let mut numeric = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let at = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += delta;
            loss(&f(&Tensor::from_vec(v, x.shape(), x.device())?)?)?.to_scalar::<f64>()
        };
        numeric.push((at(STEP)? - at(-STEP)?) / (2.0 * STEP));
    }
    let scale = numeric.iter().fold(1f64, |m, v| m.max(v.abs()));
    let worst = analytic
        .iter()
        .zip(&numeric)
        .fold(0f64, |m, (a, n)| m.max((a - n).abs()));
    Ok(worst / scale)
}

/// A float64 normal tensor from a fixed seed: the checks see the same inputs every run, so a
/// near-tie that a finite-difference step could flip (max pooling) cannot come and go.
pub fn seeded_normal<S: Into<candle_core::Shape>>(
    shape: S,
    mean: f64,
    std: f64,
    seed: u64,
) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(mean, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let v: Vec<f64> = (0..shape.elem_count()).map(|_| rng.sample(normal)).collect();
    Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
}
