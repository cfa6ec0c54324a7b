//! `F.conv2d` with a backward of our own, dense (groups = 1) or depthwise (groups =
//! channels). candle's conv2d backward runs its naive `conv_transpose2d` for the input grad
//! and splits a grouped conv into one conv per channel; here the dense case is im2col and
//! three matrix products per image (output, weight grad, column grad then col2im), the
//! depthwise one direct loops over (image, channel) planes.

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{custom_op2, Kernel2, Real};
use crate::models::ops::Geometry;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    fn new(x: &Shape, w: &Shape, g: Geometry, depthwise: bool) -> Result<Self> {
        let (b, c_in, h, wd) = x.dims4()?;
        let (c_out, per_filter, kh, kw) = w.dims4()?;
        if kh != kw {
            bail!("conv2d: square kernels only, got {kh}x{kw}");
        }
        let expected = if depthwise { 1 } else { c_in };
        if per_filter != expected || (depthwise && c_out != c_in) {
            bail!(
                "conv2d: weight {:?} does not fit an input of {c_in} channels",
                w.dims()
            );
        }
        Ok(Dims {
            b,
            c_in,
            h,
            w: wd,
            c_out,
            k: kh,
            oh: g.output_len(h, kh)?,
            ow: g.output_len(wd, kw)?,
        })
    }

    fn taps(&self) -> usize {
        self.c_in * self.k * self.k
    }

    fn pixels(&self) -> usize {
        self.oh * self.ow
    }
}

/// The output indices along one axis whose tap `t` reads inside the input (0..len):
/// input index o * stride + t * dilation - padding.
fn valid(t: usize, g: Geometry, len: usize, out_len: usize) -> (usize, usize) {
    let offset = t * g.dilation;
    let lo = g.padding.saturating_sub(offset).div_ceil(g.stride);
    let hi = (len + g.padding).saturating_sub(offset).div_ceil(g.stride);
    (lo.min(out_len), hi.min(out_len))
}

/// Where tap (ti, tj) reads, as runs along the output rows: `f(out, inp, len)` for outputs
/// out..out + len reading inputs inp, inp + stride, ... (row-major planes).
#[inline]
fn tap_runs(d: &Dims, g: Geometry, (ti, tj): (usize, usize), mut f: impl FnMut(usize, usize, usize)) {
    let (y0, y1) = valid(ti, g, d.h, d.oh);
    let (x0, x1) = valid(tj, g, d.w, d.ow);
    if x0 >= x1 {
        return;
    }
    let ix = x0 * g.stride + tj * g.dilation - g.padding;
    for oy in y0..y1 {
        let iy = oy * g.stride + ti * g.dilation - g.padding;
        f(oy * d.ow + x0, iy * d.w + ix, x1 - x0);
    }
}

/// The `len` inputs a run reads, `stride` apart.
#[inline]
fn strided<T: Copy>(src: &[T], start: usize, len: usize, stride: usize) -> impl Iterator<Item = T> + '_ {
    src[start..].iter().step_by(stride).take(len).copied()
}

/// One image's (taps x pixels) column matrix.
fn im2col<T: Real>(x: &[T], d: &Dims, g: Geometry) -> Vec<T> {
    let (k, p) = (d.k, d.pixels());
    let mut cols = vec![T::zero(); d.taps() * p];
    cols.par_chunks_mut(k * k * p).enumerate().for_each(|(c, rows)| {
        let plane = &x[c * d.h * d.w..][..d.h * d.w];
        for (t, row) in rows.chunks_mut(p).enumerate() {
            tap_runs(d, g, (t / k, t % k), |o, i, len| {
                let dst = &mut row[o..o + len];
                if g.stride == 1 {
                    dst.copy_from_slice(&plane[i..i + len]);
                } else {
                    dst.iter_mut()
                        .zip(strided(plane, i, len, g.stride))
                        .for_each(|(v, s)| *v = s);
                }
            });
        }
    });
    cols
}

/// The adjoint of `im2col`: column grads summed into one image's input grad.
fn col2im<T: Real>(cols: &[T], d: &Dims, g: Geometry, dx: &mut [T]) {
    let (k, p) = (d.k, d.pixels());
    dx.par_chunks_mut(d.h * d.w).enumerate().for_each(|(c, plane)| {
        for (t, row) in cols[c * k * k * p..][..k * k * p].chunks(p).enumerate() {
            tap_runs(d, g, (t / k, t % k), |o, i, len| {
                scatter_add(plane, i, g.stride, &row[o..o + len], T::one())
            });
        }
    });
}

/// dst[start + j * stride] += scale * src[j].
#[inline]
fn scatter_add<T: Real>(dst: &mut [T], start: usize, stride: usize, src: &[T], scale: T) {
    if stride == 1 {
        dst[start..start + src.len()]
            .iter_mut()
            .zip(src)
            .for_each(|(v, &s)| *v += scale * s);
    } else {
        dst[start..]
            .iter_mut()
            .step_by(stride)
            .zip(src)
            .for_each(|(v, &s)| *v += scale * s);
    }
}

/// dst (m x n, row-major) = [dst +] lhs (m x k) rhs (k x n), each operand given by its
/// (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real + 'static>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    threads: gemm::Parallelism,
) {
    // Safety: the callers pass buffers of at least the extents these strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            threads,
        );
    }
}

/// A 1x1, stride-1, unpadded dense conv reads the image itself as its column matrix.
fn is_pointwise(d: &Dims, g: Geometry) -> bool {
    d.k == 1 && g.stride == 1 && g.padding == 0
}

fn columns<'a, T: Real>(image: &'a [T], d: &Dims, g: Geometry) -> std::borrow::Cow<'a, [T]> {
    if is_pointwise(d, g) {
        std::borrow::Cow::Borrowed(image)
    } else {
        std::borrow::Cow::Owned(im2col(image, d, g))
    }
}

/// Runs `f(image, chunk, threads)` over `out` cut into one chunk per image: the images in
/// parallel, each product on one thread, when there are at least as many images as threads
/// (no synchronisation inside the products); else one image after the other, each product
/// on every thread.
fn per_image<T: Send>(out: &mut [T], images: usize, f: impl Fn(usize, &mut [T], gemm::Parallelism) + Sync) {
    let len = out.len() / images;
    let threads = rayon::current_num_threads();
    if images >= threads {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk, gemm::Parallelism::None));
    } else {
        out.chunks_mut(len)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk, gemm::Parallelism::Rayon(threads)));
    }
}

fn dense_forward<T: Real + 'static>(x: &[T], w: &[T], d: &Dims, g: Geometry) -> Vec<T> {
    let (kk, p) = (d.taps(), d.pixels());
    let mut out = vec![T::zero(); d.b * d.c_out * p];
    per_image(&mut out, d.b, |image, dst, threads| {
        let cols = columns(&x[image * d.c_in * d.h * d.w..][..d.c_in * d.h * d.w], d, g);
        matmul((d.c_out, p, kk), dst, false, w, (kk, 1), &cols, (p, 1), threads);
    });
    out
}

/// Runs `f(out_plane, input_plane, weight_taps)` over every (image, channel) plane.
fn depthwise_planes<T: Real>(d: &Dims, len: usize, f: impl Fn(usize, usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); d.b * d.c_in * len];
    out.par_chunks_mut(len)
        .enumerate()
        .for_each(|(i, plane)| f(i / d.c_in, i % d.c_in, plane));
    out
}

fn depthwise_forward<T: Real>(x: &[T], w: &[T], d: &Dims, g: Geometry) -> Vec<T> {
    let (k, hw) = (d.k, d.h * d.w);
    depthwise_planes(d, d.pixels(), |b, c, out| {
        let plane = &x[(b * d.c_in + c) * hw..][..hw];
        for (t, &wt) in w[c * k * k..][..k * k].iter().enumerate() {
            tap_runs(d, g, (t / k, t % k), |o, i, len| {
                let dst = &mut out[o..o + len];
                if g.stride == 1 {
                    dst.iter_mut()
                        .zip(&plane[i..i + len])
                        .for_each(|(v, &s)| *v += wt * s);
                } else {
                    dst.iter_mut()
                        .zip(strided(plane, i, len, g.stride))
                        .for_each(|(v, s)| *v += wt * s);
                }
            });
        }
    })
}

/// Forward: (x, weight) -> y, with both grads in `bwd`.
pub(crate) struct Conv2d {
    pub(crate) geometry: Geometry,
    pub(crate) depthwise: bool,
}

impl Kernel2 for Conv2d {
    const NAME: &'static str = "conv2d";
    fn run<T: Real>(&self, x: &[T], xs: &Shape, w: &[T], ws: &Shape) -> Result<(Vec<T>, Shape)> {
        let d = Dims::new(xs, ws, self.geometry, self.depthwise)?;
        let out = if self.depthwise {
            depthwise_forward(x, w, &d, self.geometry)
        } else {
            dense_forward(x, w, &d, self.geometry)
        };
        Ok((out, Shape::from((d.b, d.c_out, d.oh, d.ow))))
    }
}

custom_op2!(Conv2d, |op: &Conv2d,
                     x: &Tensor,
                     w: &Tensor,
                     _: &Tensor,
                     grad: &Tensor| {
    let (g, depthwise) = (op.geometry, op.depthwise);
    let input = InputGrad {
        geometry: g,
        depthwise,
        input: x.shape().clone(),
    };
    let weight = WeightGrad {
        geometry: g,
        depthwise,
        weight: w.shape().clone(),
    };
    Ok((
        grad.apply_op2_no_bwd(w, &input)?,
        x.apply_op2_no_bwd(grad, &weight)?,
    ))
});

/// (grad_out, weight) -> grad_x.
struct InputGrad {
    geometry: Geometry,
    depthwise: bool,
    input: Shape,
}

impl Kernel2 for InputGrad {
    const NAME: &'static str = "conv2d-input-grad";
    fn run<T: Real>(&self, grad: &[T], _: &Shape, w: &[T], ws: &Shape) -> Result<(Vec<T>, Shape)> {
        let g = self.geometry;
        let d = Dims::new(&self.input, ws, g, self.depthwise)?;
        let (hw, p, kk) = (d.h * d.w, d.pixels(), d.taps());
        let dx = if self.depthwise {
            let k = d.k;
            depthwise_planes(&d, hw, |b, c, dx| {
                let gp = &grad[(b * d.c_in + c) * p..][..p];
                for (t, &wt) in w[c * k * k..][..k * k].iter().enumerate() {
                    tap_runs(&d, g, (t / k, t % k), |o, i, len| {
                        scatter_add(dx, i, g.stride, &gp[o..o + len], wt)
                    });
                }
            })
        } else {
            let mut dx = vec![T::zero(); d.b * d.c_in * hw];
            per_image(&mut dx, d.b, |image, dst, threads| {
                let gi = &grad[image * d.c_out * p..][..d.c_out * p];
                // weight^T (taps x c_out) grad (c_out x pixels).
                if is_pointwise(&d, g) {
                    matmul((kk, p, d.c_out), dst, false, w, (1, kk), gi, (p, 1), threads);
                } else {
                    let mut cols = vec![T::zero(); kk * p];
                    matmul(
                        (kk, p, d.c_out),
                        &mut cols,
                        false,
                        w,
                        (1, kk),
                        gi,
                        (p, 1),
                        threads,
                    );
                    col2im(&cols, &d, g, dst);
                }
            });
            dx
        };
        Ok((dx, self.input.clone()))
    }
}
custom_op2!(InputGrad);

/// (x, grad_out) -> grad_weight.
struct WeightGrad {
    geometry: Geometry,
    depthwise: bool,
    weight: Shape,
}

impl Kernel2 for WeightGrad {
    const NAME: &'static str = "conv2d-weight-grad";
    fn run<T: Real>(&self, x: &[T], xs: &Shape, grad: &[T], _: &Shape) -> Result<(Vec<T>, Shape)> {
        let g = self.geometry;
        let d = Dims::new(xs, &self.weight, g, self.depthwise)?;
        let (hw, p, kk, k) = (d.h * d.w, d.pixels(), d.taps(), d.k);
        let dw = if self.depthwise {
            let mut dw = vec![T::zero(); d.c_in * k * k];
            dw.par_chunks_mut(k * k).enumerate().for_each(|(c, taps)| {
                for b in 0..d.b {
                    let plane = &x[(b * d.c_in + c) * hw..][..hw];
                    let gp = &grad[(b * d.c_in + c) * p..][..p];
                    for (t, tap) in taps.iter_mut().enumerate() {
                        let mut sum = T::zero();
                        tap_runs(&d, g, (t / k, t % k), |o, i, len| {
                            let gs = &gp[o..o + len];
                            sum += if g.stride == 1 {
                                gs.iter()
                                    .zip(&plane[i..i + len])
                                    .fold(T::zero(), |acc, (&gv, &xv)| acc + gv * xv)
                            } else {
                                gs.iter()
                                    .zip(strided(plane, i, len, g.stride))
                                    .fold(T::zero(), |acc, (&gv, xv)| acc + gv * xv)
                            };
                        });
                        *tap += sum;
                    }
                }
            });
            dw
        } else {
            // One partial weight grad per image, summed in image order.
            let mut partial = vec![T::zero(); d.b * d.c_out * kk];
            per_image(&mut partial, d.b, |image, dst, threads| {
                let cols = columns(&x[image * d.c_in * hw..][..d.c_in * hw], &d, g);
                let gi = &grad[image * d.c_out * p..][..d.c_out * p];
                // grad (c_out x pixels) cols^T (pixels x taps).
                matmul((d.c_out, kk, p), dst, false, gi, (p, 1), &cols, (1, p), threads);
            });
            let mut dw = partial[..d.c_out * kk].to_vec();
            for image in partial.chunks(d.c_out * kk).skip(1) {
                dw.par_iter_mut().zip(image).for_each(|(a, &b)| *a += b);
            }
            dw
        };
        Ok((dw, self.weight.clone()))
    }
}
custom_op2!(WeightGrad);

/// `F.conv2d(x, weight, stride, padding, dilation, groups)` for groups 1 (`depthwise`
/// false) or groups = channels (weight (C, 1, k, k)), differentiable in both.
pub fn conv2d(x: &Tensor, weight: &Tensor, geometry: Geometry, depthwise: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Conv2d { geometry, depthwise })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as f64 + 1.0) * 0.7391 + seed as f64).sin())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    /// Output and both grads against candle's conv2d (slow but straightforward), in float64.
    /// Square inputs: candle's input grad takes the output padding of both axes from the
    /// height, so it fails on a strided conv of an input whose sides differ in parity.
    #[test]
    fn matches_candle_forward_and_backward() -> Result<()> {
        let cases = [
            (
                2,
                3,
                9,
                9,
                4,
                3,
                Geometry {
                    padding: 1,
                    stride: 1,
                    dilation: 1,
                },
                false,
            ),
            (
                2,
                3,
                8,
                8,
                5,
                3,
                Geometry {
                    padding: 1,
                    stride: 2,
                    dilation: 1,
                },
                false,
            ),
            (
                1,
                4,
                11,
                11,
                3,
                3,
                Geometry {
                    padding: 2,
                    stride: 1,
                    dilation: 2,
                },
                false,
            ),
            (
                2,
                3,
                7,
                7,
                4,
                1,
                Geometry {
                    padding: 0,
                    stride: 1,
                    dilation: 1,
                },
                false,
            ),
            (
                2,
                4,
                9,
                9,
                4,
                3,
                Geometry {
                    padding: 3,
                    stride: 1,
                    dilation: 3,
                },
                true,
            ),
            (
                2,
                4,
                10,
                10,
                4,
                3,
                Geometry {
                    padding: 1,
                    stride: 2,
                    dilation: 1,
                },
                true,
            ),
        ];
        for (i, &(b, c, h, w, c_out, k, g, depthwise)) in cases.iter().enumerate() {
            let per_filter = if depthwise { 1 } else { c };
            let x = Var::from_tensor(&random(&[b, c, h, w], i as u64)?)?;
            let wt = Var::from_tensor(&random(&[c_out, per_filter, k, k], 10 + i as u64)?)?;
            let groups = if depthwise { c } else { 1 };
            let reference = x.conv2d(&wt, g.padding, g.stride, g.dilation, groups)?;
            let ours = conv2d(&x, &wt, g, depthwise)?;
            assert_eq!(ours.dims(), reference.dims(), "case {i}");
            let upstream = random(reference.dims(), 20 + i as u64)?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                (a - b)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()
            };
            assert!(diff(&ours, &reference)? < 1e-12, "case {i} forward");
            let theirs = (reference * &upstream)?.sum_all()?.backward()?;
            let mine = (ours * &upstream)?.sum_all()?.backward()?;
            for (name, var) in [("input", &x), ("weight", &wt)] {
                let (a, b) = (mine.get(var).expect("a grad"), theirs.get(var).expect("a grad"));
                assert!(diff(a, b)? < 1e-10, "case {i} {name} grad: {}", diff(a, b)?);
            }
        }
        Ok(())
    }

    /// Non-square, strided and dilated against finite differences (where candle's own
    /// backward is wrong).
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        use crate::train::gradcheck::{check_gradient, seeded_normal};
        for (depthwise, g) in [
            (
                false,
                Geometry {
                    padding: 1,
                    stride: 2,
                    dilation: 1,
                },
            ),
            (
                false,
                Geometry {
                    padding: 2,
                    stride: 1,
                    dilation: 2,
                },
            ),
            (
                true,
                Geometry {
                    padding: 1,
                    stride: 2,
                    dilation: 1,
                },
            ),
        ] {
            let per_filter = if depthwise { 1 } else { 3 };
            let x = seeded_normal((2, 3, 7, 10), 0.0, 1.0, 1)?;
            let w = seeded_normal((3, per_filter, 3, 3), 0.0, 1.0, 2)?;
            let err = check_gradient(&x, |x| conv2d(x, &w, g, depthwise), 3)?;
            assert!(err < 1e-6, "input grad {g:?}: {err:.2e}");
            let err = check_gradient(&w, |w| conv2d(&x, w, g, depthwise), 4)?;
            assert!(err < 1e-6, "weight grad {g:?}: {err:.2e}");
        }
        Ok(())
    }
}
