//! Per-pixel cross-entropy as one op: `-log_softmax(x, dim=1)[label]` (torch's order: x -
//! max - log sum exp(x - max), in the logits' precision), 0 at ignored pixels, with the
//! backward `g (softmax - onehot)`. The composed form was a dozen passes over (B, C, H, W)
//! with candle's strided reductions over the class axis, for each head.

use std::sync::Arc;

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::train::kernel::{custom_op1, custom_op2, Kernel1, Kernel2, Real};

/// Pixels per parallel task.
const CHUNK: usize = 4096;

/// Runs `f(image, first_pixel, pixels)` over chunks of every image's pixels.
fn chunks(b: usize, hw: usize) -> Vec<(usize, usize, usize)> {
    (0..b)
        .flat_map(|i| (0..hw).step_by(CHUNK).map(move |p| (i, p, CHUNK.min(hw - p))))
        .collect()
}

/// For one chunk: per pixel the max over classes and log sum exp(x - max).
fn log_normaliser<T: Real>(
    x: &[T],
    (c, hw): (usize, usize),
    (i, p0, n): (usize, usize, usize),
) -> (Vec<T>, Vec<T>) {
    let at = |k: usize| &x[(i * c + k) * hw + p0..][..n];
    let mut max = at(0).to_vec();
    for k in 1..c {
        max.iter_mut()
            .zip(at(k))
            .for_each(|(m, &v)| *m = if v > *m { v } else { *m });
    }
    let mut sum = vec![T::zero(); n];
    for k in 0..c {
        sum.iter_mut()
            .zip(at(k))
            .zip(&max)
            .for_each(|((s, &v), &m)| *s += (v - m).exp());
    }
    sum.iter_mut().for_each(|s| *s = s.ln());
    (max, sum)
}

struct PixelNll {
    labels: Arc<Vec<u32>>,
    classes: usize,
}

impl PixelNll {
    fn dims(&self, shape: &Shape) -> Result<(usize, usize)> {
        let (b, c, h, w) = shape.dims4()?;
        if c != self.classes || self.labels.len() != b * h * w {
            bail!(
                "pixel_nll: logits {:?} for {} labels of {} classes",
                shape.dims(),
                self.labels.len(),
                self.classes
            );
        }
        Ok((b, h * w))
    }
}

impl Kernel1 for PixelNll {
    const NAME: &'static str = "pixel-nll";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, hw) = self.dims(shape)?;
        let c = self.classes;
        let parts: Vec<Vec<T>> = chunks(b, hw)
            .into_par_iter()
            .map(|chunk| {
                let (i, p0, n) = chunk;
                let (max, lse) = log_normaliser(x, (c, hw), chunk);
                (0..n)
                    .map(|j| {
                        let label = self.labels[i * hw + p0 + j] as usize;
                        if label >= c {
                            return T::zero();
                        }
                        let v = x[(i * c + label) * hw + p0 + j];
                        T::zero() - ((v - max[j]) - lse[j])
                    })
                    .collect()
            })
            .collect();
        let (_, _, h, w) = shape.dims4()?;
        Ok((parts.concat(), Shape::from((b, h, w))))
    }
}

custom_op1!(PixelNll, |op: &PixelNll,
                       x: &Tensor,
                       _: &Tensor,
                       grad: &Tensor| {
    let (b, _, h, w) = x.dims4()?;
    let grad = grad.reshape((b, 1, h, w))?;
    x.contiguous()?.apply_op2_no_bwd(
        &grad,
        &NllGrad {
            labels: op.labels.clone(),
        },
    )
});

/// (logits, grad (B, 1, H, W)) -> grad (softmax - onehot), 0 at ignored pixels.
struct NllGrad {
    labels: Arc<Vec<u32>>,
}

impl Kernel2 for NllGrad {
    const NAME: &'static str = "pixel-nll-grad";

    fn run<T: Real>(&self, x: &[T], shape: &Shape, g: &[T], _: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = shape.dims4()?;
        let hw = h * w;
        let mut out = vec![T::zero(); x.len()];
        let parts: Vec<((usize, usize, usize), Vec<T>)> = chunks(b, hw)
            .into_par_iter()
            .map(|chunk| {
                let (i, p0, n) = chunk;
                let (max, lse) = log_normaliser(x, (c, hw), chunk);
                let mut block = vec![T::zero(); c * n];
                for j in 0..n {
                    let label = self.labels[i * hw + p0 + j] as usize;
                    if label >= c {
                        continue;
                    }
                    let gj = g[i * hw + p0 + j];
                    for k in 0..c {
                        let p = (x[(i * c + k) * hw + p0 + j] - max[j] - lse[j]).exp();
                        let onehot = if k == label { T::one() } else { T::zero() };
                        block[k * n + j] = gj * (p - onehot);
                    }
                }
                (chunk, block)
            })
            .collect();
        for ((i, p0, n), block) in parts {
            for k in 0..c {
                out[(i * c + k) * hw + p0..][..n].copy_from_slice(&block[k * n..][..n]);
            }
        }
        Ok((out, shape.clone()))
    }
}

custom_op2!(NllGrad);

/// Per-pixel cross-entropy (B, H, W) of `logits` (B, C, H, W) against labels in
/// 0..=C (C: ignored, loss 0).
pub fn pixel_nll(logits: &Tensor, labels: Arc<Vec<u32>>) -> Result<Tensor> {
    let classes = logits.dim(1)?;
    logits.contiguous()?.apply_op1(PixelNll { labels, classes })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};
    use crate::train::loss::target::{log_softmax_classes, Target};

    fn labels() -> Result<Tensor> {
        // Classes 0..3 and the ignored label 3.
        let v: Vec<i64> = (0..2 * 5 * 7).map(|i| (i * 7 % 11) as i64 % 4).collect();
        Tensor::from_vec(v, (2, 5, 7), &Device::Cpu)
    }

    #[test]
    fn equals_the_composed_log_softmax_and_its_gradient() -> anyhow::Result<()> {
        let x = seeded_normal((2, 3, 5, 7), 0.0, 3.0, 1)?;
        let target = Target::new(&labels()?, 3, DType::F64, &Device::Cpu)?;
        let composed = (log_softmax_classes(&x)? * target.onehot())?.sum(1)?.neg()?;
        let fused = pixel_nll(&x, target.shared_labels())?;
        let gap = (fused - composed)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(gap < 1e-12, "{gap}");
        let err = check_gradient(&x, |x| pixel_nll(x, target.shared_labels()), 2)?;
        assert!(err < 1e-7, "{err}");
        Ok(())
    }
}
