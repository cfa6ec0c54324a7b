//! `methods/deeplabv3.py`: ASPP on the deepest map (a pooled branch, a 1x1 branch and one
//! dilated 3x3 branch per atrous rate, concatenated), then a 3x3 bottleneck.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec, DwConvBnRelu};
use super::Features;

/// A 1x1 or dilated ASPP branch: `ConvBNReLU`, or `DWConvBNReLU` in DeepLabV3+.
enum Branch {
    Dense(ConvBn),
    Separable(DwConvBnRelu),
}

impl Module for Branch {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Branch::Dense(conv) => conv.forward(x),
            Branch::Separable(conv) => conv.forward(x),
        }
    }
}

pub struct Aspp {
    /// `convs.0`: AdaptiveAvgPool2d(1) then a 1x1 ConvBNReLU, broadcast back.
    pooling: ConvBn,
    branches: Vec<Branch>,
    align_corners: bool,
}

impl Aspp {
    /// `separable`: the experiment's `DW=True` (DeepLabV3+).
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        rates: &[usize],
        align_corners: bool,
        separable: bool,
    ) -> Result<Self> {
        let vb = vb.pp("convs");
        let branch = |i: usize, spec: ConvSpec| -> Result<Branch> {
            Ok(if separable {
                Branch::Separable(DwConvBnRelu::load(vb.pp(i), spec)?)
            } else {
                Branch::Dense(conv_bn_relu(vb.pp(i), spec)?)
            })
        };
        // The image-pooling branch first: state dict order.
        let pooling = conv_bn_relu(vb.pp(0).pp(1), ConvSpec::same(c_in, c_out, 1))?;
        let mut branches = vec![branch(1, ConvSpec::same(c_in, c_out, 1))?];
        for (i, &rate) in rates.iter().enumerate() {
            branches.push(branch(
                2 + i,
                ConvSpec::same(c_in, c_out, 3).padding(rate).dilation(rate),
            )?);
        }
        Ok(Aspp {
            pooling,
            branches,
            align_corners,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = x.mean_keepdim(3)?.mean_keepdim(2)?;
        let mut outs = vec![resize(
            &self.pooling.forward(&pooled)?,
            size_of(x)?,
            self.align_corners,
        )?];
        for branch in &self.branches {
            outs.push(branch.forward(x)?);
        }
        Tensor::cat(&outs, 1)
    }
}

pub struct DeepLabV3 {
    aspp: Aspp,
    bottleneck: ConvBn,
}

impl DeepLabV3 {
    pub fn load(
        vb: VarBuilder,
        channels: &[usize],
        c_out: usize,
        rates: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        let deepest = channels[channels.len() - 1];
        Ok(DeepLabV3 {
            aspp: Aspp::load(vb.pp("aspp"), deepest, c_out, rates, align_corners, false)?,
            bottleneck: conv_bn_relu(
                vb.pp("bottleneck"),
                ConvSpec::same((rates.len() + 2) * c_out, c_out, 3),
            )?,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        self.bottleneck
            .forward(&self.aspp.forward(features.from_end(1)?)?)
    }
}
