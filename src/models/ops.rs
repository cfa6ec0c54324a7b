//! Building blocks the models share and candle lacks (or does slowly): a depthwise
//! convolution, channels-first layer norm, eval-mode batch norm, adaptive average pooling.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::winograd::Winograd;
use crate::simd::vectorized;

/// A depthwise k x k convolution (one filter per channel; any stride and dilation). candle
/// runs a grouped convolution as one convolution per group, which made these layers about
/// half of a SegFormer forward; this runs every (image, channel) plane in parallel instead.
#[derive(Clone, Debug)]
pub struct DepthwiseConv2d {
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    geometry: Geometry,
    activation: Activation,
    /// The same weights as tensors, for candle's grouped conv off the CPU.
    portable: (Tensor, Tensor),
}

/// An elementwise activation fused into a convolution's output pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
    /// x sigmoid(x), as `nn.SiLU`.
    Silu,
    /// x Phi(x), as `nn.GELU()` (the erf form).
    Gelu,
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, a few float32 ulps of
/// GELU's output), written without calls so that loops over it vectorise (libm's erff, which
/// candle's GELU uses, is a scalar call and was a sixth of a ConvNeXt forward).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly =
        ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
    (1.0 - poly * exp_non_positive(-a * a)).copysign(x)
}

/// e^x for x <= 0 (x below -80 gives e^-80): 2^n e^r with |r| <= ln 2 / 2 and a degree-6
/// polynomial for e^r, branch-free.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    // Not below -80: e^-80 times the erf polynomial stays a normal float (denormals are
    // ~100x slower to compute with), and 1 - that is 1 either way.
    let x = x.max(-80.0);
    // Round to nearest by adding 1.5 2^23: the sum's low mantissa bits then hold n as an
    // integer (f32::round and float-to-int casts are calls or checks that stop the loop
    // from vectorising).
    const SHIFTER: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let n_int = shifted.to_bits().wrapping_sub(SHIFTER.to_bits());
    // ln 2 split in two so that n ln 2 is subtracted without rounding error.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(n_int.wrapping_add(127) << 23)
}

impl Activation {
    #[inline]
    pub fn scalar(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::Gelu => 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    /// `v = act(v + bias)` over a slice, one loop per activation so that each vectorises.
    #[inline(always)]
    pub fn apply(self, values: &mut [f32], bias: f32) {
        match self {
            Activation::Identity => values.iter_mut().for_each(|v| *v += bias),
            Activation::Relu => values.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
            Activation::Relu6 => values.iter_mut().for_each(|v| *v = (*v + bias).clamp(0.0, 6.0)),
            Activation::Silu => values
                .iter_mut()
                .for_each(|v| *v = Activation::Silu.scalar(*v + bias)),
            Activation::Gelu => values
                .iter_mut()
                .for_each(|v| *v = Activation::Gelu.scalar(*v + bias)),
        }
    }

    /// `row = act(row + bias)` elementwise with a bias per element.
    #[inline(always)]
    pub fn apply_biased(self, row: &mut [f32], bias: &[f32]) {
        macro_rules! each {
            ($f:expr) => {
                row.iter_mut().zip(bias).for_each(|(v, &b)| *v = $f(*v + b))
            };
        }
        match self {
            Activation::Identity => each!(|v: f32| v),
            Activation::Relu => each!(|v: f32| v.max(0.0)),
            Activation::Relu6 => each!(|v: f32| v.clamp(0.0, 6.0)),
            Activation::Silu => each!(|v| Activation::Silu.scalar(v)),
            Activation::Gelu => each!(|v| Activation::Gelu.scalar(v)),
        }
    }

    /// The same on a tensor (devices our kernels do not run on).
    pub fn tensor(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.clamp(0f32, 6f32),
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

/// PyTorch's padding, stride and dilation of a convolution (the same along both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl Geometry {
    pub fn padded(padding: usize) -> Self {
        Geometry {
            padding,
            stride: 1,
            dilation: 1,
        }
    }

    /// The output length along an axis of `len` for a kernel of `kernel` taps, or an error
    /// when the (padded) input is shorter than the dilated kernel.
    pub fn output_len(&self, len: usize, kernel: usize) -> Result<usize> {
        let reach = self.dilation * (kernel - 1) + 1;
        let padded = len + 2 * self.padding;
        if padded < reach {
            candle_core::bail!(
                "a {kernel}x{kernel} convolution (dilation {}) needs at least {} pixels per side after padding, got {len}: the input is too small for this model",
                self.dilation,
                reach.saturating_sub(2 * self.padding)
            );
        }
        Ok((padded - reach) / self.stride + 1)
    }
}

impl DepthwiseConv2d {
    pub fn load(vb: VarBuilder, channels: usize, kernel: usize, padding: usize) -> Result<Self> {
        let weight = vb
            .get((channels, 1, kernel, kernel), "weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = vb.get(channels, "bias")?.to_vec1::<f32>()?;
        Self::new(weight, bias, kernel, Geometry::padded(padding), vb.device())
    }

    /// From a (C, 1, k, k) weight and C biases, row-major.
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        kernel: usize,
        geometry: Geometry,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let channels = bias.len();
        let portable = (
            Tensor::from_slice(&weight, (channels, 1, kernel, kernel), device)?,
            Tensor::from_slice(&bias, (1, channels, 1, 1), device)?,
        );
        Ok(DepthwiseConv2d {
            weight,
            bias,
            channels,
            kernel,
            geometry,
            activation: Activation::Identity,
            portable,
        })
    }

    /// The same convolution followed by `activation`, applied in its output pass.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// candle's grouped convolution: the same function, for devices our kernel does not run on.
    fn forward_portable(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = &self.portable;
        let g = self.geometry;
        let y = x
            .conv2d(weight, g.padding, g.stride, g.dilation, self.channels)?
            .broadcast_add(bias)?;
        self.activation.tensor(&y)
    }
}

/// Whether our CPU kernels apply: on CPU tensors that carry no gradient (training takes
/// candle's differentiable ops), unless RANKSEG_PORTABLE_OPS is set (the tests set it to
/// check that candle's own ops, which other devices use, agree).
pub fn custom_kernels(x: &Tensor) -> bool {
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    x.device().is_cpu()
        && !x.track_op()
        && !*PORTABLE.get_or_init(|| std::env::var_os("RANKSEG_PORTABLE_OPS").is_some())
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
        let k = self.kernel;
        let Geometry {
            padding: pad,
            stride: s,
            dilation: d,
        } = self.geometry;
        let (oh, ow) = (self.geometry.output_len(h, k)?, self.geometry.output_len(w, k)?);
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
            vectorized(
                #[inline(always)]
                || {
                    let ch = plane % c;
                    let src = &input[plane * h * w..(plane + 1) * h * w];
                    let filter = &self.weight[ch * k * k..(ch + 1) * k * k];
                    out.fill(self.bias[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let wgt = filter[ky * k + kx];
                            // Output columns x whose input column x s + kx d - pad is inside the row.
                            let shift = kx * d;
                            let x0 = pad.saturating_sub(shift).div_ceil(s);
                            let x1 = (w + pad).saturating_sub(shift).div_ceil(s).min(ow);
                            if x0 >= x1 {
                                continue;
                            }
                            for y in 0..oh {
                                let sy = y * s + ky * d;
                                if sy < pad || sy >= h + pad {
                                    continue;
                                }
                                let row = &src[(sy - pad) * w..(sy - pad + 1) * w];
                                let dst = &mut out[y * ow..(y + 1) * ow];
                                if s == 1 {
                                    let from = &row[x0 + shift - pad..x1 + shift - pad];
                                    for (o, &v) in dst[x0..x1].iter_mut().zip(from) {
                                        *o += wgt * v;
                                    }
                                } else {
                                    for x in x0..x1 {
                                        dst[x] += wgt * row[x * s + shift - pad];
                                    }
                                }
                            }
                        }
                    }
                    if self.activation != Activation::Identity {
                        self.activation.apply(out, 0.0);
                    }
                },
            )
        });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !custom_kernels(x) {
            return self.forward_portable(x);
        }
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl DepthwiseConv2d {
    /// The same convolution on tokens (B, H*W, C) (channels last), as SegFormer's Mix-FFN
    /// holds them: no transposes to and from (B, C, H, W) around it.
    pub fn forward_tokens(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        if !custom_kernels(x) {
            let (b, n, c) = x.dims3()?;
            let map = x.transpose(1, 2)?.reshape((b, c, h, w))?;
            return self
                .forward_portable(&map)?
                .reshape((b, c, n))?
                .transpose(1, 2)?
                .contiguous();
        }
        x.contiguous()?
            .apply_op1_no_bwd(&TokenDepthwise { conv: self, h, w })
    }
}

struct TokenDepthwise<'a> {
    conv: &'a DepthwiseConv2d,
    h: usize,
    w: usize,
}

impl CustomOp1 for TokenDepthwise<'_> {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-tokens"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n, c) = layout.shape().dims3()?;
        let (h, w, conv) = (self.h, self.w, self.conv);
        if n != h * w || c != conv.channels {
            candle_core::bail!(
                "depthwise conv on tokens: got ({b}, {n}, {c}) for a {h}x{w} map of {} channels",
                conv.channels
            );
        }
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("depthwise conv needs a contiguous f32 input"),
        };
        let (k, pad) = (conv.kernel, conv.geometry.padding);
        // Taps laid out (ky, kx, channel) so the inner loop runs along contiguous channels.
        let mut taps = vec![0f32; k * k * c];
        for ch in 0..c {
            for t in 0..k * k {
                taps[t * c + ch] = conv.weight[ch * k * k + t];
            }
        }
        let mut out = vec![0f32; b * n * c];
        out.par_chunks_mut(w * c).enumerate().for_each(|(row, dst)| {
            let (image, y) = (row / h, row % h);
            let src = &input[image * n * c..(image + 1) * n * c];
            vectorized(
                #[inline(always)]
                || {
                    for x in 0..w {
                        let pixel = &mut dst[x * c..(x + 1) * c];
                        pixel.copy_from_slice(&conv.bias);
                        for ky in 0..k {
                            let sy = y + ky;
                            if sy < pad || sy >= h + pad {
                                continue;
                            }
                            for kx in 0..k {
                                let sx = x + kx;
                                if sx < pad || sx >= w + pad {
                                    continue;
                                }
                                let from = &src[((sy - pad) * w + sx - pad) * c..][..c];
                                let tap = &taps[(ky * k + kx) * c..][..c];
                                for ((o, &v), &t) in pixel.iter_mut().zip(from).zip(tap) {
                                    *o += v * t;
                                }
                            }
                        }
                        if conv.activation != Activation::Identity {
                            conv.activation.apply(pixel, 0.0);
                        }
                    }
                },
            );
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}

/// A convolution with PyTorch's (kernel, stride, padding, dilation), bias optional.
///
/// Stride-1 "same" convolutions (the 1x1s, the 3x3s of the decode heads, the dilated 3x3s of
/// ASPP) run as one matrix product per kernel tap, accumulated in place by gemm over shifted
/// views of the padded input: the arithmetic of im2col without materialising the
/// (C_in k^2) x (H W) matrix, which for UperNet's 2048-channel fusion conv is over a gigabyte
/// of page faults. Other shapes (the patchifying strided convs) go to candle's conv2d.
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    /// The same-padding path's copy of the weight, (C_out, C_in, k, k) row-major, and of
    /// the bias (zeros without one).
    same: Option<(Vec<f32>, Vec<f32>)>,
    /// 3x3 padding-1 convolutions with enough channels: Winograd F(2x2, 3x3).
    winograd: Option<Winograd>,
    bias: Option<Tensor>,
    kernel: usize,
    geometry: Geometry,
    activation: Activation,
}

pub fn conv2d(
    vb: VarBuilder,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Result<Conv> {
    let weight = vb.get((c_out, c_in, kernel, kernel), "weight")?;
    let bias = if bias { Some(vb.get(c_out, "bias")?) } else { None };
    Conv::new(
        weight,
        bias,
        Geometry {
            padding,
            stride,
            dilation: 1,
        },
    )
}

impl Conv {
    /// From a (C_out, C_in, k, k) weight and optional C_out biases.
    pub fn new(weight: Tensor, bias: Option<Tensor>, geometry: Geometry) -> Result<Self> {
        let kernel = weight.dim(3)?;
        let same = if geometry.stride == 1 && 2 * geometry.padding == geometry.dilation * (kernel - 1) {
            let bias = match &bias {
                Some(b) => b.to_vec1::<f32>()?,
                None => vec![0.0; weight.dim(0)?],
            };
            Some((weight.flatten_all()?.to_vec1::<f32>()?, bias))
        } else {
            None
        };
        let c_in = weight.dim(1)?;
        let winograd = match &same {
            Some((w, b))
                if kernel == 3
                    && geometry.dilation == 1
                    && c_in >= WINOGRAD_MIN_IN
                    && b.len() >= WINOGRAD_MIN_OUT =>
            {
                Some(Winograd::new(w, b.clone(), c_in))
            }
            _ => None,
        };
        Ok(Conv {
            weight,
            same,
            winograd,
            bias,
            kernel,
            geometry,
            activation: Activation::Identity,
        })
    }

    /// The same convolution followed by `activation` (in the output pass where it can).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// A stride-1 same-padding conv from a (C_out, C_in, k, k) weight computed elsewhere.
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let padding = weight.dim(3)? / 2;
        Conv::new(weight, bias, Geometry::padded(padding))
    }
}

/// About how many output columns (pixels of the padded width) a block of the same-padding
/// convolution covers.
const BLOCK_COLUMNS: usize = 4096;

/// Channels from which a 3x3 convolution goes through Winograd: below, the transforms and
/// the 16 smaller products cost more than the multiplications they save (measured on 2
/// cores with AVX-512: 1536 -> 512 at 64x64 138 ms against 174 ms direct, 512 -> 512 53
/// against 60, but 256 -> 256 at 48x48 12 against 10).
const WINOGRAD_MIN_IN: usize = 512;
const WINOGRAD_MIN_OUT: usize = 256;

/// The same-padding convolution as a custom op: input (B, C_in, H, W) in, (B, C_out, H, W)
/// out, bias and activation applied while the result is copied out.
struct SameConv<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    kernel: usize,
    dilation: usize,
    activation: Activation,
}

impl SameConv<'_> {
    /// A 1x1 convolution: one matrix product per image straight into the output, then the
    /// bias and activation in place (no padded copy, no staging buffer).
    fn pointwise(&self, input: &[f32], b: usize, c_in: usize, pixels: usize) -> Vec<f32> {
        let c_out = self.bias.len();
        let mut out = vec![0f32; b * c_out * pixels];
        let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
        for image in 0..b {
            let dst = &mut out[image * c_out * pixels..(image + 1) * c_out * pixels];
            // Safety: dst (c_out x pixels), weight (c_out x c_in) and the image (c_in x
            // pixels) are the buffers above with the strides that describe them.
            unsafe {
                gemm::gemm(
                    c_out,
                    pixels,
                    c_in,
                    dst.as_mut_ptr(),
                    1,
                    pixels as isize,
                    false,
                    self.weight.as_ptr(),
                    1,
                    c_in as isize,
                    input.as_ptr().add(image * c_in * pixels),
                    1,
                    pixels as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    threads,
                );
            }
            let act = self.activation;
            dst.par_chunks_mut(pixels)
                .zip(self.bias.par_iter())
                .for_each(|(plane, &bias)| {
                    vectorized(
                        #[inline(always)]
                        || act.apply(plane, bias),
                    )
                });
        }
        out
    }
}

impl CustomOp1 for SameConv<'_> {
    fn name(&self) -> &'static str {
        "same-padding-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c_in, h, w) = layout.shape().dims4()?;
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("same-padding conv needs a contiguous f32 input"),
        };
        let (k, c_out, d) = (self.kernel, self.bias.len(), self.dilation);
        if k == 1 {
            return Ok((
                CpuStorage::F32(self.pointwise(input, b, c_in, h * w)),
                Shape::from((b, c_out, h, w)),
            ));
        }
        let pad = d * (k / 2);
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        // Each channel padded, plus (k - 1) d trailing zeros so every tap's view stays inside.
        let row = hp * wp + (k - 1) * d;
        let mut padded = vec![0f32; c_in * row];
        // The output on the padded width: column x >= w of each row is discarded.
        let mut full = vec![0f32; c_out * h * wp];
        let mut out = vec![0f32; b * c_out * h * w];
        let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
        for image in 0..b {
            let src = &input[image * c_in * h * w..(image + 1) * c_in * h * w];
            padded
                .par_chunks_mut(row)
                .zip(src.par_chunks(h * w))
                .for_each(|(dst, plane)| {
                    for y in 0..h {
                        let at = (y + pad) * wp + pad;
                        dst[at..at + w].copy_from_slice(&plane[y * w..(y + 1) * w]);
                    }
                });
            // Output rows go in blocks of about BLOCK_COLUMNS columns, all taps of a block
            // before the next, so that the block's input rows and partial sums stay in cache
            // (on large maps with few channels streaming the whole output once per tap was
            // memory-bound). A tap whose input row y + (ky - k/2) d falls outside the map for
            // some output rows (large dilations) runs only over the rows where it reads it.
            let block_rows = (BLOCK_COLUMNS / wp).max(1);
            let zero_rows = |full: &mut [f32], start: usize, end: usize| {
                for plane in full.chunks_exact_mut(h * wp) {
                    plane[start * wp..end * wp].fill(0.0);
                }
            };
            for start in (0..h).step_by(block_rows) {
                let end = (start + block_rows).min(h);
                let mut first = true;
                for tap in 0..k * k {
                    let (ky, kx) = (tap / k, tap % k);
                    let y0 = pad.saturating_sub(ky * d).max(start);
                    let y1 = (h + pad).saturating_sub(ky * d).min(end);
                    if y0 >= y1 {
                        continue;
                    }
                    if first && (y0, y1) != (start, end) {
                        zero_rows(&mut full, start, end);
                    }
                    // Safety: all pointers address the buffers above with the strides that
                    // describe them; m x n x depth = c_out x ((y1 - y0) wp) x c_in stays in
                    // bounds (the last read is below ((y1 - 1 + ky d) wp + kx d) + wp <= hp wp
                    // + (k - 1) d = row).
                    unsafe {
                        gemm::gemm(
                            c_out,
                            (y1 - y0) * wp,
                            c_in,
                            full.as_mut_ptr().add(y0 * wp),
                            1,
                            (h * wp) as isize,
                            !first,
                            self.weight.as_ptr().add(tap),
                            (k * k) as isize,
                            (c_in * k * k) as isize,
                            padded.as_ptr().add((y0 + ky * d) * wp + kx * d),
                            1,
                            row as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            threads,
                        );
                    }
                    first = false;
                }
                if first {
                    zero_rows(&mut full, start, end);
                }
            }
            let dst = &mut out[image * c_out * h * w..(image + 1) * c_out * h * w];
            let act = self.activation;
            dst.par_chunks_mut(h * w)
                .zip(full.par_chunks(h * wp))
                .zip(self.bias.par_iter())
                .for_each(|((plane, computed), &bias)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for y in 0..h {
                                let row = &mut plane[y * w..(y + 1) * w];
                                row.copy_from_slice(&computed[y * wp..y * wp + w]);
                                act.apply(row, bias);
                            }
                        },
                    )
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, h, w))))
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let (Some(winograd), true) = (&self.winograd, custom_kernels(x)) {
            return x.contiguous()?.apply_op1_no_bwd(&winograd.with(self.activation));
        }
        if let (Some((weight, bias)), true) = (&self.same, custom_kernels(x)) {
            return x.contiguous()?.apply_op1_no_bwd(&SameConv {
                weight,
                bias,
                kernel: self.kernel,
                dilation: self.geometry.dilation,
                activation: self.activation,
            });
        }
        let (_, _, h, w) = x.dims4()?;
        let g = self.geometry;
        g.output_len(h, self.kernel)?;
        g.output_len(w, self.kernel)?;
        let y = x.conv2d(&self.weight, g.padding, g.stride, g.dilation, 1)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)?,
            None => y,
        };
        self.activation.tensor(&y)
    }
}

/// A linear layer on the last dimension, `act(x W^T + b)`, with the bias and activation
/// applied in one pass over gemm's output (candle's Linear adds the bias in a pass of its
/// own and GELU in another).
#[derive(Clone, Debug)]
pub struct Dense {
    /// (C_out, C_in) row-major, and as a tensor for other devices.
    weight: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
    portable: candle_nn::Linear,
}

impl Dense {
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, activation: Activation) -> Result<Self> {
        let weight = vb.get((c_out, c_in), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Ok(Dense {
            weight: weight.flatten_all()?.to_vec1::<f32>()?,
            bias: bias.to_vec1::<f32>()?,
            activation,
            portable: candle_nn::Linear::new(weight, Some(bias)),
        })
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !custom_kernels(x) || x.dtype() != DType::F32 {
            return self.activation.tensor(&self.portable.forward(x)?);
        }
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let c_out = self.bias.len();
        let c_in = self.weight.len() / c_out;
        let (&last, lead) = dims
            .split_last()
            .ok_or_else(|| candle_core::Error::Msg("dense: a scalar input".into()))?;
        if last != c_in {
            candle_core::bail!("dense layer of {c_in} inputs got a last dimension of {last}");
        }
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("dense layer needs a contiguous f32 input"),
        };
        let rows: usize = lead.iter().product();
        let mut out = vec![0f32; rows * c_out];
        // Safety: dst (rows x c_out), lhs (rows x c_in) and rhs = W^T (c_in x c_out, read
        // from W's rows) are the buffers above with the strides that describe them.
        unsafe {
            gemm::gemm(
                rows,
                c_out,
                c_in,
                out.as_mut_ptr(),
                1,
                c_out as isize,
                false,
                input.as_ptr(),
                1,
                c_in as isize,
                self.weight.as_ptr(),
                c_in as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        let act = self.activation;
        out.par_chunks_mut(c_out * 64.min(rows.max(1))).for_each(|chunk| {
            vectorized(
                #[inline(always)]
                || {
                    for row in chunk.chunks_mut(c_out) {
                        act.apply_biased(row, &self.bias);
                    }
                },
            )
        });
        let mut shape = lead.to_vec();
        shape.push(c_out);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
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

impl BatchNorm2d {
    /// The per-channel scale, (1, C, 1, 1).
    pub fn scale(&self) -> &Tensor {
        &self.scale
    }

    /// The per-channel shift, (1, C, 1, 1).
    pub fn shift(&self) -> &Tensor {
        &self.shift
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
    resize_bilinear_aligned(x, h, w, false)
}

/// `F.interpolate(x, (h, w), mode="bilinear", align_corners=...)`. On the CPU, our own
/// kernel: PyTorch's source indices and weights in float32, every (image, channel) plane in
/// parallel (candle's runs in float64 on one thread, which made the resizes of UNet's
/// decoder and of every SegHead a large part of those forwards).
pub fn resize_bilinear_aligned(x: &Tensor, h: usize, w: usize, align_corners: bool) -> Result<Tensor> {
    let (_, _, xh, xw) = x.dims4()?;
    if (xh, xw) == (h, w) {
        return Ok(x.clone());
    }
    let x = x.contiguous()?;
    if !custom_kernels(&x) || x.dtype() != DType::F32 {
        return x.upsample_bilinear2d(h, w, align_corners);
    }
    x.apply_op1_no_bwd(&Bilinear { h, w, align_corners })
}

struct Bilinear {
    h: usize,
    w: usize,
    align_corners: bool,
}

/// PyTorch's `compute_source_index_and_lambda` along one axis: for each output index the two
/// source indices and their weights.
fn bilinear_taps(input: usize, output: usize, align_corners: bool) -> Vec<(usize, usize, f32, f32)> {
    let scale = if align_corners {
        if output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            0.0
        }
    } else {
        input as f32 / output as f32
    };
    (0..output)
        .map(|o| {
            let source = if align_corners {
                scale * o as f32
            } else {
                (scale * (o as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (source.floor() as usize).min(input - 1);
            let lambda1 = (source - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - lambda1, lambda1)
        })
        .collect()
}

impl CustomOp1 for Bilinear {
    fn name(&self) -> &'static str {
        "bilinear-resize"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, ih, iw) = layout.shape().dims4()?;
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("bilinear resize needs a contiguous f32 input"),
        };
        let (oh, ow) = (self.h, self.w);
        let rows = bilinear_taps(ih, oh, self.align_corners);
        let cols = bilinear_taps(iw, ow, self.align_corners);
        let mut out = vec![0f32; b * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(input.par_chunks(ih * iw))
            .for_each(|(dst, plane)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (&(y0, y1, wy0, wy1), dst) in rows.iter().zip(dst.chunks_mut(ow)) {
                            let (top, bottom) =
                                (&plane[y0 * iw..(y0 + 1) * iw], &plane[y1 * iw..(y1 + 1) * iw]);
                            for (o, &(x0, x1, wx0, wx1)) in dst.iter_mut().zip(&cols) {
                                *o = wy0 * (wx0 * top[x0] + wx1 * top[x1])
                                    + wy1 * (wx0 * bottom[x0] + wx1 * bottom[x1]);
                            }
                        }
                    },
                )
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
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
        let wide = DepthwiseConv2d::new(
            (0..98).map(|i| i as f32 / 98.0).collect(),
            vec![0.0, 1.0],
            7,
            Geometry::padded(3),
            &Device::Cpu,
        )
        .unwrap();
        // candle's grouped conv (the portable path) is the reference.
        let reference = wide.forward_portable(&tiny).unwrap();
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
        let conv = DepthwiseConv2d::new(
            (0..36).map(|i| i as f32 / 36.0).collect(),
            vec![0.1, 0.2, 0.3, 0.4],
            3,
            Geometry::padded(1),
            &Device::Cpu,
        )
        .unwrap();
        let dw = |t: &Tensor| conv.forward(t);
        assert!(max_diff(&dw(&x).unwrap(), &per_item(&x, dw)) < 1e-6, "depthwise");
        let grouped = conv.forward_portable(&x).unwrap();
        assert!(
            max_diff(&dw(&x).unwrap(), &grouped) < 1e-5,
            "depthwise vs grouped conv"
        );
        let tokens = x
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let on_tokens = conv
            .forward_tokens(&tokens, 9, 7)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((3, 4, 9, 7))
            .unwrap();
        assert!(max_diff(&on_tokens, &grouped) < 1e-5, "depthwise on tokens");
    }

    /// Strided and dilated depthwise convolutions (timm's MobileNet/EfficientNet blocks at
    /// output stride 8) against candle's grouped convolution, including maps smaller than
    /// the dilated kernel's reach.
    #[test]
    fn strided_dilated_depthwise_equals_grouped_conv() {
        for (h, w) in [(9, 7), (2, 3), (16, 16)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            for (kernel, stride, dilation) in [(3, 2, 1), (5, 2, 1), (3, 1, 2), (5, 1, 4), (3, 2, 2)] {
                let geometry = Geometry {
                    padding: ((stride - 1) + dilation * (kernel - 1)) / 2,
                    stride,
                    dilation,
                };
                let conv = DepthwiseConv2d::new(
                    (0..3 * kernel * kernel)
                        .map(|i| (i as f32 * 0.37).sin())
                        .collect(),
                    vec![0.1, -0.2, 0.3],
                    kernel,
                    geometry,
                    &Device::Cpu,
                )
                .unwrap();
                let ours = conv.forward(&x).unwrap();
                let reference = conv.forward_portable(&x).unwrap();
                assert_eq!(
                    ours.dims(),
                    reference.dims(),
                    "{h}x{w} k{kernel} s{stride} d{dilation}"
                );
                assert!(
                    max_diff(&ours, &reference) < 1e-5,
                    "{h}x{w} k{kernel} s{stride} d{dilation}"
                );
            }
        }
    }

    /// Our bilinear kernel against candle's (float64 arithmetic), both corner modes,
    /// up and down.
    #[test]
    fn bilinear_equals_candle_upsample() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 7, 5), &Device::Cpu).unwrap();
        for (h, w) in [(14, 10), (13, 9), (3, 2), (7, 11), (1, 1)] {
            for align in [false, true] {
                let ours = resize_bilinear_aligned(&x, h, w, align).unwrap();
                let reference = x.upsample_bilinear2d(h, w, align).unwrap();
                assert!(max_diff(&ours, &reference) < 1e-5, "{h}x{w} align {align}");
            }
        }
    }

    /// Winograd F(2x2, 3x3) against candle's direct convolution: odd and even sizes, a map
    /// smaller than a tile, a batch, bias and activation.
    #[test]
    fn winograd_equals_direct_conv() {
        let dev = Device::Cpu;
        for (b, c_in, c_out, h, w) in [
            (2, 40, 6, 9, 7),
            (1, 64, 3, 16, 16),
            (1, 32, 2, 1, 3),
            (3, 33, 5, 5, 2),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, c_in, h, w), &dev).unwrap();
            let weight = Tensor::randn(0f32, 0.2, (c_out, c_in, 3, 3), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
            let winograd = Winograd::new(
                &weight.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                bias.to_vec1::<f32>().unwrap(),
                c_in,
            );
            let ours = x.apply_op1_no_bwd(&winograd.with(Activation::Relu)).unwrap();
            let reference = x
                .conv2d(&weight, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let diff = max_diff(&ours, &reference);
            assert!(diff < 1e-4, "{b}x{c_in}x{h}x{w}: {diff}");
        }
    }

    /// Our GELU against candle's (libm erf), over the range activations take: within 4e-7
    /// relative (erf's 1.5e-7 approximation error plus float32 rounding).
    #[test]
    fn gelu_is_candles_within_a_few_ulps() {
        let values: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.005)
            .chain([-90.0, -20.0, 20.0, 90.0])
            .collect();
        let x = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        let reference = x.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for (v, r) in values.iter().zip(reference) {
            let ours = Activation::Gelu.scalar(*v);
            assert!(
                (ours - r).abs() <= 4e-7 * v.abs().max(1.0),
                "gelu({v}) = {ours}, candle {r}"
            );
        }
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert!((exp_non_positive(-1.0) - (-1f32).exp()).abs() < 1e-7);
    }

    /// The dense layer (gemm + fused bias and activation) against candle's Linear.
    #[test]
    fn dense_equals_candle_linear() {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 7, &dev).unwrap();
        let map: std::collections::HashMap<String, Tensor> = [
            ("weight".to_string(), weight.clone()),
            ("bias".to_string(), bias.clone()),
        ]
        .into();
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap();
        let linear = candle_nn::Linear::new(weight, Some(bias));
        for act in [Activation::Identity, Activation::Gelu] {
            let dense = Dense::load(vb.clone(), 5, 7, act).unwrap();
            let reference = act.tensor(&linear.forward(&x).unwrap()).unwrap();
            assert!(
                max_diff(&dense.forward(&x).unwrap(), &reference) < 1e-5,
                "{act:?}"
            );
        }
    }

    /// The gemm same-padding path with dilation (ASPP's 3x3 at rates 12-36, larger than
    /// the map) against candle's conv2d.
    #[test]
    fn dilated_same_conv_equals_candle_conv() {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 8, 6), &Device::Cpu).unwrap();
        let weight = Tensor::randn(0f32, 1.0, (4, 5, 3, 3), &Device::Cpu).unwrap();
        for dilation in [1, 2, 12] {
            let geometry = Geometry {
                padding: dilation,
                stride: 1,
                dilation,
            };
            let conv = Conv::new(weight.clone(), None, geometry).unwrap();
            let reference = x.conv2d(&weight, dilation, 1, dilation, 1).unwrap();
            assert!(
                max_diff(&conv.forward(&x).unwrap(), &reference) < 1e-4,
                "dilation {dilation}"
            );
        }
    }
}
