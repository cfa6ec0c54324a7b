//! `methods/segformer.py`: every map of `features[2:]` through a 1x1 ConvBNReLU, upsampled
//! to the shallowest, concatenated in stage order and fused by a 1x1 ConvBNReLU. (Unlike
//! Hugging Face's decode head, ReLU follows each projection, so nothing folds across it.)

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec};
use super::Features;

pub struct SegFormerHead {
    convs: Vec<ConvBn>,
    fusion: ConvBn,
    align_corners: bool,
}

impl SegFormerHead {
    /// `channels`: those of `features[2:]`.
    pub fn load(vb: VarBuilder, channels: &[usize], c_out: usize, align_corners: bool) -> Result<Self> {
        let convs = channels
            .iter()
            .enumerate()
            .map(|(i, &c)| conv_bn_relu(vb.pp("convs").pp(i), ConvSpec::same(c, c_out, 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SegFormerHead {
            convs,
            fusion: conv_bn_relu(
                vb.pp("fusion_conv"),
                ConvSpec::same(channels.len() * c_out, c_out, 1),
            )?,
            align_corners,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        let maps = features.from_index(2)?;
        let top = size_of(maps[0])?;
        let outs = self
            .convs
            .iter()
            .zip(&maps)
            .map(|(conv, map)| resize(&conv.forward(map)?, top, self.align_corners))
            .collect::<Result<Vec<_>>>()?;
        self.fusion.forward(&Tensor::cat(&outs, 1)?)
    }
}
