//! `methods/pspnet.py`: the pyramid pooling module on the deepest map (adaptive average
//! pools of each bin size, 1x1 ConvBNReLU, upsampled back, concatenated after the map
//! itself), then a 3x3 bottleneck. UPerNet reuses the module.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec};
use super::Features;
use crate::models::ops::adaptive_avg_pool2d;

pub struct Ppm {
    pools: Vec<(usize, ConvBn)>,
    align_corners: bool,
}

impl Ppm {
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        bins: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        let pools = bins
            .iter()
            .enumerate()
            .map(|(i, &bin)| {
                Ok((
                    bin,
                    conv_bn_relu(vb.pp("pools").pp(i).pp(1), ConvSpec::same(c_in, c_out, 1))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ppm { pools, align_corners })
    }

    /// The map followed by every pooled branch: c_in + bins x c_out channels.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = size_of(x)?;
        let mut outs = vec![x.clone()];
        for (bin, conv) in &self.pools {
            let pooled = conv.forward(&adaptive_avg_pool2d(x, *bin)?)?;
            outs.push(resize(&pooled, size, self.align_corners)?);
        }
        Tensor::cat(&outs, 1)
    }
}

/// The PPM followed by the bottleneck (PSPNet's whole method, UPerNet's deepest level).
pub struct PyramidPooling {
    ppm: Ppm,
    bottleneck: ConvBn,
}

impl PyramidPooling {
    pub fn load(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        bins: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        Ok(PyramidPooling {
            ppm: Ppm::load(vb.pp("ppm"), c_in, c_out, bins, align_corners)?,
            bottleneck: conv_bn_relu(
                vb.pp("bottleneck"),
                ConvSpec::same(c_in + bins.len() * c_out, c_out, 3),
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bottleneck.forward(&self.ppm.forward(x)?)
    }
}

pub struct PspNet {
    pyramid: PyramidPooling,
}

impl PspNet {
    pub fn load(
        vb: VarBuilder,
        channels: &[usize],
        c_out: usize,
        bins: &[usize],
        align_corners: bool,
    ) -> Result<Self> {
        Ok(PspNet {
            pyramid: PyramidPooling::load(&vb, channels[channels.len() - 1], c_out, bins, align_corners)?,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        self.pyramid.forward(features.from_end(1)?)
    }
}
