//! One parameter's `torch.optim.AdamW` update (`_single_tensor_adamw`, the path torch takes
//! for CPU tensors), operation by operation in float32 with torch's scalars: each Python
//! float is computed in float64 and rounded to float32 where torch's kernel receives it.
//! `lerp_` is a fused multiply-add in torch's vectorised kernel, and so is `addcmul_`'s final
//! multiply-add in the x86 builds (the compiler contracts it): fused here too, which makes
//! the fixture's 12 steps bit-identical to torch's (unfused, 11 of 3708 values were 1-2 ulp
//! off).

use rayon::prelude::*;

/// torch's defaults (`betas=(0.9, 0.999)`, `eps=1e-8`), which the experiment keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// A parameter's AdamW state (`step`, `exp_avg`, `exp_avg_sq`); torch keeps `step` as a
/// float32 tensor, and so the powers below take it as that float.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub step: f32,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

impl AdamState {
    pub fn new(len: usize) -> Self {
        AdamState {
            step: 0.0,
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
        }
    }
}

/// Elements per parallel task: the update is element-wise, so splitting changes nothing in
/// the results.
const CHUNK: usize = 1 << 14;

/// One step on `param` with `grad` (same length as the state; the caller checks).
pub fn update(
    param: &mut [f32],
    grad: &[f32],
    state: &mut AdamState,
    lr: f64,
    weight_decay: f64,
    c: &AdamWConfig,
) {
    state.step += 1.0;
    let step = f64::from(state.step);
    let k = Coefficients {
        decay: (1.0 - lr * weight_decay) as f32,
        lerp_weight: (1.0 - c.beta1) as f32,
        beta2: c.beta2 as f32,
        one_minus_beta2: (1.0 - c.beta2) as f32,
        neg_step_size: (-(lr / (1.0 - c.beta1.powf(step)))) as f32,
        bias_correction2_sqrt: (1.0 - c.beta2.powf(step)).powf(0.5) as f32,
        eps: c.eps as f32,
    };
    let moments = state
        .exp_avg
        .par_chunks_mut(CHUNK)
        .zip(state.exp_avg_sq.par_chunks_mut(CHUNK));
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moments)
        .for_each(|((p, g), (m, v))| k.apply(p, g, m, v));
}

/// The step's scalars as torch's kernels receive them (Python floats rounded to float32).
struct Coefficients {
    decay: f32,
    lerp_weight: f32,
    beta2: f32,
    one_minus_beta2: f32,
    neg_step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl Coefficients {
    fn apply(&self, param: &mut [f32], grad: &[f32], exp_avg: &mut [f32], exp_avg_sq: &mut [f32]) {
        for ((p, &g), (m, v)) in param
            .iter_mut()
            .zip(grad)
            .zip(exp_avg.iter_mut().zip(exp_avg_sq.iter_mut()))
        {
            *p *= self.decay;
            // torch's lerp with a weight under 0.5: start + weight * (end - start), fused.
            *m = self.lerp_weight.mul_add(g - *m, *m);
            *v *= self.beta2;
            *v = (self.one_minus_beta2 * g).mul_add(g, *v); // addcmul_: v + (value * g) * g
            let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
            *p += self.neg_step_size * *m / denom;
        }
    }
}
