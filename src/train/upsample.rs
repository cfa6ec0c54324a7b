//! `F.interpolate(x, size, mode="bilinear", align_corners=...)` with a backward: candle's
//! `upsample_bilinear2d` has none. Source indices and weights follow PyTorch's
//! `compute_source_index_and_lambda` in the input's precision, so float32 forwards agree with
//! torch's CPU kernel to rounding; the backward scatters each output grad to its four taps
//! with the same weights (torch's `upsample_bilinear2d_backward`).

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{custom_op1, fmax, fmin, lit, Kernel1, Real};

/// One output index's two source indices and their weights along an axis.
#[derive(Clone, Copy)]
struct Tap<T> {
    i0: usize,
    i1: usize,
    w0: T,
    w1: T,
}

fn taps<T: Real>(input: usize, output: usize, align_corners: bool) -> Vec<Tap<T>> {
    // Equal sizes copy in torch (weights 1 and 0), whatever align_corners says.
    if input == output {
        return (0..output)
            .map(|o| Tap {
                i0: o,
                i1: o,
                w0: T::one(),
                w1: T::zero(),
            })
            .collect();
    }
    let scale: T = if align_corners {
        if output > 1 {
            lit::<T>((input - 1) as f64) / lit((output - 1) as f64)
        } else {
            T::zero()
        }
    } else {
        lit::<T>(input as f64) / lit(output as f64)
    };
    let half = lit::<T>(0.5);
    (0..output)
        .map(|o| {
            let o_t = lit::<T>(o as f64);
            let source = if align_corners {
                scale * o_t
            } else {
                fmax(scale * (o_t + half) - half, T::zero())
            };
            let i0 = num_traits::Float::floor(source)
                .to_usize()
                .unwrap_or(0)
                .min(input - 1);
            let w1 = fmin(fmax(source - lit(i0 as f64), T::zero()), T::one());
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                w0: T::one() - w1,
                w1,
            }
        })
        .collect()
}

/// Bilinear resize of a (B, C, H, W) map to (h, w), differentiable.
pub fn upsample_bilinear2d(x: &Tensor, h: usize, w: usize, align_corners: bool) -> Result<Tensor> {
    let (_, _, ih, iw) = x.dims4()?;
    if ih == 0 || iw == 0 || h == 0 || w == 0 {
        bail!("upsample_bilinear2d: empty map ({ih}x{iw} -> {h}x{w})");
    }
    x.contiguous()?.apply_op1(Forward { h, w, align_corners })
}

struct Forward {
    h: usize,
    w: usize,
    align_corners: bool,
}

impl Kernel1 for Forward {
    const NAME: &'static str = "train-upsample-bilinear2d";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, ih, iw) = shape.dims4()?;
        let (oh, ow) = (self.h, self.w);
        let rows = taps::<T>(ih, oh, self.align_corners);
        let cols = taps::<T>(iw, ow, self.align_corners);
        let mut out = vec![T::zero(); b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(ih * iw))
            .for_each(|(dst, plane)| {
                for (r, dst) in rows.iter().zip(dst.chunks_mut(ow)) {
                    let (top, bottom) = (&plane[r.i0 * iw..][..iw], &plane[r.i1 * iw..][..iw]);
                    for (o, t) in dst.iter_mut().zip(&cols) {
                        // torch's order: rows outer, columns inner.
                        *o = r.w0 * (t.w0 * top[t.i0] + t.w1 * top[t.i1])
                            + r.w1 * (t.w0 * bottom[t.i0] + t.w1 * bottom[t.i1]);
                    }
                }
            });
        Ok((out, Shape::from((b, c, oh, ow))))
    }
}

custom_op1!(Forward, |op: &Forward,
                      arg: &Tensor,
                      _res: &Tensor,
                      grad: &Tensor| {
    let (_, _, ih, iw) = arg.dims4()?;
    grad.apply_op1_no_bwd(&Backward {
        ih,
        iw,
        align_corners: op.align_corners,
    })
});

/// The adjoint: output grads (B, C, h, w) scattered back onto (B, C, ih, iw).
struct Backward {
    ih: usize,
    iw: usize,
    align_corners: bool,
}

impl Kernel1 for Backward {
    const NAME: &'static str = "train-upsample-bilinear2d-backward";

    fn run<T: Real>(&self, g: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, oh, ow) = shape.dims4()?;
        let (ih, iw) = (self.ih, self.iw);
        let rows = taps::<T>(ih, oh, self.align_corners);
        let cols = taps::<T>(iw, ow, self.align_corners);
        let mut out = vec![T::zero(); b * c * ih * iw];
        out.par_chunks_mut(ih * iw)
            .zip(g.par_chunks(oh * ow))
            .for_each(|(dst, plane)| {
                for (r, grow) in rows.iter().zip(plane.chunks(ow)) {
                    for (t, &go) in cols.iter().zip(grow) {
                        dst[r.i0 * iw + t.i0] += r.w0 * t.w0 * go;
                        dst[r.i0 * iw + t.i1] += r.w0 * t.w1 * go;
                        dst[r.i1 * iw + t.i0] += r.w1 * t.w0 * go;
                        dst[r.i1 * iw + t.i1] += r.w1 * t.w1 * go;
                    }
                }
            });
        Ok((out, Shape::from((b, c, ih, iw))))
    }
}

custom_op1!(Backward);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};
    use candle_core::Device;

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let x = seeded_normal((2, 3, 5, 4), 0.0, 1.0, 101)?;
        for align_corners in [false, true] {
            for (h, w) in [(9, 7), (3, 2), (5, 4), (1, 6)] {
                let err = check_gradient(&x, |x| upsample_bilinear2d(x, h, w, align_corners), 1)?;
                println!("align_corners {align_corners} {h}x{w}: finite-difference error {err:.1e}");
                assert!(err < 1e-8, "align_corners {align_corners} {h}x{w}: {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn matches_candle_forward() -> Result<()> {
        let x = Tensor::randn(0f32, 1.0, (1, 2, 6, 5), &Device::Cpu)?;
        for align_corners in [false, true] {
            let ours = upsample_bilinear2d(&x, 11, 8, align_corners)?;
            let theirs = x.upsample_bilinear2d(11, 8, align_corners)?;
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{diff}");
        }
        Ok(())
    }
}
