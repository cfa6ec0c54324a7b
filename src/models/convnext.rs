//! The ConvNeXt backbone (Liu et al. 2022) as Hugging Face's `ConvNextBackbone`: stage
//! outputs after the per-stage `hidden_states_norms`, for UperNet.
//!
//! candle-transformers' convnext.rs uses timm's tensor names and returns pooled features
//! only, so this one follows transformers' module tree instead.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::ops::{conv2d, ChannelsFirstLayerNorm, Conv, DepthwiseConv2d};

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

struct Block {
    dwconv: DepthwiseConv2d,
    layernorm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    layer_scale: Option<Tensor>,
}

impl Block {
    fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        let layer_scale = if vb.contains_tensor("layer_scale_parameter") {
            Some(vb.get(dim, "layer_scale_parameter")?)
        } else {
            None
        };
        Ok(Block {
            dwconv: DepthwiseConv2d::load(vb.pp("dwconv"), dim, 7, 3)?,
            layernorm: layer_norm(dim, LAYER_NORM_EPS, vb.pp("layernorm"))?,
            pwconv1: linear(dim, 4 * dim, vb.pp("pwconv1"))?,
            pwconv2: linear(4 * dim, dim, vb.pp("pwconv2"))?,
            layer_scale,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.dwconv.forward(x)?.permute((0, 2, 3, 1))?;
        let y = self.layernorm.forward(&y)?;
        let y = self.pwconv2.forward(&self.pwconv1.forward(&y)?.gelu_erf()?)?;
        let y = match &self.layer_scale {
            Some(gamma) => y.broadcast_mul(gamma)?,
            None => y,
        };
        x + y.permute((0, 3, 1, 2))?
    }
}

struct Stage {
    downsample: Option<(ChannelsFirstLayerNorm, Conv)>,
    blocks: Vec<Block>,
}

pub struct ConvNextBackbone {
    stem: Conv,
    stem_norm: ChannelsFirstLayerNorm,
    stages: Vec<Stage>,
    /// (stage index, its output norm) for every returned stage.
    outputs: Vec<(usize, ChannelsFirstLayerNorm)>,
}

impl ConvNextBackbone {
    pub fn load(vb: VarBuilder, cfg: &ConvNextConfig) -> anyhow::Result<Self> {
        let sizes = &cfg.hidden_sizes;
        let embeddings = vb.pp("embeddings");
        let stem = conv2d(
            embeddings.pp("patch_embeddings"),
            cfg.num_channels,
            sizes[0],
            cfg.patch_size,
            cfg.patch_size,
            0,
            true,
        )?;
        let stem_norm = ChannelsFirstLayerNorm::load(embeddings.pp("layernorm"), sizes[0], LAYER_NORM_EPS)?;
        let mut stages = Vec::with_capacity(sizes.len());
        for (i, (&dim, &depth)) in sizes.iter().zip(&cfg.depths).enumerate() {
            let vb = vb.pp("encoder").pp("stages").pp(i);
            let downsample = if i > 0 {
                let down = vb.pp("downsampling_layer");
                Some((
                    ChannelsFirstLayerNorm::load(down.pp(0), sizes[i - 1], LAYER_NORM_EPS)?,
                    conv2d(down.pp(1), sizes[i - 1], dim, 2, 2, 0, true)?,
                ))
            } else {
                None
            };
            let blocks = (0..depth)
                .map(|j| Block::load(vb.pp("layers").pp(j), dim))
                .collect::<Result<Vec<_>>>()?;
            stages.push(Stage { downsample, blocks });
        }
        let outputs = cfg
            .out_stages()?
            .into_iter()
            .map(|s| {
                let norm = ChannelsFirstLayerNorm::load(
                    vb.pp("hidden_states_norms").pp(format!("stage{s}")),
                    sizes[s - 1],
                    LAYER_NORM_EPS,
                )?;
                Ok((s - 1, norm))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ConvNextBackbone {
            stem,
            stem_norm,
            stages,
            outputs,
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
            for block in &stage.blocks {
                x = block.forward(&x)?;
            }
            for (_, norm) in self.outputs.iter().filter(|(s, _)| *s == i) {
                features.push(norm.forward(&x)?);
            }
        }
        Ok(features)
    }
}
