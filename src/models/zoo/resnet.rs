//! timm's ResNet-D (`resnet18d` .. `resnet152d`: deep 3x3 stem, average-pool shortcuts) as
//! `features_only=True` builds it: the maps after `act1` (stride 2) and after each of the
//! four stages, with timm's dilation rule for an output stride of 8 or 16 (a stage that
//! would pass the output stride keeps stride 1 and multiplies its dilation instead; its
//! first block still uses the previous dilation in its first 3x3).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{
    avg_pool_2x2_ceil, avg_pool_2x2_same, max_pool_3x3_s2_after_relu, Act, ConvBn, ConvSpec,
};
use super::trainable::training;
use crate::train::residual::add_relu;

/// Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1, expansion 4) blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The block kind and blocks per stage of each supported depth.
fn layout(name: &str) -> Option<(BlockKind, [usize; 4])> {
    Some(match name {
        "resnet18d" => (BlockKind::Basic, [2, 2, 2, 2]),
        "resnet34d" => (BlockKind::Basic, [3, 4, 6, 3]),
        "resnet50d" => (BlockKind::Bottleneck, [3, 4, 6, 3]),
        "resnet101d" => (BlockKind::Bottleneck, [3, 4, 23, 3]),
        "resnet152d" => (BlockKind::Bottleneck, [3, 8, 36, 3]),
        _ => return None,
    })
}

/// `downsample`: average pool (when the block strides or dilates), 1x1 conv, BatchNorm.
struct Shortcut {
    pool: Option<fn(&Tensor) -> Result<Tensor>>,
    conv: ConvBn,
}

struct Block {
    convs: Vec<ConvBn>,
    shortcut: Option<Shortcut>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for conv in &self.convs {
            y = conv.forward(&y)?;
        }
        let identity = match &self.shortcut {
            Some(Shortcut { pool, conv }) => {
                let pooled = match pool {
                    Some(pool) => pool(x)?,
                    None => x.clone(),
                };
                conv.forward(&pooled)?
            }
            None => x.clone(),
        };
        if training(&y) {
            return add_relu(&y, &identity);
        }
        (y + identity)?.relu()
    }
}

pub struct ResNet {
    stem: Vec<ConvBn>,
    stages: Vec<Vec<Block>>,
    channels: Vec<usize>,
}

impl ResNet {
    /// The names this file builds.
    pub fn supports(name: &str) -> bool {
        layout(name).is_some()
    }

    pub fn load(vb: VarBuilder, name: &str, in_channels: usize, output_stride: usize) -> Result<Self> {
        let (kind, depths) =
            layout(name).ok_or_else(|| candle_core::Error::Msg(format!("{name} is not a ResNet-D")))?;
        let stem_conv = |i: usize, c_in: usize, c_out: usize, stride: usize, act: Act, bn: VarBuilder| {
            ConvBn::load(
                vb.pp("conv1").pp(i),
                bn,
                ConvSpec::same(c_in, c_out, 3).stride(stride),
                false,
                act,
            )
        };
        let stem = vec![
            stem_conv(0, in_channels, 32, 2, Act::Relu, vb.pp("conv1").pp(1))?,
            stem_conv(3, 32, 32, 1, Act::Relu, vb.pp("conv1").pp(4))?,
            stem_conv(6, 32, 64, 1, Act::Relu, vb.pp("bn1"))?,
        ];
        let expansion = kind.expansion();
        let mut channels = vec![64];
        let mut stages = Vec::with_capacity(4);
        let (mut in_planes, mut net_stride, mut dilation) = (64, 4, 1);
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = 64 << stage;
            let mut stride = if stage == 0 { 1 } else { 2 };
            let previous_dilation = dilation;
            if net_stride >= output_stride {
                dilation *= stride;
                stride = 1;
            } else {
                net_stride *= stride;
            }
            let vb = vb.pp(format!("layer{}", stage + 1));
            let mut blocks = Vec::with_capacity(depth);
            for index in 0..depth {
                let vb = vb.pp(index);
                let (block_stride, first_dilation) = if index == 0 {
                    (stride, previous_dilation)
                } else {
                    (1, dilation)
                };
                // Created in the state dict's order (torch registers `downsample` last).
                let conv = |i: usize, spec: ConvSpec, act: Act| {
                    ConvBn::load(
                        vb.pp(format!("conv{i}")),
                        vb.pp(format!("bn{i}")),
                        spec,
                        false,
                        act,
                    )
                };
                let dilated = |c_in: usize, c_out: usize, d: usize| {
                    ConvSpec::same(c_in, c_out, 3).padding(d).dilation(d)
                };
                let convs = match kind {
                    BlockKind::Basic => vec![
                        conv(
                            1,
                            dilated(in_planes, planes, first_dilation).stride(block_stride),
                            Act::Relu,
                        )?,
                        conv(2, dilated(planes, planes, dilation), Act::Identity)?,
                    ],
                    BlockKind::Bottleneck => vec![
                        conv(1, ConvSpec::same(in_planes, planes, 1), Act::Relu)?,
                        conv(
                            2,
                            dilated(planes, planes, first_dilation).stride(block_stride),
                            Act::Relu,
                        )?,
                        conv(3, ConvSpec::same(planes, planes * expansion, 1), Act::Identity)?,
                    ],
                };
                let shortcut = if index == 0 && (stride != 1 || in_planes != planes * expansion) {
                    let down = vb.pp("downsample");
                    let pool: Option<fn(&Tensor) -> Result<Tensor>> = if stride == 1 && dilation == 1 {
                        None
                    } else if dilation == 1 {
                        Some(avg_pool_2x2_ceil)
                    } else {
                        Some(avg_pool_2x2_same)
                    };
                    Some(Shortcut {
                        pool,
                        conv: ConvBn::load(
                            down.pp(1),
                            down.pp(2),
                            ConvSpec::same(in_planes, planes * expansion, 1),
                            false,
                            Act::Identity,
                        )?,
                    })
                } else {
                    None
                };
                blocks.push(Block { convs, shortcut });
                in_planes = planes * expansion;
            }
            stages.push(blocks);
            channels.push(in_planes);
        }
        Ok(ResNet {
            stem,
            stages,
            channels,
        })
    }

    /// timm's `feature_info.channels()`.
    pub fn channels(&self) -> &[usize] {
        &self.channels
    }

    /// The stride-2 stem map and the four stage outputs.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = x.clone();
        for conv in &self.stem {
            x = conv.forward(&x)?;
        }
        let mut features = vec![x.clone()];
        x = max_pool_3x3_s2_after_relu(&x)?;
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x)?;
            }
            features.push(x.clone());
        }
        Ok(features)
    }
}
