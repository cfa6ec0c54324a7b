//! `methods/upernet.py`: laterals (1x1) on every map of `features[2:]` but the deepest,
//! pyramid pooling on the deepest, a top-down pathway of bilinear upsampling and sums, a
//! 3x3 conv per level, every level upsampled to the shallowest and fused by a 3x3 conv.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec};
use super::pspnet::PyramidPooling;
use super::Features;

pub struct UperNet {
    pyramid: PyramidPooling,
    laterals: Vec<ConvBn>,
    fpn_convs: Vec<ConvBn>,
    fpn_bottleneck: ConvBn,
    align_corners: bool,
}

impl UperNet {
    /// `channels`: those of `features[2:]`.
    pub fn load(
        vb: VarBuilder,
        channels: &[usize],
        c_out: usize,
        bins: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        let (&deepest, shallow) = channels.split_last().expect("UPerNet needs at least one map");
        // Created in state dict order: the pyramid pooling first.
        let pyramid = PyramidPooling::load(&vb, deepest, c_out, bins, align_corners)?;
        let laterals = shallow
            .iter()
            .enumerate()
            .map(|(i, &c)| conv_bn_relu(vb.pp("lateral_convs").pp(i), ConvSpec::same(c, c_out, 1)))
            .collect::<Result<Vec<_>>>()?;
        let fpn_convs = (0..shallow.len())
            .map(|i| conv_bn_relu(vb.pp("fpn_convs").pp(i), ConvSpec::same(c_out, c_out, 3)))
            .collect::<Result<Vec<_>>>()?;
        Ok(UperNet {
            pyramid,
            laterals,
            fpn_convs,
            fpn_bottleneck: conv_bn_relu(
                vb.pp("fpn_bottleneck"),
                ConvSpec::same(channels.len() * c_out, c_out, 3),
            )?,
            align_corners,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        let maps = features.from_index(2)?;
        let mut levels = self
            .laterals
            .iter()
            .zip(&maps)
            .map(|(conv, map)| conv.forward(map))
            .collect::<Result<Vec<_>>>()?;
        levels.push(self.pyramid.forward(maps[maps.len() - 1])?);
        for i in (1..levels.len()).rev() {
            let up = resize(&levels[i], size_of(&levels[i - 1])?, self.align_corners)?;
            levels[i - 1] = (&levels[i - 1] + up)?;
        }
        let top = size_of(&levels[0])?;
        let mut outs = Vec::with_capacity(levels.len());
        for (i, level) in levels.iter().enumerate() {
            let level = match self.fpn_convs.get(i) {
                Some(conv) => conv.forward(level)?,
                None => level.clone(),
            };
            outs.push(resize(&level, top, self.align_corners)?);
        }
        self.fpn_bottleneck.forward(&Tensor::cat(&outs, 1)?)
    }
}
