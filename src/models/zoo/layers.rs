//! The experiment's building blocks (`exp/models/ops.py`): convolutions with their BatchNorm
//! folded in at load time, `SegHead`, and the pooling and resizing the methods and timm
//! backbones use. Loaded from a VarBuilder that hands out `Var`s they are in train mode
//! instead (`trainable.rs`): BatchNorm with batch statistics, Dropout2d, differentiable ops.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::trainable::{training, Dropout2d, TrainConv};
use crate::models::ops::{resize_bilinear_aligned, BatchNorm2d, Conv, DepthwiseConv2d, Geometry};
use crate::train::pool::{avg_pool2d, max_pool2d, Pool2d};
use crate::train::upsample::upsample_bilinear2d;

/// The activation a folded convolution ends with (fused into its output pass).
pub use crate::models::ops::Activation as Act;

/// A convolution's shape: channels, kernel and geometry; `depthwise` for one filter per
/// channel (groups = channels).
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub geometry: Geometry,
    pub depthwise: bool,
}

impl ConvSpec {
    /// A dense k x k convolution with PyTorch's default padding for odd kernels, k / 2.
    pub fn same(c_in: usize, c_out: usize, kernel: usize) -> Self {
        ConvSpec {
            c_in,
            c_out,
            kernel,
            geometry: Geometry::padded(kernel / 2),
            depthwise: false,
        }
    }

    pub fn padding(mut self, padding: usize) -> Self {
        self.geometry.padding = padding;
        self
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.geometry.stride = stride;
        self
    }

    pub fn dilation(mut self, dilation: usize) -> Self {
        self.geometry.dilation = dilation;
        self
    }

    pub fn depthwise(channels: usize, kernel: usize) -> Self {
        ConvSpec {
            depthwise: true,
            ..ConvSpec::same(channels, channels, kernel)
        }
    }
}

enum Kernel {
    Dense(Conv),
    Depthwise(DepthwiseConv2d),
    Train(Box<TrainConv>),
}

/// conv -> BatchNorm (eval: folded into the conv's weight and bias) -> activation (fused).
pub struct ConvBn {
    kernel: Kernel,
}

impl ConvBn {
    /// The conv's weight (and bias, when `conv_bias`) under `conv`, the BatchNorm under `bn`.
    pub fn load(conv: VarBuilder, bn: VarBuilder, spec: ConvSpec, conv_bias: bool, act: Act) -> Result<Self> {
        let weight = Self::weight(&conv, spec)?;
        if weight.is_variable() {
            let train = TrainConv::load(weight, conv, Some(bn), spec, conv_bias, act)?;
            return Ok(ConvBn {
                kernel: Kernel::Train(Box::new(train)),
            });
        }
        let norm = BatchNorm2d::load(bn, spec.c_out)?;
        let scale = norm.scale().reshape(spec.c_out)?;
        let mut shift = norm.shift().reshape(spec.c_out)?;
        if conv_bias {
            shift = (shift + conv.get(spec.c_out, "bias")?.mul(&scale)?)?;
        }
        let weight = weight.broadcast_mul(&scale.reshape((spec.c_out, 1, 1, 1))?)?;
        Self::from_folded(weight, shift, spec, act)
    }

    /// A convolution with a bias and no BatchNorm (SegHead's classifier, SE gates).
    pub fn plain(vb: VarBuilder, spec: ConvSpec, act: Act) -> Result<Self> {
        let weight = Self::weight(&vb, spec)?;
        if weight.is_variable() {
            let train = TrainConv::load(weight, vb, None, spec, true, act)?;
            return Ok(ConvBn {
                kernel: Kernel::Train(Box::new(train)),
            });
        }
        let bias = vb.get(spec.c_out, "bias")?;
        Self::from_folded(weight, bias, spec, act)
    }

    fn weight(vb: &VarBuilder, spec: ConvSpec) -> Result<Tensor> {
        let per_filter = if spec.depthwise { 1 } else { spec.c_in };
        vb.get((spec.c_out, per_filter, spec.kernel, spec.kernel), "weight")
    }

    /// Loaded in train mode.
    pub fn is_trainable(&self) -> bool {
        matches!(self.kernel, Kernel::Train(_))
    }

    fn from_folded(weight: Tensor, bias: Tensor, spec: ConvSpec, act: Act) -> Result<Self> {
        let kernel = if spec.depthwise {
            Kernel::Depthwise(
                DepthwiseConv2d::new(
                    weight.flatten_all()?.to_vec1::<f32>()?,
                    bias.to_vec1::<f32>()?,
                    spec.kernel,
                    spec.geometry,
                    weight.device(),
                )?
                .with_activation(act),
            )
        } else {
            Kernel::Dense(Conv::new(weight, Some(bias), spec.geometry)?.with_activation(act))
        };
        Ok(ConvBn { kernel })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.kernel {
            Kernel::Dense(conv) => conv.forward(x),
            Kernel::Depthwise(conv) => conv.forward(x),
            Kernel::Train(conv) => conv.forward(x),
        }
    }
}

/// `ops.ConvBNReLU`: a Sequential (conv, bn, relu) named `<prefix>.0` and `<prefix>.1`.
pub fn conv_bn_relu(vb: VarBuilder, spec: ConvSpec) -> Result<ConvBn> {
    ConvBn::load(vb.pp(0), vb.pp(1), spec, false, Act::Relu)
}

/// `ops.DWConvBNReLU`: depthwise conv, bn, relu (`.0`, `.1`), then 1x1 conv, bn, relu
/// (`.3`, `.4`).
pub struct DwConvBnRelu {
    depthwise: ConvBn,
    pointwise: ConvBn,
}

impl DwConvBnRelu {
    pub fn load(vb: VarBuilder, spec: ConvSpec) -> Result<Self> {
        let depthwise = ConvSpec {
            c_out: spec.c_in,
            depthwise: true,
            ..spec
        };
        Ok(DwConvBnRelu {
            depthwise: ConvBn::load(vb.pp(0), vb.pp(1), depthwise, false, Act::Relu)?,
            pointwise: ConvBn::load(
                vb.pp(3),
                vb.pp(4),
                ConvSpec::same(spec.c_in, spec.c_out, 1),
                false,
                Act::Relu,
            )?,
        })
    }
}

impl Module for DwConvBnRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(x)?)
    }
}

/// The experiment's SegHead settings besides its channels.
#[derive(Clone, Copy, Debug)]
pub struct SegHeadSpec {
    /// The crop size the logits are resized to.
    pub size: (usize, usize),
    pub align_corners: bool,
    /// Dropout2d's p (train mode only; `nn.Identity` when 0).
    pub dropout: f64,
    /// Tells this head's dropout draws from the other layers'.
    pub stream: u64,
}

/// `ops.SegHead`: Dropout2d (identity in eval) -> 1x1 conv with bias (`.1`) -> bilinear
/// resize to the crop size.
pub struct SegHead {
    dropout: Option<Dropout2d>,
    classifier: ConvBn,
    spec: SegHeadSpec,
}

impl SegHead {
    pub fn load(vb: VarBuilder, c_in: usize, classes: usize, spec: SegHeadSpec) -> Result<Self> {
        let classifier = ConvBn::plain(vb.pp(1), ConvSpec::same(c_in, classes, 1), Act::Identity)?;
        let dropout = (classifier.is_trainable() && spec.dropout > 0.0)
            .then(|| Dropout2d::new(spec.dropout, spec.stream));
        Ok(SegHead {
            dropout,
            classifier,
            spec,
        })
    }
}

impl SegHead {
    /// The run's seed and the optimizer step the next forward belongs to (key the dropout
    /// masks).
    pub fn set_iteration(&self, seed: u64, iteration: u64) {
        if let Some(dropout) = &self.dropout {
            dropout.set_iteration(seed, iteration);
        }
    }
}

impl Module for SegHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let logits = match &self.dropout {
            Some(dropout) => self.classifier.forward(&dropout.forward(x)?)?,
            None => self.classifier.forward(x)?,
        };
        resize(&logits, self.spec.size, self.spec.align_corners)
    }
}

/// `F.interpolate(x, size, mode="bilinear", align_corners=...)`.
pub fn resize(x: &Tensor, (h, w): (usize, usize), align_corners: bool) -> Result<Tensor> {
    if !training(x) {
        return resize_bilinear_aligned(x, h, w, align_corners);
    }
    if size_of(x)? == (h, w) {
        return Ok(x.clone());
    }
    upsample_bilinear2d(x, h, w, align_corners)
}

/// The spatial size of a (B, C, H, W) map.
pub fn size_of(x: &Tensor) -> Result<(usize, usize)> {
    let (_, _, h, w) = x.dims4()?;
    Ok((h, w))
}

/// `nn.MaxPool2d(3, 2, padding=1)` on a map that follows a ReLU: zero padding cannot win a
/// maximum over non-negative values, so it stands in for PyTorch's -inf padding.
pub fn max_pool_3x3_s2_after_relu(x: &Tensor) -> Result<Tensor> {
    if training(x) {
        return max_pool2d(x, pool(3, 2, 1, false));
    }
    x.pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride(3, 2)
}

/// timm ResNet-D's shortcut pooling: `nn.AvgPool2d(2, 2, ceil_mode=True,
/// count_include_pad=False)`. A window cut by the far edge averages only its inside
/// pixels, which is what a 2-wide window sees after replicating the last row and column.
pub fn avg_pool_2x2_ceil(x: &Tensor) -> Result<Tensor> {
    if training(x) {
        return avg_pool2d(x, pool(2, 2, 0, true), false);
    }
    let (h, w) = size_of(x)?;
    let x = if h % 2 == 1 {
        x.pad_with_same(2, 0, 1)?
    } else {
        x.clone()
    };
    let x = if w % 2 == 1 { x.pad_with_same(3, 0, 1)? } else { x };
    x.avg_pool2d(2)
}

/// timm's `AvgPool2dSame(2, stride=1)` (the dilated stages' shortcut): zero padding of one
/// row and column at the far edge, then a 2x2 mean with stride 1 that counts the zeros.
pub fn avg_pool_2x2_same(x: &Tensor) -> Result<Tensor> {
    let padded = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
    if training(x) {
        return avg_pool2d(&padded, pool(2, 1, 0, false), true);
    }
    padded.avg_pool2d_with_stride(2, 1)
}

/// A square pooling window for the differentiable pools.
fn pool(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Pool2d {
    Pool2d {
        kernel: (kernel, kernel),
        stride: (stride, stride),
        padding: (padding, padding),
        ceil_mode,
    }
}
