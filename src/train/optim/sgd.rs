//! One parameter's `torch.optim.SGD` update with momentum (`_single_tensor_sgd`: weight
//! decay added to the grad, dampening 0, no Nesterov), in float32 with torch's scalars.
//! torch's `add(other, alpha)` is a fused multiply-add in its vectorised kernel, so the
//! three `alpha` additions below are fused too.

/// The momentum buffer torch creates on a parameter's first step (a copy of the decayed
/// grad) and then carries.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentumState {
    pub buffer: Vec<f32>,
}

/// One step on `param` with `grad`; `state` is `None` before the first step.
pub fn update(
    param: &mut [f32],
    grad: &[f32],
    state: &mut Option<MomentumState>,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
) {
    let wd = weight_decay as f32;
    let decayed: Vec<f32> = if weight_decay != 0.0 {
        grad.iter()
            .zip(param.iter())
            .map(|(&g, &p)| wd.mul_add(p, g))
            .collect()
    } else {
        grad.to_vec()
    };
    let step: &[f32] = if momentum != 0.0 {
        let mu = momentum as f32;
        match state {
            Some(s) => {
                // buf * momentum + (1 - dampening) * grad, the second product exact (alpha 1).
                for (b, &g) in s.buffer.iter_mut().zip(&decayed) {
                    *b = 1f32.mul_add(g, *b * mu);
                }
            }
            None => {
                *state = Some(MomentumState {
                    buffer: decayed.clone(),
                })
            }
        }
        match state {
            Some(s) => &s.buffer,
            None => &decayed,
        }
    } else {
        &decayed
    };
    let neg_lr = (-lr) as f32;
    for (p, &d) in param.iter_mut().zip(step) {
        *p = neg_lr.mul_add(d, *p);
    }
}
