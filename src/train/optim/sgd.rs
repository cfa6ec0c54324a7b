//! One parameter's `torch.optim.SGD` update with momentum (`_single_tensor_sgd`: weight
//! decay added to the grad, dampening 0, no Nesterov), in float32 with torch's scalars.
//! torch's `add(other, alpha)` is a fused multiply-add in its vectorised kernel, so the
//! three `alpha` additions below are fused too.

use rayon::prelude::*;

/// The momentum buffer torch creates on a parameter's first step (a copy of the decayed
/// grad) and then carries.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentumState {
    pub buffer: Vec<f32>,
}

/// Elements per parallel task (the update is element-wise: results do not depend on it).
const CHUNK: usize = 1 << 14;

/// One step on `param` with `grad`; `state` is `None` before the first step (and stays
/// `None` without momentum, where torch keeps no buffer).
pub fn update(
    param: &mut [f32],
    grad: &[f32],
    state: &mut Option<MomentumState>,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
) {
    let (wd, mu, neg_lr) = (weight_decay as f32, momentum as f32, (-lr) as f32);
    let decay = weight_decay != 0.0;
    let first = state.is_none();
    let step = |p: &mut [f32], g: &[f32], mut buf: Option<&mut [f32]>| {
        for (i, (p, &g)) in p.iter_mut().zip(g).enumerate() {
            let d = if decay { wd.mul_add(*p, g) } else { g };
            let s = match buf.as_deref_mut() {
                // torch's first buffer is a copy of the decayed grad; later ones are
                // buf * momentum + (1 - dampening) * grad, the second product exact (alpha 1).
                Some(b) if first => {
                    b[i] = d;
                    d
                }
                Some(b) => {
                    b[i] = 1f32.mul_add(d, b[i] * mu);
                    b[i]
                }
                None => d,
            };
            *p = neg_lr.mul_add(s, *p);
        }
    };
    let n = param.len();
    let chunks = param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK));
    if momentum == 0.0 {
        chunks.for_each(|(p, g)| step(p, g, None));
        return;
    }
    let buf = state.get_or_insert_with(|| MomentumState { buffer: vec![0.0; n] });
    chunks
        .zip(buf.buffer.par_chunks_mut(CHUNK))
        .for_each(|((p, g), b)| step(p, g, Some(b)));
}
