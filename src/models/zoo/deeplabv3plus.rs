//! `methods/deeplabv3plus.py`: depthwise-separable ASPP and bottleneck on the deepest map,
//! upsampled to the stride-4 map (`features[-4]`), concatenated with its 1x1 shortcut and
//! refined by two separable 3x3 convolutions.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::deeplabv3::Aspp;
use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec, DwConvBnRelu};
use super::Features;

pub struct DeepLabV3Plus {
    aspp: Aspp,
    bottleneck: ConvBn,
    shortcut: ConvBn,
    cat_convs: [DwConvBnRelu; 2],
    align_corners: bool,
}

impl DeepLabV3Plus {
    pub fn load(
        vb: VarBuilder,
        channels: &[usize],
        c_out: usize,
        shortcut_channels: usize,
        rates: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        let n = channels.len();
        let cat = vb.pp("cat_conv");
        Ok(DeepLabV3Plus {
            aspp: Aspp::load(vb.pp("aspp"), channels[n - 1], c_out, rates, align_corners, true)?,
            bottleneck: conv_bn_relu(
                vb.pp("bottleneck"),
                ConvSpec::same((rates.len() + 2) * c_out, c_out, 3),
            )?,
            shortcut: conv_bn_relu(
                vb.pp("shortcut"),
                ConvSpec::same(channels[n - 4], shortcut_channels, 1),
            )?,
            cat_convs: [
                DwConvBnRelu::load(cat.pp(0), ConvSpec::same(shortcut_channels + c_out, c_out, 3))?,
                DwConvBnRelu::load(cat.pp(1), ConvSpec::same(c_out, c_out, 3))?,
            ],
            align_corners,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        let low = features.from_end(4)?;
        let high = self
            .bottleneck
            .forward(&self.aspp.forward(features.from_end(1)?)?)?;
        let high = resize(&high, size_of(low)?, self.align_corners)?;
        let x = Tensor::cat(&[high, self.shortcut.forward(low)?], 1)?;
        self.cat_convs[1].forward(&self.cat_convs[0].forward(&x)?)
    }
}
