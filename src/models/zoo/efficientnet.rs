//! timm's EfficientNet family as `features_only=True` builds it (`EfficientNetFeatures`):
//! `efficientnet_b0` (SiLU, squeeze-excitation) and `mobilenetv2_100` (ReLU6), each the
//! output of stages 0, 1, 2, 4 and 6 (strides 2 .. 32), with timm's builder rule for an
//! output stride of 8 or 16: a block that would pass it keeps stride 1 at the current
//! dilation and the blocks after it use the multiplied dilation.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Act, ConvBn, ConvSpec};

/// One stage of timm's arch_def: `ds`/`ir`, repeats, kernel, stride, expansion, channels.
struct StageDef {
    inverted: bool,
    repeats: usize,
    kernel: usize,
    stride: usize,
    expansion: usize,
    channels: usize,
}

const fn stage(
    inverted: bool,
    repeats: usize,
    kernel: usize,
    stride: usize,
    expansion: usize,
    channels: usize,
) -> StageDef {
    StageDef {
        inverted,
        repeats,
        kernel,
        stride,
        expansion,
        channels,
    }
}

/// `ds_r1_k3_s1_e1_c16_se0.25`, `ir_r2_k3_s2_e6_c24_se0.25`, ... (timm `_gen_efficientnet`).
const EFFICIENTNET_B0: [StageDef; 7] = [
    stage(false, 1, 3, 1, 1, 16),
    stage(true, 2, 3, 2, 6, 24),
    stage(true, 2, 5, 2, 6, 40),
    stage(true, 3, 3, 2, 6, 80),
    stage(true, 3, 5, 1, 6, 112),
    stage(true, 4, 5, 2, 6, 192),
    stage(true, 1, 3, 1, 6, 320),
];

/// `ds_r1_k3_s1_c16`, `ir_r2_k3_s2_e6_c24`, ... (timm `_gen_mobilenet_v2`, multiplier 1.0).
const MOBILENETV2_100: [StageDef; 7] = [
    stage(false, 1, 3, 1, 1, 16),
    stage(true, 2, 3, 2, 6, 24),
    stage(true, 3, 3, 2, 6, 32),
    stage(true, 4, 3, 2, 6, 64),
    stage(true, 3, 3, 1, 6, 96),
    stage(true, 3, 3, 2, 6, 160),
    stage(true, 1, 3, 1, 6, 320),
];

/// The stages whose outputs `features_only` returns.
const FEATURE_STAGES: [usize; 5] = [0, 1, 2, 4, 6];

struct Variant {
    stages: &'static [StageDef; 7],
    act: Act,
    squeeze_excite: bool,
}

fn variant(name: &str) -> Option<Variant> {
    Some(match name {
        "efficientnet_b0" => Variant {
            stages: &EFFICIENTNET_B0,
            act: Act::Silu,
            squeeze_excite: true,
        },
        "mobilenetv2_100" => Variant {
            stages: &MOBILENETV2_100,
            act: Act::Relu6,
            squeeze_excite: false,
        },
        _ => return None,
    })
}

/// Squeeze-excitation: global mean -> 1x1 reduce (+act) -> 1x1 expand -> sigmoid gate.
struct SqueezeExcite {
    reduce: ConvBn,
    expand: ConvBn,
}

impl SqueezeExcite {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = x.mean_keepdim(3)?.mean_keepdim(2)?;
        let gate = candle_nn::ops::sigmoid(&self.expand.forward(&self.reduce.forward(&pooled)?)?)?;
        x.broadcast_mul(&gate)
    }
}

/// `DepthwiseSeparableConv` (dw, se, pw) or `InvertedResidual` (pw, dw, se, pwl); the
/// convolutions before the squeeze-excitation and the ones after it.
struct Block {
    before: Vec<ConvBn>,
    squeeze_excite: Option<SqueezeExcite>,
    after: ConvBn,
    skip: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for conv in &self.before {
            y = conv.forward(&y)?;
        }
        if let Some(se) = &self.squeeze_excite {
            y = se.forward(&y)?;
        }
        let y = self.after.forward(&y)?;
        if self.skip {
            y + x
        } else {
            Ok(y)
        }
    }
}

pub struct EfficientNet {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    channels: Vec<usize>,
}

impl EfficientNet {
    pub fn supports(name: &str) -> bool {
        variant(name).is_some()
    }

    pub fn load(vb: VarBuilder, name: &str, in_channels: usize, output_stride: usize) -> Result<Self> {
        let Variant {
            stages: defs,
            act,
            squeeze_excite,
        } = variant(name).ok_or_else(|| candle_core::Error::Msg(format!("{name} is not an EfficientNet")))?;
        let stem_channels = 32;
        let stem = ConvBn::load(
            vb.pp("conv_stem"),
            vb.pp("bn1"),
            ConvSpec::same(in_channels, stem_channels, 3).stride(2),
            false,
            act,
        )?;
        let (mut c_in, mut net_stride, mut dilation) = (stem_channels, 2, 1);
        let mut stages = Vec::with_capacity(defs.len());
        for (s, def) in defs.iter().enumerate() {
            let mut blocks = Vec::with_capacity(def.repeats);
            for r in 0..def.repeats {
                let vb = vb.pp("blocks").pp(s).pp(r);
                let mut stride = if r == 0 { def.stride } else { 1 };
                let block_dilation = dilation;
                if stride > 1 {
                    if net_stride * stride > output_stride {
                        dilation *= stride;
                        stride = 1;
                    } else {
                        net_stride *= stride;
                    }
                }
                let k = def.kernel;
                let mid = c_in * def.expansion;
                let depthwise = ConvSpec::depthwise(mid, k)
                    .stride(stride)
                    .dilation(block_dilation)
                    .padding(((stride - 1) + block_dilation * (k - 1)) / 2);
                let se = |vb: VarBuilder| -> Result<SqueezeExcite> {
                    let reduced = c_in / 4;
                    Ok(SqueezeExcite {
                        reduce: ConvBn::plain(vb.pp("conv_reduce"), ConvSpec::same(mid, reduced, 1), act)?,
                        expand: ConvBn::plain(
                            vb.pp("conv_expand"),
                            ConvSpec::same(reduced, mid, 1),
                            Act::Identity,
                        )?,
                    })
                };
                let squeeze_excite = if squeeze_excite {
                    Some(se(vb.pp("se"))?)
                } else {
                    None
                };
                let bn = |conv: &str, norm: &str, spec: ConvSpec, act: Act| {
                    ConvBn::load(vb.pp(conv), vb.pp(norm), spec, false, act)
                };
                let block = if def.inverted {
                    Block {
                        before: vec![
                            bn("conv_pw", "bn1", ConvSpec::same(c_in, mid, 1), act)?,
                            bn("conv_dw", "bn2", depthwise, act)?,
                        ],
                        squeeze_excite,
                        after: bn(
                            "conv_pwl",
                            "bn3",
                            ConvSpec::same(mid, def.channels, 1),
                            Act::Identity,
                        )?,
                        skip: stride == 1 && c_in == def.channels,
                    }
                } else {
                    Block {
                        before: vec![bn("conv_dw", "bn1", depthwise, act)?],
                        squeeze_excite,
                        after: bn(
                            "conv_pw",
                            "bn2",
                            ConvSpec::same(mid, def.channels, 1),
                            Act::Identity,
                        )?,
                        skip: stride == 1 && c_in == def.channels,
                    }
                };
                blocks.push(block);
                c_in = def.channels;
            }
            stages.push(blocks);
        }
        let channels = FEATURE_STAGES.iter().map(|&s| defs[s].channels).collect();
        Ok(EfficientNet {
            stem,
            stages,
            channels,
        })
    }

    pub fn channels(&self) -> &[usize] {
        &self.channels
    }

    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.stem.forward(x)?;
        let mut features = Vec::with_capacity(FEATURE_STAGES.len());
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                x = block.forward(&x)?;
            }
            if FEATURE_STAGES.contains(&s) {
                features.push(x.clone());
            }
        }
        Ok(features)
    }
}
