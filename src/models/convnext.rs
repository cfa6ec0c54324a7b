//! The ConvNeXt backbone (Liu et al. 2022) as Hugging Face's `ConvNextBackbone` (stage
//! outputs after the per-stage `hidden_states_norms`, for UperNet) and as timm's
//! `features_only` model (the raw outputs of all four stages, timm's tensor names, for the
//! experiment's own UPerNet). The math is one; only the names and the output norms differ.
//!
//! candle-transformers' convnext.rs returns pooled features only, so this one is our own.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::ops::{conv2d, Activation, ChannelsFirstLayerNorm, Conv, Dense, DepthwiseConv2d};

/// ConvNeXt's norms are all built with eps 1e-6 (the config's `layer_norm_eps` only
/// serves the classification pooler).
const LAYER_NORM_EPS: f64 = 1e-6;

/// A ConvNeXt `backbone_config`; transformers writes only non-default values, so the
/// defaults are transformers' (ConvNeXt-T).
#[derive(Clone, Debug, Deserialize)]
pub struct ConvNextConfig {
    #[serde(default = "defaults::num_channels")]
    pub num_channels: usize,
    #[serde(default = "defaults::patch_size")]
    pub patch_size: usize,
    #[serde(default = "defaults::hidden_sizes")]
    pub hidden_sizes: Vec<usize>,
    #[serde(default = "defaults::depths")]
    pub depths: Vec<usize>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub out_features: Option<Vec<String>>,
}

mod defaults {
    pub fn num_channels() -> usize {
        3
    }
    pub fn patch_size() -> usize {
        4
    }
    pub fn hidden_sizes() -> Vec<usize> {
        vec![96, 192, 384, 768]
    }
    pub fn depths() -> Vec<usize> {
        vec![3, 3, 9, 3]
    }
}

impl ConvNextConfig {
    /// The stages whose outputs the backbone returns (1-based, "stage1".."stage4").
    pub fn out_stages(&self) -> anyhow::Result<Vec<usize>> {
        let all: Vec<String> = (1..=self.depths.len()).map(|i| format!("stage{i}")).collect();
        let names = self
            .out_features
            .clone()
            .unwrap_or_else(|| vec![all.last().cloned().unwrap_or_default()]);
        anyhow::ensure!(!names.is_empty(), "config.json: backbone out_features is empty");
        names
            .iter()
            .map(|name| {
                all.iter().position(|s| s == name).map(|i| i + 1).ok_or_else(|| {
                    anyhow::anyhow!("config.json: backbone out_features names an unknown stage {name:?}")
                })
            })
            .collect()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.hidden_sizes.is_empty() && self.patch_size > 0 && self.hidden_sizes.iter().all(|&h| h > 0),
            "config.json: backbone needs at least one stage, a positive patch_size and positive hidden_sizes"
        );
        anyhow::ensure!(
            self.hidden_sizes.len() == self.depths.len(),
            "config.json: backbone hidden_sizes has {} entries but depths has {}",
            self.hidden_sizes.len(),
            self.depths.len()
        );
        if let Some(act) = &self.hidden_act {
            anyhow::ensure!(
                act == "gelu",
                "config.json: backbone hidden_act {act:?} is not supported (only \"gelu\")"
            );
        }
        self.out_stages().map(|_| ())
    }
}

/// Whose module tree the tensor names follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// transformers' `ConvNextBackbone` (`embeddings.patch_embeddings`, `encoder.stages.0.layers.0.dwconv`, ...).
    Transformers,
    /// timm's `features_only` ConvNeXt (`stem_0`, `stages_0.blocks.0.conv_dw`, ...).
    Timm,
}

impl Names {
    fn stem<'a>(self, vb: &VarBuilder<'a>) -> (VarBuilder<'a>, VarBuilder<'a>) {
        match self {
            Names::Transformers => (
                vb.pp("embeddings").pp("patch_embeddings"),
                vb.pp("embeddings").pp("layernorm"),
            ),
            Names::Timm => (vb.pp("stem_0"), vb.pp("stem_1")),
        }
    }

    fn stage<'a>(self, vb: &VarBuilder<'a>, i: usize) -> VarBuilder<'a> {
        match self {
            Names::Transformers => vb.pp("encoder").pp("stages").pp(i),
            Names::Timm => vb.pp(format!("stages_{i}")),
        }
    }

    fn downsample(self) -> &'static str {
        match self {
            Names::Transformers => "downsampling_layer",
            Names::Timm => "downsample",
        }
    }

    fn blocks(self) -> &'static str {
        match self {
            Names::Transformers => "layers",
            Names::Timm => "blocks",
        }
    }

    /// Block members: depthwise conv, norm, the two pointwise linears, layer scale.
    fn block(self) -> [&'static str; 5] {
        match self {
            Names::Transformers => [
                "dwconv",
                "layernorm",
                "pwconv1",
                "pwconv2",
                "layer_scale_parameter",
            ],
            Names::Timm => ["conv_dw", "norm", "mlp.fc1", "mlp.fc2", "gamma"],
        }
    }
}

struct Block {
    dwconv: DepthwiseConv2d,
    layernorm: LayerNorm,
    /// fc1 with the GELU that follows it.
    pwconv1: Dense,
    pwconv2: Dense,
    layer_scale: Option<Tensor>,
}

impl Block {
    fn load(vb: VarBuilder, dim: usize, names: Names) -> Result<Self> {
        let [dwconv, norm, fc1, fc2, scale] = names.block();
        let layer_scale = if vb.contains_tensor(scale) {
            Some(vb.get(dim, scale)?)
        } else {
            None
        };
        Ok(Block {
            dwconv: DepthwiseConv2d::load(vb.pp(dwconv), dim, 7, 3)?,
            layernorm: layer_norm(dim, LAYER_NORM_EPS, vb.pp(norm))?,
            pwconv1: Dense::load(vb.pp(fc1), dim, 4 * dim, Activation::Gelu)?,
            pwconv2: Dense::load(vb.pp(fc2), 4 * dim, dim, Activation::Identity)?,
            layer_scale,
        })
    }

    /// On tokens (B, H W, C), channels last, as the block's norm and MLP see them: no
    /// permutes, and the norm and the linears run on contiguous rows.
    fn forward_tokens(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let y = self.dwconv.forward_tokens(x, h, w)?;
        let y = self.layernorm.forward(&y)?.reshape((b * n, c))?;
        let y = self.pwconv2.forward(&self.pwconv1.forward(&y)?)?;
        let y = match &self.layer_scale {
            Some(gamma) => y.broadcast_mul(gamma)?,
            None => y,
        };
        x + y.reshape((b, n, c))?
    }
}

/// (B, C, H, W) -> tokens (B, H W, C).
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.transpose(1, 2)?.contiguous()
}

/// Tokens (B, H W, C) -> (B, C, H, W).
fn from_tokens(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    x.transpose(1, 2)?.reshape((b, c, h, w))?.contiguous()
}

struct Stage {
    downsample: Option<(ChannelsFirstLayerNorm, Conv)>,
    blocks: Vec<Block>,
}

pub struct ConvNextBackbone {
    stem: Conv,
    stem_norm: ChannelsFirstLayerNorm,
    stages: Vec<Stage>,
    /// (stage index, its output norm if it has one) for every returned stage.
    outputs: Vec<(usize, Option<ChannelsFirstLayerNorm>)>,
}

impl ConvNextBackbone {
    /// transformers' `ConvNextBackbone` for a `backbone_config`.
    pub fn load(vb: VarBuilder, cfg: &ConvNextConfig) -> anyhow::Result<Self> {
        let mut backbone = Self::load_stages(&vb, cfg, Names::Transformers)?;
        backbone.outputs = cfg
            .out_stages()?
            .into_iter()
            .map(|s| {
                let norm = ChannelsFirstLayerNorm::load(
                    vb.pp("hidden_states_norms").pp(format!("stage{s}")),
                    cfg.hidden_sizes[s - 1],
                    LAYER_NORM_EPS,
                )?;
                Ok((s - 1, Some(norm)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(backbone)
    }

    /// timm's `features_only` ConvNeXt: every stage's raw output.
    pub fn load_timm(vb: VarBuilder, cfg: &ConvNextConfig) -> Result<Self> {
        let mut backbone = Self::load_stages(&vb, cfg, Names::Timm)?;
        backbone.outputs = (0..cfg.depths.len()).map(|s| (s, None)).collect();
        Ok(backbone)
    }

    fn load_stages(vb: &VarBuilder, cfg: &ConvNextConfig, names: Names) -> Result<Self> {
        let sizes = &cfg.hidden_sizes;
        let (stem_vb, stem_norm_vb) = names.stem(vb);
        let stem = conv2d(
            stem_vb,
            cfg.num_channels,
            sizes[0],
            cfg.patch_size,
            cfg.patch_size,
            0,
            true,
        )?;
        let stem_norm = ChannelsFirstLayerNorm::load(stem_norm_vb, sizes[0], LAYER_NORM_EPS)?;
        let mut stages = Vec::with_capacity(sizes.len());
        for (i, (&dim, &depth)) in sizes.iter().zip(&cfg.depths).enumerate() {
            let vb = names.stage(vb, i);
            let downsample = if i > 0 {
                let down = vb.pp(names.downsample());
                Some((
                    ChannelsFirstLayerNorm::load(down.pp(0), sizes[i - 1], LAYER_NORM_EPS)?,
                    conv2d(down.pp(1), sizes[i - 1], dim, 2, 2, 0, true)?,
                ))
            } else {
                None
            };
            let blocks = (0..depth)
                .map(|j| Block::load(vb.pp(names.blocks()).pp(j), dim, names))
                .collect::<Result<Vec<_>>>()?;
            stages.push(Stage { downsample, blocks });
        }
        Ok(ConvNextBackbone {
            stem,
            stem_norm,
            stages,
            outputs: Vec::new(),
        })
    }

    /// The normalised feature maps of the returned stages, shallowest first.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.stem_norm.forward(&self.stem.forward(x)?)?;
        let mut features = Vec::with_capacity(self.outputs.len());
        for (i, stage) in self.stages.iter().enumerate() {
            if let Some((norm, conv)) = &stage.downsample {
                x = conv.forward(&norm.forward(&x)?)?;
            }
            let (_, _, h, w) = x.dims4()?;
            let mut tokens = to_tokens(&x)?;
            for block in &stage.blocks {
                tokens = block.forward_tokens(&tokens, h, w)?;
            }
            x = from_tokens(&tokens, h, w)?;
            for (_, norm) in self.outputs.iter().filter(|(s, _)| *s == i) {
                features.push(match norm {
                    Some(norm) => norm.forward(&x)?,
                    None => x.clone(),
                });
            }
        }
        Ok(features)
    }
}
