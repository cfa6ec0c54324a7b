//! Softmax over the last dimension, differentiable: candle-nn's fused `softmax_last_dim`
//! (SegFormer's attention) has no backward. Forward as torch's CPU kernel computes it (the
//! row maximum subtracted, the exponentials scaled by one reciprocal of their sum);
//! backward dx = y (g - sum(g y)) from the result alone.

use candle_core::{bail, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::kernel::{custom_op1, custom_op2, fmax, Kernel1, Kernel2, Real};

/// `torch.softmax(x, dim=-1)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 || x.dim(D::Minus1)? == 0 {
        bail!(
            "softmax_last_dim: the last dimension must be non-empty, got {:?}",
            x.shape()
        );
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

fn last_dim(shape: &Shape) -> Result<usize> {
    shape
        .dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("softmax: a scalar input".into()))
}

impl Kernel1 for Softmax {
    const NAME: &'static str = "train-softmax-last-dim";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let d = last_dim(shape)?;
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(dst, row)| {
            let max = row.iter().fold(T::neg_infinity(), |m, &v| fmax(m, v));
            let mut sum = T::zero();
            for (o, &v) in dst.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
            let scale = T::one() / sum;
            dst.iter_mut().for_each(|o| *o *= scale);
        });
        Ok((out, shape.clone()))
    }
}

custom_op1!(Softmax, |_op: &Softmax,
                      _arg: &Tensor,
                      res: &Tensor,
                      grad: &Tensor| {
    res.contiguous()?.apply_op2_no_bwd(grad, &SoftmaxBackward)
});

struct SoftmaxBackward;

impl Kernel2 for SoftmaxBackward {
    const NAME: &'static str = "train-softmax-last-dim-backward";

    fn run<T: Real>(&self, y: &[T], shape: &Shape, g: &[T], g_shape: &Shape) -> Result<(Vec<T>, Shape)> {
        if shape != g_shape {
            bail!("softmax backward: grad {g_shape:?} for a result {shape:?}");
        }
        let d = last_dim(shape)?;
        let mut out = vec![T::zero(); y.len()];
        out.par_chunks_mut(d)
            .zip(y.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(dst, (yr, gr))| {
                let dot = yr.iter().zip(gr).fold(T::zero(), |s, (&a, &b)| s + a * b);
                for (o, (&a, &b)) in dst.iter_mut().zip(yr.iter().zip(gr)) {
                    *o = a * (b - dot);
                }
            });
        Ok((out, shape.clone()))
    }
}

custom_op2!(SoftmaxBackward);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};
    use candle_core::Device;

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let x = seeded_normal((2, 3, 9), 0.0, 3.0, 101)?;
        let err = check_gradient(&x, softmax_last_dim, 7)?;
        println!("softmax: finite-difference error {err:.1e}");
        assert!(err < 1e-8, "{err}");
        Ok(())
    }

    #[test]
    fn forward_matches_candle_nn() -> Result<()> {
        let x = Tensor::randn(0f32, 3.0, (4, 33), &Device::Cpu)?;
        let diff = (softmax_last_dim(&x)? - candle_nn::ops::softmax_last_dim(&x)?)?
            .abs()?
            .max_all()?;
        assert!(diff.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }
}
