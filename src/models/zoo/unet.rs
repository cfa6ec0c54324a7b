//! `methods/unet.py`: five decoder blocks from the deepest map up, each a x2 bilinear
//! upsampling (size 2 s - 1 with align_corners), concatenation with the next shallower
//! backbone map (none for the last block) and two 3x3 ConvBNReLUs; widths 16, 8, 4, 2, 1
//! times `out_channels`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv_bn_relu, resize, size_of, ConvBn, ConvSpec};
use super::Features;

struct Block {
    convs: [ConvBn; 2],
}

pub struct UNet {
    blocks: Vec<Block>,
    align_corners: bool,
}

impl UNet {
    /// `channels`: the backbone's channels without the input's (`out_channels[1:]`).
    pub fn load(vb: VarBuilder, channels: &[usize], c_out: usize, align_corners: bool) -> Result<Self> {
        let deepest_first: Vec<usize> = channels.iter().rev().copied().collect();
        let widths: Vec<usize> = [16, 8, 4, 2, 1].iter().map(|m| m * c_out).collect();
        let blocks = (0..widths.len())
            .map(|i| {
                let c_in = if i == 0 { deepest_first[0] } else { widths[i - 1] };
                let skip = deepest_first.get(i + 1).copied().unwrap_or(0);
                let vb = vb.pp("blocks").pp(i).pp("conv");
                Ok(Block {
                    convs: [
                        conv_bn_relu(vb.pp(0), ConvSpec::same(c_in + skip, widths[i], 3))?,
                        conv_bn_relu(vb.pp(1), ConvSpec::same(widths[i], widths[i], 3))?,
                    ],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(UNet {
            blocks,
            align_corners,
        })
    }

    pub fn forward(&self, features: &Features) -> Result<Tensor> {
        let maps = features.backbone_maps()?;
        let mut deepest_first = maps.iter().rev();
        let mut x: Tensor = (*deepest_first.next().expect("a backbone returns maps")).clone();
        for block in &self.blocks {
            let (h, w) = size_of(&x)?;
            let grow = |s: usize| 2 * s - usize::from(self.align_corners);
            let up = resize(&x, (grow(h), grow(w)), self.align_corners)?;
            let input = match deepest_first.next() {
                Some(skip) => {
                    if size_of(skip)? != size_of(&up)? {
                        candle_core::bail!(
                            "UNet: a {:?} map upsampled to {:?} does not meet the {:?} skip map; the crop size must be a multiple of 32",
                            (h, w),
                            size_of(&up)?,
                            size_of(skip)?
                        );
                    }
                    Tensor::cat(&[&up, *skip], 1)?
                }
                None => up,
            };
            x = block.convs[1].forward(&block.convs[0].forward(&input)?)?;
        }
        Ok(x)
    }
}
