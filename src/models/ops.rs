//! Building blocks the models share and candle lacks (or does slowly): a depthwise
//! convolution, channels-first layer norm, eval-mode batch norm, adaptive average pooling.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

/// A depthwise k x k convolution (one filter per channel, stride 1). candle runs a grouped
/// convolution as one convolution per group, which made these layers about half of a
/// SegFormer forward; this runs every (image, channel) plane in parallel instead.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2d {
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    padding: usize,
}

impl DepthwiseConv2d {
    pub fn load(vb: VarBuilder, channels: usize, kernel: usize, padding: usize) -> Result<Self> {
        let weight = vb
            .get((channels, 1, kernel, kernel), "weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = vb.get(channels, "bias")?.to_vec1::<f32>()?;
        Ok(DepthwiseConv2d {
            weight,
            bias,
            channels,
            kernel,
            padding,
        })
    }
}

impl CustomOp1 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        if c != self.channels {
            candle_core::bail!("depthwise conv expects {} channels, got {c}", self.channels);
        }
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("depthwise conv needs a contiguous f32 input"),
        };
        let (k, pad) = (self.kernel, self.padding);
        let (oh, ow) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
            let ch = plane % c;
            let src = &input[plane * h * w..(plane + 1) * h * w];
            let filter = &self.weight[ch * k * k..(ch + 1) * k * k];
            out.fill(self.bias[ch]);
            for ky in 0..k {
                for kx in 0..k {
                    let wgt = filter[ky * k + kx];
                    for y in 0..oh {
                        let sy = y + ky;
                        if sy < pad || sy >= h + pad {
                            continue;
                        }
                        let row = &src[(sy - pad) * w..(sy - pad + 1) * w];
                        let dst = &mut out[y * ow..(y + 1) * ow];
                        // Output columns whose input column x + kx - pad is inside the row.
                        let x0 = pad.saturating_sub(kx);
                        let x1 = (w + pad).saturating_sub(kx).min(ow);
                        for x in x0..x1 {
                            dst[x] += wgt * row[x + kx - pad];
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

/// A plain convolution with PyTorch's (kernel, stride, padding), bias optional.
pub fn conv2d(
    vb: VarBuilder,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    if bias {
        candle_nn::conv2d(c_in, c_out, kernel, config, vb)
    } else {
        candle_nn::conv2d_no_bias(c_in, c_out, kernel, config, vb)
    }
}

/// Layer norm over the channel dimension of (B, C, H, W), as ConvNeXt's
/// `data_format="channels_first"`: (x - mean) / sqrt(var + eps) * w + b.
#[derive(Clone, Debug)]
pub struct ChannelsFirstLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl ChannelsFirstLayerNorm {
    pub fn load(vb: VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        Ok(ChannelsFirstLayerNorm {
            weight: vb.get(channels, "weight")?.reshape((1, channels, 1, 1))?,
            bias: vb.get(channels, "bias")?.reshape((1, channels, 1, 1))?,
            eps,
        })
    }
}

impl Module for ChannelsFirstLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Eval-mode batch norm folded to a per-channel scale and shift.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm2d {
    /// PyTorch's BatchNorm2d default eps.
    pub const EPS: f64 = 1e-5;

    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        let mean = vb.get(channels, "running_mean")?;
        let var = vb.get(channels, "running_var")?;
        let scale = weight.div(&(var + Self::EPS)?.sqrt()?)?;
        let shift = bias.sub(&mean.mul(&scale)?)?;
        Ok(BatchNorm2d {
            scale: scale.reshape((1, channels, 1, 1))?,
            shift: shift.reshape((1, channels, 1, 1))?,
        })
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// PyTorch's AdaptiveAvgPool2d: output cell i covers rows floor(i H / s) .. ceil((i+1) H / s).
pub fn adaptive_avg_pool2d(x: &Tensor, size: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let bounds = |i: usize, n: usize| (i * n / size, ((i + 1) * n).div_ceil(size));
    let mut rows = Vec::with_capacity(size);
    for i in 0..size {
        let (y0, y1) = bounds(i, h);
        let band = x.narrow(2, y0, y1 - y0)?;
        let mut cells = Vec::with_capacity(size);
        for j in 0..size {
            let (x0, x1) = bounds(j, w);
            cells.push(
                band.narrow(3, x0, x1 - x0)?
                    .mean_keepdim(D::Minus1)?
                    .mean_keepdim(2)?,
            );
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

/// Bilinear resize with `align_corners=False`, as `F.interpolate(..., mode="bilinear")`.
pub fn resize_bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    if (xh, xw) == (h, w) {
        return Ok(x.clone());
    }
    x.contiguous()?.upsample_bilinear2d(h, w, false)
}

/// Only float checkpoints: an integer tensor where a weight is expected is a wrong file.
pub fn require_float(dtype: DType, name: &str) -> Result<()> {
    match dtype {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        other => candle_core::bail!("tensor {name} has dtype {other:?}; expected a floating-point weight"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn per_item(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Tensor {
        let items: Vec<Tensor> = (0..x.dim(0).unwrap())
            .map(|i| f(&x.narrow(0, i, 1).unwrap()).unwrap())
            .collect();
        Tensor::cat(&items, 0).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Batched ops must treat every image alone.
    #[test]
    fn batched_ops_equal_per_image_ops() {
        let x = Tensor::randn(0f32, 1.0, (3, 4, 9, 7), &Device::Cpu).unwrap();
        // A map smaller than a 7x7 kernel's reach, as ConvNeXt's last stage meets.
        let tiny = Tensor::randn(0f32, 1.0, (2, 2, 2, 3), &Device::Cpu).unwrap();
        let wide = DepthwiseConv2d {
            weight: (0..98).map(|i| i as f32 / 98.0).collect(),
            bias: vec![0.0, 1.0],
            channels: 2,
            kernel: 7,
            padding: 3,
        };
        let reference = tiny
            .conv2d(
                &Tensor::new(wide.weight.clone(), &Device::Cpu)
                    .unwrap()
                    .reshape((2, 1, 7, 7))
                    .unwrap(),
                3,
                1,
                1,
                2,
            )
            .unwrap()
            .broadcast_add(
                &Tensor::new(wide.bias.clone(), &Device::Cpu)
                    .unwrap()
                    .reshape((1, 2, 1, 1))
                    .unwrap(),
            )
            .unwrap();
        assert!(
            max_diff(&wide.forward(&tiny).unwrap(), &reference) < 1e-5,
            "7x7 on a 2x3 map"
        );
        let resize = |t: &Tensor| resize_bilinear(t, 20, 16);
        assert!(
            max_diff(&resize(&x).unwrap(), &per_item(&x, resize)) < 1e-6,
            "bilinear"
        );
        let pool = |t: &Tensor| adaptive_avg_pool2d(t, 3);
        assert!(max_diff(&pool(&x).unwrap(), &per_item(&x, pool)) < 1e-6, "pool");
        let conv = DepthwiseConv2d {
            weight: (0..36).map(|i| i as f32 / 36.0).collect(),
            bias: vec![0.1, 0.2, 0.3, 0.4],
            channels: 4,
            kernel: 3,
            padding: 1,
        };
        let dw = |t: &Tensor| conv.forward(t);
        assert!(max_diff(&dw(&x).unwrap(), &per_item(&x, dw)) < 1e-6, "depthwise");
        let grouped = x
            .conv2d(
                &Tensor::new(conv.weight.clone(), &Device::Cpu)
                    .unwrap()
                    .reshape((4, 1, 3, 3))
                    .unwrap(),
                1,
                1,
                1,
                4,
            )
            .unwrap()
            .broadcast_add(
                &Tensor::new(conv.bias.clone(), &Device::Cpu)
                    .unwrap()
                    .reshape((1, 4, 1, 1))
                    .unwrap(),
            )
            .unwrap();
        assert!(
            max_diff(&dw(&x).unwrap(), &grouped) < 1e-5,
            "depthwise vs grouped conv"
        );
    }
}
