//! The experiment's building blocks (`exp/models/ops.py`) in eval mode: convolutions with
//! their BatchNorm folded in at load time, `SegHead`, and the pooling and resizing the
//! methods and timm backbones use.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::ops::{resize_bilinear_aligned, BatchNorm2d, Conv, DepthwiseConv2d, Geometry};

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
}

/// conv -> BatchNorm (eval: folded into the conv's weight and bias) -> activation (fused).
pub struct ConvBn {
    kernel: Kernel,
}

impl ConvBn {
    /// The conv's weight (and bias, when `conv_bias`) under `conv`, the BatchNorm under `bn`.
    pub fn load(conv: VarBuilder, bn: VarBuilder, spec: ConvSpec, conv_bias: bool, act: Act) -> Result<Self> {
        let per_filter = if spec.depthwise { 1 } else { spec.c_in };
        let weight = conv.get((spec.c_out, per_filter, spec.kernel, spec.kernel), "weight")?;
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
        let per_filter = if spec.depthwise { 1 } else { spec.c_in };
        let weight = vb.get((spec.c_out, per_filter, spec.kernel, spec.kernel), "weight")?;
        let bias = vb.get(spec.c_out, "bias")?;
        Self::from_folded(weight, bias, spec, act)
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

/// `ops.SegHead`: Dropout2d (identity in eval) -> 1x1 conv with bias (`.1`) -> bilinear
/// resize to the crop size.
pub struct SegHead {
    classifier: ConvBn,
    size: (usize, usize),
    align_corners: bool,
}

impl SegHead {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        classes: usize,
        size: (usize, usize),
        align_corners: bool,
    ) -> Result<Self> {
        Ok(SegHead {
            classifier: ConvBn::plain(vb.pp(1), ConvSpec::same(c_in, classes, 1), Act::Identity)?,
            size,
            align_corners,
        })
    }
}

impl Module for SegHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.classifier.forward(x)?;
        resize(&logits, self.size, self.align_corners)
    }
}

/// `F.interpolate(x, size, mode="bilinear", align_corners=...)`.
pub fn resize(x: &Tensor, (h, w): (usize, usize), align_corners: bool) -> Result<Tensor> {
    resize_bilinear_aligned(x, h, w, align_corners)
}

/// The spatial size of a (B, C, H, W) map.
pub fn size_of(x: &Tensor) -> Result<(usize, usize)> {
    let (_, _, h, w) = x.dims4()?;
    Ok((h, w))
}

/// `nn.MaxPool2d(3, 2, padding=1)` on a map that follows a ReLU: zero padding cannot win a
/// maximum over non-negative values, so it stands in for PyTorch's -inf padding.
pub fn max_pool_3x3_s2_after_relu(x: &Tensor) -> Result<Tensor> {
    x.pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride(3, 2)
}

/// timm ResNet-D's shortcut pooling: `nn.AvgPool2d(2, 2, ceil_mode=True,
/// count_include_pad=False)`. A window cut by the far edge averages only its inside
/// pixels, which is what a 2-wide window sees after replicating the last row and column.
pub fn avg_pool_2x2_ceil(x: &Tensor) -> Result<Tensor> {
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
    x.pad_with_zeros(2, 0, 1)?
        .pad_with_zeros(3, 0, 1)?
        .avg_pool2d_with_stride(2, 1)
}
