//! `nn.BatchNorm2d` in train mode as a function: normalised with the batch's statistics
//! (biased variance), running statistics moved with `momentum` and the unbiased variance,
//! `num_batches_tracked` counted, as torch's `batch_norm_cpu_update_stats_template` does.
//! Normalisation and affine are one custom op over (input, weight, bias) with a backward for
//! all three: candle's broadcast multiply and add, with their backward reductions over
//! (N, H, W), cost four times the rest of the layer.

use candle_core::{bail, DType, Device, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{custom_op2, lit, wide, Kernel2, Real};
use super::residual::WherePositive;

/// torch's defaults, which the experiment's models keep.
pub const MOMENTUM: f64 = 0.1;
pub const EPS: f64 = 1e-5;

/// A BatchNorm layer's buffers (`running_mean`, `running_var`, `num_batches_tracked` in
/// its state dict).
#[derive(Clone, Debug)]
pub struct BatchNormStats {
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: i64,
}

impl BatchNormStats {
    /// A fresh layer's buffers: mean 0, variance 1, no batches seen.
    pub fn new(channels: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(BatchNormStats {
            running_mean: Tensor::zeros(channels, dtype, device)?,
            running_var: Tensor::ones(channels, dtype, device)?,
            num_batches_tracked: 0,
        })
    }
}

/// One train-mode BatchNorm2d forward on (N, C, H, W): returns the output and updates
/// `stats`. `weight` and `bias` are (C,) or absent (`affine=False`).
pub fn batch_norm2d_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: &mut BatchNormStats,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    train_forward(x, weight, bias, stats, (momentum, eps), false)
}

/// `relu(batch_norm2d_train(...))` as one op: the ReLU's forward and backward ride on the
/// normalisation's passes (candle's ReLU backward alone is six passes over the map).
pub fn batch_norm2d_relu_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: &mut BatchNormStats,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    train_forward(x, weight, bias, stats, (momentum, eps), true)
}

fn train_forward(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: &mut BatchNormStats,
    (momentum, eps): (f64, f64),
    relu: bool,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        // torch: "Expected more than 1 value per channel when training".
        bail!("batch_norm2d: {count} value(s) per channel; training needs more than 1");
    }
    if stats.running_mean.dims1()? != c || stats.running_var.dims1()? != c {
        bail!(
            "batch_norm2d: running statistics of {:?} for {c} channels",
            stats.running_mean.shape()
        );
    }
    // affine=False is weight 1 and bias 0 (their grads are then computed and dropped).
    let weight = match weight {
        Some(wt) => wt.clone(),
        None => Tensor::ones(c, x.dtype(), x.device())?,
    };
    let bias = match bias {
        Some(b) => b.clone(),
        None => Tensor::zeros(c, x.dtype(), x.device())?,
    };
    if weight.dims1()? != c || bias.dims1()? != c {
        bail!(
            "batch_norm2d: weight {:?} and bias {:?} for {c} channels",
            weight.shape(),
            bias.shape()
        );
    }
    let x = x.contiguous()?;
    let moments = x.apply_op1_no_bwd(&ChannelMoments)?.to_vec2::<f64>()?;
    let (mean, var) = (&moments[0], &moments[1]);

    update_running(stats, mean, var, count, momentum)?;
    let inv_std = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    x.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        BatchNorm {
            mean: mean.clone(),
            inv_std,
            relu,
        },
    )
}

/// Moves the running statistics by one batch's mean and biased variance over `count`
/// values per channel: in float64, then stored in their own dtype (torch computes them in
/// its accumulation type, double on the CPU), with the unbiased variance.
pub(crate) fn update_running(
    stats: &mut BatchNormStats,
    mean: &[f64],
    var: &[f64],
    count: usize,
    momentum: f64,
) -> Result<()> {
    let old_mean = stats.running_mean.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let old_var = stats.running_var.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let unbiased = count as f64 / (count - 1) as f64;
    let new_mean: Vec<f64> = mean
        .iter()
        .zip(&old_mean)
        .map(|(m, r)| momentum * m + (1.0 - momentum) * r)
        .collect();
    let new_var: Vec<f64> = var
        .iter()
        .zip(&old_var)
        .map(|(v, r)| momentum * v * unbiased + (1.0 - momentum) * r)
        .collect();
    let dev = stats.running_mean.device().clone();
    stats.running_mean = Tensor::new(new_mean, &dev)?.to_dtype(stats.running_mean.dtype())?;
    stats.running_var = Tensor::new(new_var, &dev)?.to_dtype(stats.running_var.dtype())?;
    stats.num_batches_tracked += 1;
    Ok(())
}

/// Per channel of (N, C, H, W): the mean and the biased variance, as a (2, C) float64
/// tensor, accumulated in float64.
pub(crate) struct ChannelMoments;

impl ChannelMoments {
    pub(crate) fn of<T: Real>(x: &[T], (n, c, hw): (usize, usize, usize)) -> Vec<(f64, f64)> {
        let count = (n * hw) as f64;
        (0..c)
            .into_par_iter()
            .map(|ch| {
                let planes = || (0..n).map(move |i| &x[(i * c + ch) * hw..][..hw]);
                let mean = planes().map(|p| lane_sum(p, |v| wide(v))).sum::<f64>() / count;
                let var = planes()
                    .map(|p| {
                        lane_sum(p, |v| {
                            let d = wide(v) - mean;
                            d * d
                        })
                    })
                    .sum::<f64>()
                    / count;
                (mean, var)
            })
            .collect()
    }
}

impl candle_core::CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "train-batch-norm-moments"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let moments = match s {
            candle_core::CpuStorage::F32(_) => Self::of(
                super::kernel::contiguous::<f32>(s, l, "batch_norm")?,
                (n, c, h * w),
            ),
            candle_core::CpuStorage::F64(_) => Self::of(
                super::kernel::contiguous::<f64>(s, l, "batch_norm")?,
                (n, c, h * w),
            ),
            _ => bail!("batch_norm2d: float32 or float64 only"),
        };
        let mut out: Vec<f64> = moments.iter().map(|m| m.0).collect();
        out.extend(moments.iter().map(|m| m.1));
        Ok((candle_core::CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// sum(f(v)) in float64 with eight independent accumulators (one chain of dependent
/// float64 adds runs at a quarter of the memory's speed).
fn lane_sum<T: Real>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// sum(f(a_i, b_i)), the same way.
fn lane_sum_pairs<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((acc, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *acc += f(x, y);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// y = (x - mean_c) inv_std_c w_c + b_c with the batch's statistics, which the backward
/// keeps: in train mode they depend on x, and their derivative is the two mean terms of dx.
pub(crate) struct BatchNorm {
    pub(crate) mean: Vec<f64>,
    pub(crate) inv_std: Vec<f64>,
    /// Followed by a ReLU.
    pub(crate) relu: bool,
}

impl BatchNorm {
    pub(crate) fn forward<T: Real>(&self, x: &[T], w: &[T], b: &[T], c: usize, hw: usize) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(plane, (dst, src))| {
                let ch = plane % c;
                // In the input's precision, as torch: (x - mean) scale + shift.
                let m: T = lit(self.mean[ch]);
                let scale: T = lit(self.inv_std[ch] * wide(w[ch]));
                let shift = b[ch];
                let floor = if self.relu { T::zero() } else { T::neg_infinity() };
                for (o, &v) in dst.iter_mut().zip(src) {
                    let y = (v - m) * scale + shift;
                    *o = if y > floor { y } else { floor };
                }
            });
        out
    }
}

impl candle_core::CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "train-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        use super::kernel::contiguous;
        let (_, c, h, w) = l1.shape().dims4()?;
        let out = match (s1, s2, s3) {
            (
                candle_core::CpuStorage::F32(_),
                candle_core::CpuStorage::F32(_),
                candle_core::CpuStorage::F32(_),
            ) => candle_core::CpuStorage::F32(self.forward::<f32>(
                contiguous(s1, l1, "batch_norm")?,
                contiguous(s2, l2, "batch_norm")?,
                contiguous(s3, l3, "batch_norm")?,
                c,
                h * w,
            )),
            (
                candle_core::CpuStorage::F64(_),
                candle_core::CpuStorage::F64(_),
                candle_core::CpuStorage::F64(_),
            ) => candle_core::CpuStorage::F64(self.forward::<f64>(
                contiguous(s1, l1, "batch_norm")?,
                contiguous(s2, l2, "batch_norm")?,
                contiguous(s3, l3, "batch_norm")?,
                c,
                h * w,
            )),
            _ => bail!("batch_norm2d: input, weight and bias must all be float32 or all float64"),
        };
        Ok((out, l1.shape().clone()))
    }

    /// With y = (x - mean) inv_std and N = n h w per channel: dbias = sum(g),
    /// dweight = sum(g y), dx = w inv_std (g - sum(g) / N - y sum(g y) / N).
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, mut grad) = (x.contiguous()?, grad.contiguous()?);
        if self.relu {
            // ReLU's derivative: 1 where the output is positive.
            grad = res.contiguous()?.apply_op2_no_bwd(&grad, &WherePositive)?;
        }
        let stats = Stats {
            mean: self.mean.clone(),
            inv_std: self.inv_std.clone(),
        };
        let sums = x.apply_op2_no_bwd(&grad, &GradSums(stats.clone()))?;
        let sums_v = sums.to_vec2::<f64>()?;
        let w = weight.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let scale = w.iter().zip(&stats.inv_std).map(|(w, s)| w * s).collect();
        let dx = x.apply_op2_no_bwd(
            &grad,
            &GradInput {
                stats,
                scale,
                sum_g: sums_v[0].clone(),
                sum_gy: sums_v[1].clone(),
            },
        )?;
        let db = sums.get(0)?.to_dtype(weight.dtype())?;
        let dw = sums.get(1)?.to_dtype(weight.dtype())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[derive(Clone)]
struct Stats {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

/// Per channel, in float64: sum(g) and sum(g y), as a (2, C) tensor.
struct GradSums(Stats);

impl candle_core::CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "train-batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        use super::kernel::contiguous;
        let (n, c, h, w) = l1.shape().dims4()?;
        let dims = (n, c, h * w);
        let sums = match (s1, s2) {
            (candle_core::CpuStorage::F32(_), candle_core::CpuStorage::F32(_)) => self.sums::<f32>(
                contiguous(s1, l1, "batch_norm")?,
                contiguous(s2, l2, "batch_norm")?,
                dims,
            ),
            (candle_core::CpuStorage::F64(_), candle_core::CpuStorage::F64(_)) => self.sums::<f64>(
                contiguous(s1, l1, "batch_norm")?,
                contiguous(s2, l2, "batch_norm")?,
                dims,
            ),
            _ => bail!("batch_norm2d backward: float32 or float64 pairs only"),
        };
        let mut out: Vec<f64> = sums.iter().map(|s| s.0).collect();
        out.extend(sums.iter().map(|s| s.1));
        Ok((candle_core::CpuStorage::F64(out), Shape::from((2, c))))
    }
}

impl GradSums {
    fn sums<T: Real>(&self, x: &[T], g: &[T], (n, c, hw): (usize, usize, usize)) -> Vec<(f64, f64)> {
        (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, s) = (self.0.mean[ch], self.0.inv_std[ch]);
                (0..n).fold((0.0, 0.0), |(sg, sgy), i| {
                    let at = (i * c + ch) * hw;
                    let (xs, gs) = (&x[at..at + hw], &g[at..at + hw]);
                    // sum(g y) = s (sum(g x) - m sum(g)).
                    let g_sum = lane_sum(gs, |v| wide(v));
                    let gx_sum = lane_sum_pairs(gs, xs, |gv, xv| wide(gv) * wide(xv));
                    (sg + g_sum, sgy + s * (gx_sum - m * g_sum))
                })
            })
            .collect()
    }
}

/// dx from the input, the upstream grad and the channel sums.
struct GradInput {
    stats: Stats,
    /// weight x inv_std per channel.
    scale: Vec<f64>,
    sum_g: Vec<f64>,
    sum_gy: Vec<f64>,
}

impl Kernel2 for GradInput {
    const NAME: &'static str = "train-batch-norm-grad-input";

    fn run<T: Real>(&self, x: &[T], shape: &Shape, g: &[T], g_shape: &Shape) -> Result<(Vec<T>, Shape)> {
        if shape != g_shape {
            bail!("batch_norm2d backward: grad {g_shape:?} for an output {shape:?}");
        }
        let (n, c, h, w) = shape.dims4()?;
        let hw = h * w;
        let count = (n * hw) as f64;
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(hw).enumerate().for_each(|(plane, dst)| {
            let ch = plane % c;
            let (s, k) = (self.stats.inv_std[ch], self.scale[ch]);
            let (g_mean, gy_mean) = (self.sum_g[ch] / count, self.sum_gy[ch] / count);
            // dx = k g - k s gy_mean (x - mean) - k g_mean, in the input's precision.
            let (m, a, b, c0): (T, T, T, T) = (
                lit(self.stats.mean[ch]),
                lit(k),
                lit(-k * s * gy_mean),
                lit(-k * g_mean),
            );
            let at = plane * hw;
            for (o, (&xv, &gv)) in dst.iter_mut().zip(x[at..at + hw].iter().zip(&g[at..at + hw])) {
                *o = a * gv + b * (xv - m) + c0;
            }
        });
        Ok((out, shape.clone()))
    }
}

custom_op2!(GradInput);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = seeded_normal((3, 4, 3, 5), 1.0, 2.0, 101)?;
        let (w, b) = (seeded_normal(4, 1.0, 0.5, 102)?, seeded_normal(4, 0.0, 0.5, 103)?);
        let bn = |x: &Tensor, w: &Tensor, b: &Tensor| {
            let mut stats = BatchNormStats::new(4, DType::F64, &dev)?;
            batch_norm2d_train(x, Some(w), Some(b), &mut stats, MOMENTUM, EPS)
        };
        let bn_relu = |x: &Tensor, w: &Tensor, b: &Tensor| {
            let mut stats = BatchNormStats::new(4, DType::F64, &dev)?;
            batch_norm2d_relu_train(x, Some(w), Some(b), &mut stats, MOMENTUM, EPS)
        };
        // The fused ReLU is the composition's.
        let (fused, composed) = (bn_relu(&x, &w, &b)?, bn(&x, &w, &b)?.relu()?);
        let gap = (fused - composed)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert_eq!(gap, 0.0);
        for (what, err) in [
            ("input", check_gradient(&x, |x| bn(x, &w, &b), 8)?),
            ("weight", check_gradient(&w, |w| bn(&x, w, &b), 9)?),
            ("bias", check_gradient(&b, |b| bn(&x, &w, b), 10)?),
            (
                "input, with ReLU",
                check_gradient(&x, |x| bn_relu(x, &w, &b), 11)?,
            ),
            (
                "weight, with ReLU",
                check_gradient(&w, |w| bn_relu(&x, w, &b), 12)?,
            ),
            ("bias, with ReLU", check_gradient(&b, |b| bn_relu(&x, &w, b), 13)?),
        ] {
            println!("batch norm {what}: finite-difference error {err:.1e}");
            assert!(err < 1e-7, "{what}: {err}");
        }
        Ok(())
    }

    #[test]
    fn running_statistics_move_with_the_unbiased_variance() -> Result<()> {
        let dev = Device::Cpu;
        // One channel, values 0 and 2: mean 1, biased variance 1, unbiased 2.
        let x = Tensor::new(&[0f32, 2.0], &dev)?.reshape((2, 1, 1, 1))?;
        let mut stats = BatchNormStats::new(1, DType::F32, &dev)?;
        let y = batch_norm2d_train(&x, None, None, &mut stats, MOMENTUM, 0.0)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [-1.0, 1.0]);
        assert!((stats.running_mean.to_vec1::<f32>()?[0] - 0.1).abs() < 1e-7);
        assert!((stats.running_var.to_vec1::<f32>()?[0] - 1.1).abs() < 1e-7);
        assert_eq!(stats.num_batches_tracked, 1);
        let one = Tensor::new(&[3f32], &dev)?.reshape((1, 1, 1, 1))?;
        assert!(batch_norm2d_train(&one, None, None, &mut stats, MOMENTUM, EPS).is_err());
        Ok(())
    }
}
