//! One parameter's `torch.optim.AdamW` update (`_single_tensor_adamw`, the path torch takes
//! for CPU tensors), operation by operation in float32 with torch's scalars: each Python
//! float is computed in float64 and rounded to float32 where torch's kernel receives it.
//! `lerp_` is a fused multiply-add in torch's vectorised kernel, and so is `addcmul_`'s final
//! multiply-add in the x86 builds (the compiler contracts it): fused here too, which makes
//! the fixture's 12 steps bit-identical to torch's (unfused, 11 of 3708 values were 1-2 ulp
//! off).

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
    let decay = (1.0 - lr * weight_decay) as f32;
    let lerp_weight = (1.0 - c.beta1) as f32;
    let beta2 = c.beta2 as f32;
    let one_minus_beta2 = (1.0 - c.beta2) as f32;
    let bias_correction1 = 1.0 - c.beta1.powf(step);
    let bias_correction2 = 1.0 - c.beta2.powf(step);
    let neg_step_size = (-(lr / bias_correction1)) as f32;
    let bias_correction2_sqrt = bias_correction2.powf(0.5) as f32;
    let eps = c.eps as f32;
    let moments = state.exp_avg.iter_mut().zip(state.exp_avg_sq.iter_mut());
    for ((p, &g), (m, v)) in param.iter_mut().zip(grad).zip(moments) {
        *p *= decay;
        // torch's lerp with a weight under 0.5: start + weight * (end - start), fused.
        *m = lerp_weight.mul_add(g - *m, *m);
        *v *= beta2;
        *v = (one_minus_beta2 * g).mul_add(g, *v); // addcmul_: v + (value * g) * g
        let denom = v.sqrt() / bias_correction2_sqrt + eps;
        *p += neg_step_size * *m / denom;
    }
}
