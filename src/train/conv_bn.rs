//! conv -> BatchNorm (train mode) [-> ReLU] as one op. Each node of candle's graph costs a
//! zeroed gradient buffer and an add in the backward pass; a ConvBNReLU as one node saves
//! two full-size passes per layer. The pieces are `conv.rs`'s and `batch_norm.rs`'s: the
//! forward keeps the conv's output and the batch statistics for the backward.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};

use super::batch_norm::{update_running, BatchNorm, BatchNormStats, ChannelMoments};
use super::conv::Conv2d;
use super::kernel::{contiguous, Kernel2, Real};
use crate::models::ops::Geometry;

/// What the forward leaves for the backward and for the running statistics.
struct Saved {
    conv_out: Tensor,
    mean: Vec<f64>,
    var: Vec<f64>,
    inv_std: Vec<f64>,
}

struct ConvBn {
    conv: Conv2d,
    relu: bool,
    eps: f64,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl ConvBn {
    fn run<T: Real>(&self, x: (&[T], &Shape), w: (&[T], &Shape), affine: &[T]) -> Result<(Vec<T>, Shape)> {
        let (y, shape) = self.conv.run(x.0, x.1, w.0, w.1)?;
        let (n, c, h, wd) = shape.dims4()?;
        if affine.len() != 2 * c {
            bail!("conv_bn: {} affine values for {c} channels", affine.len());
        }
        if n * h * wd < 2 {
            bail!(
                "batch_norm2d: {} value(s) per channel; training needs more than 1",
                n * h * wd
            );
        }
        let (mean, var): (Vec<f64>, Vec<f64>) = ChannelMoments::of(&y, (n, c, h * wd)).into_iter().unzip();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let norm = BatchNorm {
            mean: mean.clone(),
            inv_std: inv_std.clone(),
            relu: self.relu,
        };
        let out = norm.forward(&y, &affine[..c], &affine[c..], c, h * wd);
        let conv_out = Tensor::from_vec(y, shape.clone(), &Device::Cpu)?;
        *self.saved.lock().expect("no panic while holding the lock") = Some(Saved {
            conv_out,
            mean,
            var,
            inv_std,
        });
        Ok((out, shape))
    }
}

impl CustomOp3 for ConvBn {
    fn name(&self) -> &'static str {
        "conv-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "conv_bn";
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (out, shape) = self.run::<f32>(
                    (contiguous(s1, l1, name)?, l1.shape()),
                    (contiguous(s2, l2, name)?, l2.shape()),
                    contiguous(s3, l3, name)?,
                )?;
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (out, shape) = self.run::<f64>(
                    (contiguous(s1, l1, name)?, l1.shape()),
                    (contiguous(s2, l2, name)?, l2.shape()),
                    contiguous(s3, l3, name)?,
                )?;
                Ok((CpuStorage::F64(out), shape))
            }
            _ => bail!("conv_bn: input, weight and affine must all be float32 or all float64"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        affine: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("no panic while holding the lock");
        let Some(saved) = saved.as_ref() else {
            bail!("conv_bn: backward before forward");
        };
        let c = saved.mean.len();
        let norm = BatchNorm {
            mean: saved.mean.clone(),
            inv_std: saved.inv_std.clone(),
            relu: self.relu,
        };
        let (gamma, beta) = (affine.get(0)?, affine.get(1)?);
        let (dy, dgamma, dbeta) = norm.bwd(&saved.conv_out, &gamma, &beta, res, grad)?;
        let dy = dy.expect("batch norm gives an input grad");
        let (dx, dw) = self.conv.bwd(x, w, &saved.conv_out, &dy)?;
        let daffine = Tensor::stack(&[dgamma.expect("a weight grad"), dbeta.expect("a bias grad")], 0)?;
        debug_assert_eq!(daffine.dims(), [2, c]);
        Ok((dx, dw, Some(daffine)))
    }
}

/// `bn(conv2d(x, weight))` with the batch's statistics, followed by a ReLU when `relu`;
/// moves `stats` as `batch_norm2d_train` does.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_train(
    x: &Tensor,
    weight: &Tensor,
    (geometry, depthwise): (Geometry, bool),
    (gamma, beta): (&Tensor, &Tensor),
    relu: bool,
    stats: &mut BatchNormStats,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let affine = Tensor::stack(&[gamma, beta], 0)?;
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBn {
        conv: Conv2d { geometry, depthwise },
        relu,
        eps,
        saved: saved.clone(),
    };
    let out = x.contiguous()?.apply_op3(&weight.contiguous()?, &affine, op)?;
    let saved = saved.lock().expect("no panic while holding the lock");
    let saved = saved.as_ref().expect("the forward ran");
    let (n, _, h, w) = out.dims4()?;
    update_running(stats, &saved.mean, &saved.var, n * h * w, momentum)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Var};

    use super::*;
    use crate::train::batch_norm::{batch_norm2d_relu_train, batch_norm2d_train, EPS, MOMENTUM};
    use crate::train::conv::conv2d;
    use crate::train::gradcheck::seeded_normal;

    /// The fused op equals conv2d then batch_norm2d_train[_relu]: output, running
    /// statistics and every gradient.
    #[test]
    fn equals_conv_then_batch_norm() -> Result<()> {
        let g = Geometry {
            padding: 1,
            stride: 2,
            dilation: 1,
        };
        for relu in [false, true] {
            let x = Var::from_tensor(&seeded_normal((2, 3, 7, 6), 0.5, 1.0, 1)?)?;
            let w = Var::from_tensor(&seeded_normal((4, 3, 3, 3), 0.0, 0.5, 2)?)?;
            let gamma = Var::from_tensor(&seeded_normal(4, 1.0, 0.3, 3)?)?;
            let beta = Var::from_tensor(&seeded_normal(4, 0.0, 0.3, 4)?)?;
            let mut ours = BatchNormStats::new(4, DType::F64, &Device::Cpu)?;
            let mut theirs = ours.clone();
            let fused = conv_bn_train(
                &x,
                &w,
                (g, false),
                (&gamma, &beta),
                relu,
                &mut ours,
                MOMENTUM,
                EPS,
            )?;
            let y = conv2d(&x, &w, g, false)?;
            let norm = if relu {
                batch_norm2d_relu_train
            } else {
                batch_norm2d_train
            };
            let composed = norm(&y, Some(&gamma), Some(&beta), &mut theirs, MOMENTUM, EPS)?;
            let gap = |a: &Tensor, b: &Tensor| -> Result<f64> {
                (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
            };
            assert!(gap(&fused, &composed)? < 1e-12);
            assert!(gap(&ours.running_var, &theirs.running_var)? < 1e-12);
            let upstream = seeded_normal(fused.dims(), 0.0, 1.0, 5)?;
            let a = (fused * &upstream)?.sum_all()?.backward()?;
            let b = (composed * &upstream)?.sum_all()?.backward()?;
            for var in [&x, &w, &gamma, &beta] {
                assert!(
                    gap(a.get(var).expect("a grad"), b.get(var).expect("a grad"))? < 1e-10,
                    "relu {relu}"
                );
            }
        }
        Ok(())
    }
}
