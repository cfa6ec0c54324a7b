//! `nn.MaxPool2d` / `nn.AvgPool2d` with padding, any stride and `ceil_mode`, differentiable:
//! candle's pools have a backward only when the stride equals the kernel and have no padding.
//! Windows, output sizes and divisors follow PyTorch's CPU kernels (`pooling_output_shape`,
//! `cpu_max_pool`, `cpu_avg_pool`), so ResNet-D's stem pool (3x3, s2, p1) and timm's
//! shortcut pool (`AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`) come out as
//! torch's.

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{custom_op1, custom_op2, lit, Kernel1, Kernel2, Real};

/// A pool's geometry (square or not), as torch's `kernel_size`, `stride`, `padding`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub ceil_mode: bool,
}

impl Pool2d {
    pub fn new(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Self {
        Pool2d {
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
            ceil_mode,
        }
    }

    /// The output size of a (h, w) input, refusing what torch refuses.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((
            out_len(h, self.kernel.0, self.stride.0, self.padding.0, self.ceil_mode)?,
            out_len(w, self.kernel.1, self.stride.1, self.padding.1, self.ceil_mode)?,
        ))
    }
}

/// `pooling_output_shape` (dilation 1): with `ceil_mode` the last window may hang over the
/// far edge, but it must start inside the input or the left padding.
fn out_len(input: usize, kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        bail!("pool2d: kernel {kernel} and stride {stride} must be positive");
    }
    if pad > kernel / 2 {
        bail!("pool2d: padding {pad} exceeds half the kernel {kernel}");
    }
    let span = input + 2 * pad;
    if span < kernel {
        bail!("pool2d: input {input} (padded {span}) is smaller than the kernel {kernel}");
    }
    let extra = if ceil_mode { stride - 1 } else { 0 };
    let mut out = (span - kernel + extra) / stride + 1;
    if ceil_mode && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    Ok(out)
}

/// The input range a window covers along one axis, clipped to the input, and (for average
/// pooling) its length clipped only to the padded input.
fn window(o: usize, kernel: usize, stride: usize, pad: usize, input: usize) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let padded_end = (start + kernel as isize).min((input + pad) as isize);
    let with_pad = (padded_end - start) as usize;
    let lo = start.max(0) as usize;
    let hi = (padded_end.max(0) as usize).min(input);
    (lo, hi.max(lo), with_pad)
}

/// `F.max_pool2d(x, kernel, stride, padding, ceil_mode=...)` on (B, C, H, W).
pub fn max_pool2d(x: &Tensor, pool: Pool2d) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    pool.output_size(h, w)?;
    x.contiguous()?.apply_op1(MaxForward(pool))
}

/// `F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)` on (B, C, H, W).
pub fn avg_pool2d(x: &Tensor, pool: Pool2d, count_include_pad: bool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    pool.output_size(h, w)?;
    x.contiguous()?.apply_op1(AvgForward {
        pool,
        count_include_pad,
    })
}

/// Per output row, then per output column: the input range its window covers.
type Spans = (Vec<(usize, usize)>, Vec<(usize, usize)>);

/// The clipped input ranges of every output row and column.
fn spans(pool: &Pool2d, (h, w): (usize, usize)) -> Result<Spans> {
    let (oh, ow) = pool.output_size(h, w)?;
    let rows = (0..oh)
        .map(|o| window(o, pool.kernel.0, pool.stride.0, pool.padding.0, h))
        .map(|(a, b, _)| (a, b));
    let cols = (0..ow)
        .map(|o| window(o, pool.kernel.1, pool.stride.1, pool.padding.1, w))
        .map(|(a, b, _)| (a, b));
    Ok((rows.collect(), cols.collect()))
}

/// Calls `f(output index, winning input index)` for each output pixel of one plane: the
/// first maximum of its window in row-major order, a NaN winning over numbers (torch's
/// `val > max || isnan(val)`). Windows are never empty (`out_len` refuses such shapes).
fn for_each_argmax<T: Real>(plane: &[T], w: usize, (rows, cols): &Spans, mut f: impl FnMut(usize, usize)) {
    let ow = cols.len();
    for (oy, &(y0, y1)) in rows.iter().enumerate() {
        for (ox, &(x0, x1)) in cols.iter().enumerate() {
            let mut best = y0 * w + x0;
            let mut best_val = T::neg_infinity();
            for y in y0..y1 {
                let row = &plane[y * w + x0..y * w + x1];
                for (i, &v) in (y * w + x0..).zip(row) {
                    if v > best_val || v.is_nan() {
                        best_val = v;
                        best = i;
                    }
                }
            }
            f(oy * ow + ox, best);
        }
    }
}

/// The forward's half of `for_each_argmax`: only the winning values. Not tracking where
/// they are makes the forward about 4x faster (15 ms for ResNet-D's stem pool at batch 4,
/// 256x256, on this machine's 2 cores; candle's padded pool takes 30).
fn max_values<T: Real>(plane: &[T], w: usize, (rows, cols): &Spans, dst: &mut [T]) {
    for (&(y0, y1), dst) in rows.iter().zip(dst.chunks_mut(cols.len())) {
        for (o, &(x0, x1)) in dst.iter_mut().zip(cols) {
            let mut best = T::neg_infinity();
            for y in y0..y1 {
                for &v in &plane[y * w + x0..y * w + x1] {
                    best = if v > best || v.is_nan() { v } else { best };
                }
            }
            *o = best;
        }
    }
}

struct MaxForward(Pool2d);

impl Kernel1 for MaxForward {
    const NAME: &'static str = "train-max-pool2d";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = shape.dims4()?;
        let (oh, ow) = self.0.output_size(h, w)?;
        let spans = spans(&self.0, (h, w))?;
        let mut out = vec![T::zero(); b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, plane)| {
                max_values(plane, w, &spans, dst);
            });
        Ok((out, Shape::from((b, c, oh, ow))))
    }
}

// The winners are found again from the input rather than kept from the forward: the op
// stays a plain value, and the search costs one more pass over a map we already hold.
custom_op1!(MaxForward, |op: &MaxForward,
                         arg: &Tensor,
                         _res: &Tensor,
                         grad: &Tensor| {
    arg.contiguous()?.apply_op2_no_bwd(grad, &MaxBackward(op.0))
});

struct MaxBackward(Pool2d);

custom_op2!(MaxBackward);

impl Kernel2 for MaxBackward {
    const NAME: &'static str = "train-max-pool2d-backward";

    fn run<T: Real>(&self, x: &[T], x_shape: &Shape, g: &[T], g_shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = x_shape.dims4()?;
        let (oh, ow) = self.0.output_size(h, w)?;
        if g_shape.dims4()? != (b, c, oh, ow) {
            bail!("max_pool2d backward: grad {g_shape:?} for an output of ({b}, {c}, {oh}, {ow})");
        }
        let spans = spans(&self.0, (h, w))?;
        let mut out = vec![T::zero(); b * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(g.par_chunks(oh * ow))
            .for_each(|((dst, plane), grad)| for_each_argmax(plane, w, &spans, |o, i| dst[i] += grad[o]));
        Ok((out, x_shape.clone()))
    }
}

struct AvgForward {
    pool: Pool2d,
    count_include_pad: bool,
}

/// Rows y0..y1, columns x0..x1, and the divisor.
type AvgWindow = (usize, usize, usize, usize, f64);

/// Each output pixel's window and divisor, in torch's terms: the divisor is the window
/// clipped to the padded input with `count_include_pad`, to the input itself without.
fn avg_windows(pool: &Pool2d, count_include_pad: bool, (h, w): (usize, usize)) -> Result<Vec<AvgWindow>> {
    let (oh, ow) = pool.output_size(h, w)?;
    let mut v = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        let (y0, y1, ph) = window(oy, pool.kernel.0, pool.stride.0, pool.padding.0, h);
        for ox in 0..ow {
            let (x0, x1, pw) = window(ox, pool.kernel.1, pool.stride.1, pool.padding.1, w);
            let count = if count_include_pad {
                ph * pw
            } else {
                (y1 - y0) * (x1 - x0)
            };
            v.push((y0, y1, x0, x1, count.max(1) as f64));
        }
    }
    Ok(v)
}

impl Kernel1 for AvgForward {
    const NAME: &'static str = "train-avg-pool2d";

    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = shape.dims4()?;
        let (oh, ow) = self.pool.output_size(h, w)?;
        let windows = avg_windows(&self.pool, self.count_include_pad, (h, w))?;
        let mut out = vec![T::zero(); b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, plane)| {
                for (o, &(y0, y1, x0, x1, count)) in dst.iter_mut().zip(&windows) {
                    let mut sum = T::zero();
                    for y in y0..y1 {
                        for x in x0..x1 {
                            sum += plane[y * w + x];
                        }
                    }
                    *o = sum / lit(count);
                }
            });
        Ok((out, Shape::from((b, c, oh, ow))))
    }
}

custom_op1!(AvgForward, |op: &AvgForward,
                         arg: &Tensor,
                         _res: &Tensor,
                         grad: &Tensor| {
    let (_, _, h, w) = arg.dims4()?;
    grad.apply_op1_no_bwd(&AvgBackward {
        pool: op.pool,
        count_include_pad: op.count_include_pad,
        h,
        w,
    })
});

struct AvgBackward {
    pool: Pool2d,
    count_include_pad: bool,
    h: usize,
    w: usize,
}

impl Kernel1 for AvgBackward {
    const NAME: &'static str = "train-avg-pool2d-backward";

    fn run<T: Real>(&self, g: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)> {
        let (b, c, oh, ow) = shape.dims4()?;
        let (h, w) = (self.h, self.w);
        let windows = avg_windows(&self.pool, self.count_include_pad, (h, w))?;
        if windows.len() != oh * ow {
            bail!("avg_pool2d backward: grad {shape:?} does not fit a {h}x{w} input");
        }
        let mut out = vec![T::zero(); b * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(g.par_chunks(oh * ow))
            .for_each(|(dst, grad)| {
                for (&go, &(y0, y1, x0, x1, count)) in grad.iter().zip(&windows) {
                    let share = go / lit(count);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            dst[y * w + x] += share;
                        }
                    }
                }
            });
        Ok((out, Shape::from((b, c, h, w))))
    }
}

custom_op1!(AvgBackward);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};

    const POOLS: [(usize, usize, usize, bool); 5] = [
        (3, 2, 1, false),
        (2, 2, 0, true),
        (2, 1, 0, false),
        (3, 1, 1, true),
        (3, 3, 1, true),
    ];

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for (h, w) in [(7, 6), (5, 5)] {
            let x = seeded_normal((2, 2, h, w), 0.0, 1.0, 101)?;
            for (k, s, p, ceil) in POOLS {
                let pool = Pool2d::new(k, s, p, ceil);
                let err = check_gradient(&x, |x| max_pool2d(x, pool), 3)?;
                println!("max {pool:?} {h}x{w}: finite-difference error {err:.1e}");
                assert!(err < 1e-8, "max {pool:?} {h}x{w}: {err}");
                for include in [false, true] {
                    let err = check_gradient(&x, |x| avg_pool2d(x, pool, include), 4)?;
                    println!("avg {pool:?} include {include} {h}x{w}: finite-difference error {err:.1e}");
                    assert!(err < 1e-8, "avg {pool:?} include {include} {h}x{w}: {err}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn output_sizes_follow_torch() -> Result<()> {
        // ResNet-D stem on 7 and 8, timm's ceil-mode shortcut on odd and even sides.
        assert_eq!(Pool2d::new(3, 2, 1, false).output_size(7, 8)?, (4, 4));
        assert_eq!(Pool2d::new(2, 2, 0, true).output_size(7, 8)?, (4, 4));
        assert_eq!(Pool2d::new(2, 2, 0, false).output_size(7, 8)?, (3, 4));
        // ceil_mode's last window must start inside the input plus the left padding.
        assert_eq!(Pool2d::new(3, 3, 1, true).output_size(5, 5)?, (2, 2));
        assert!(Pool2d::new(3, 2, 2, false).output_size(7, 7).is_err());
        assert!(Pool2d::new(3, 2, 0, false).output_size(2, 7).is_err());
        Ok(())
    }
}
