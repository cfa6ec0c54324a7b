//! Layer norm and RMS norm over the last dimension, differentiable: candle-nn's fused
//! `layer_norm` / `rms_norm` have no backward. The normalisation is one custom op (row
//! statistics accumulated in float64, as torch accumulates wider than float32); the affine
//! part is candle's broadcast ops, whose backward gives the weight and bias grads.

use candle_core::{bail, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::kernel::{custom_op1, custom_op2, lit, wide, Kernel1, Kernel2, Real};

/// `F.layer_norm(x, (d,), weight, bias, eps)`: (x - mean) / sqrt(var + eps) over the last
/// dimension with the biased variance, then `* weight + bias`.
pub fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let y = normalize(x, Mode::Layer, eps)?;
    let y = match weight {
        Some(w) => y.broadcast_mul(w)?,
        None => y,
    };
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// candle-nn's `rms_norm(x, weight, eps)`: x / sqrt(mean(x^2) + eps) * weight over the last
/// dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    normalize(x, Mode::Rms, eps)?.broadcast_mul(weight)
}

fn normalize(x: &Tensor, mode: Mode, eps: f64) -> Result<Tensor> {
    if x.rank() == 0 || x.dim(D::Minus1)? == 0 {
        bail!(
            "{mode:?} norm: the last dimension must be non-empty, got {:?}",
            x.shape()
        );
    }
    x.contiguous()?.apply_op1(Normalize { mode, eps })
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Layer,
    Rms,
}

struct Normalize {
    mode: Mode,
    eps: f64,
}

impl Normalize {
    /// One row's (mean, 1/std): the mean is 0 for RMS norm, which does not centre.
    fn stats<T: Real>(&self, row: &[T]) -> (f64, f64) {
        let n = row.len() as f64;
        let mean = match self.mode {
            Mode::Layer => row.iter().map(|&v| wide(v)).sum::<f64>() / n,
            Mode::Rms => 0.0,
        };
        let var = row.iter().map(|&v| (wide(v) - mean).powi(2)).sum::<f64>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

fn last_dim(shape: &Shape) -> Result<usize> {
    shape
        .dims()
        .last()
        .copied()
        .ok_or_else(|| candle_core::Error::Msg("norm: a scalar input".into()))
}

impl Kernel1 for Normalize {
    const NAME: &'static str = "train-normalize-last-dim";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let d = last_dim(shape)?;
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(dst, row)| {
            let (mean, rstd) = self.stats(row);
            for (o, &v) in dst.iter_mut().zip(row) {
                *o = lit((wide(v) - mean) * rstd);
            }
        });
        Ok((out, shape.clone()))
    }
}

custom_op1!(Normalize, |op: &Normalize,
                        arg: &Tensor,
                        _res: &Tensor,
                        grad: &Tensor| {
    arg.contiguous()?.apply_op2_no_bwd(
        grad,
        &NormalizeBackward {
            mode: op.mode,
            eps: op.eps,
        },
    )
});

struct NormalizeBackward {
    mode: Mode,
    eps: f64,
}

impl Kernel2 for NormalizeBackward {
    const NAME: &'static str = "train-normalize-last-dim-backward";

    /// With y the normalised row and r = 1/std: dx = r (g - mean(g) - y mean(g y)) for
    /// layer norm; RMS norm has no centring term, dx = r (g - y mean(g y)).
    fn run<T: Real>(&self, x: &[T], shape: &Shape, g: &[T], g_shape: &Shape) -> Result<(Vec<T>, Shape)> {
        if shape != g_shape {
            bail!("norm backward: grad {g_shape:?} for an input {shape:?}");
        }
        let d = last_dim(shape)?;
        let fwd = Normalize {
            mode: self.mode,
            eps: self.eps,
        };
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(dst, (row, grow))| {
                let (mean, rstd) = fwd.stats(row);
                let n = d as f64;
                let (mut g_mean, mut gy_mean) = (0.0, 0.0);
                for (&v, &gv) in row.iter().zip(grow) {
                    g_mean += wide(gv);
                    gy_mean += wide(gv) * (wide(v) - mean) * rstd;
                }
                let g_mean = match self.mode {
                    Mode::Layer => g_mean / n,
                    Mode::Rms => 0.0,
                };
                let gy_mean = gy_mean / n;
                for (o, (&v, &gv)) in dst.iter_mut().zip(row.iter().zip(grow)) {
                    let y = (wide(v) - mean) * rstd;
                    *o = lit(rstd * (wide(gv) - g_mean - y * gy_mean));
                }
            });
        Ok((out, shape.clone()))
    }
}

custom_op2!(NormalizeBackward);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};
    use candle_core::{Device, Module};

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let x = seeded_normal((3, 4, 7), 0.5, 2.0, 101)?;
        let (w, b) = (seeded_normal(7, 1.0, 0.5, 102)?, seeded_normal(7, 0.0, 0.5, 103)?);
        let err = check_gradient(&x, |x| layer_norm(x, Some(&w), Some(&b), 1e-5), 5)?;
        println!("layer norm: finite-difference error {err:.1e}");
        assert!(err < 1e-8, "layer norm: {err}");
        let err = check_gradient(&w, |w| layer_norm(&x, Some(w), Some(&b), 1e-5), 9)?;
        println!("layer norm weight: finite-difference error {err:.1e}");
        assert!(err < 1e-8, "layer norm weight: {err}");
        let err = check_gradient(&x, |x| rms_norm(x, &w, 1e-6), 6)?;
        println!("rms norm: finite-difference error {err:.1e}");
        assert!(err < 1e-8, "rms norm: {err}");
        Ok(())
    }

    #[test]
    fn forwards_match_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0.5f32, 2.0, (2, 5, 16), &dev)?;
        let (w, b) = (
            Tensor::randn(1f32, 0.5, 16, &dev)?,
            Tensor::randn(0f32, 0.5, 16, &dev)?,
        );
        let theirs = candle_nn::LayerNorm::new(w.clone(), b.clone(), 1e-5).forward(&x)?;
        let diff = (layer_norm(&x, Some(&w), Some(&b), 1e-5)? - theirs)?
            .abs()?
            .max_all()?;
        assert!(diff.to_scalar::<f32>()? < 1e-5);
        let theirs = candle_nn::ops::rms_norm(&x, &w, 1e-6)?;
        let diff = (rms_norm(&x, &w, 1e-6)? - theirs)?.abs()?.max_all()?;
        assert!(diff.to_scalar::<f32>()? < 1e-5);
        Ok(())
    }
}
