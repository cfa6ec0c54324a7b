//! UperNet (Xiao et al. 2018) with a ConvNeXt backbone, as Hugging Face's
//! `UperNetForSemanticSegmentation` in eval mode: pyramid pooling on the deepest map, a
//! top-down FPN, fusion, a 1x1 classifier, and logits resized to the input.
//! The auxiliary FCN head is training-only: its tensors may be present and are not read.

use std::collections::BTreeMap;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::convnext::{ConvNextBackbone, ConvNextConfig};
use super::fused::ConvOfUpsampled;
use super::ops::{adaptive_avg_pool2d, conv2d, resize_bilinear, BatchNorm2d, Conv};

/// An UperNet `config.json` (transformers writes only non-default values; defaults are
/// transformers').
#[derive(Clone, Debug, Deserialize)]
pub struct UperNetConfig {
    /// transformers defaults to a ResNet backbone, which this port does not have.
    pub backbone_config: Option<BackboneConfig>,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_pool_scales")]
    pub pool_scales: Vec<usize>,
    #[serde(default = "super::default_id2label")]
    pub id2label: BTreeMap<String, String>,
}

fn default_hidden_size() -> usize {
    512
}

fn default_pool_scales() -> Vec<usize> {
    vec![1, 2, 3, 6]
}

#[derive(Clone, Debug, Deserialize)]
pub struct BackboneConfig {
    pub model_type: String,
    #[serde(flatten)]
    pub convnext: ConvNextConfig,
}

impl UperNetConfig {
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// The ConvNeXt backbone's config, or why there is none.
    pub fn convnext(&self) -> anyhow::Result<&ConvNextConfig> {
        let backbone = self.backbone_config.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "config.json: no backbone_config (transformers' default ResNet backbone is not supported)"
            )
        })?;
        anyhow::ensure!(
            backbone.model_type == "convnext",
            "config.json: UperNet backbone {:?} is not supported (only \"convnext\")",
            backbone.model_type
        );
        Ok(&backbone.convnext)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.num_labels() > 0, "config.json: id2label is empty");
        anyhow::ensure!(
            self.hidden_size > 0 && self.pool_scales.iter().all(|&s| s > 0),
            "config.json: hidden_size and every pool scale must be positive"
        );
        self.convnext()?.check()
    }
}

/// Conv (no bias) + BatchNorm + ReLU: transformers' `UperNetConvModule`.
struct ConvModule {
    conv: Conv,
    batch_norm: BatchNorm2d,
}

impl ConvModule {
    fn load(vb: VarBuilder, c_in: usize, c_out: usize, kernel: usize) -> Result<Self> {
        Ok(ConvModule {
            conv: conv2d(vb.pp("conv"), c_in, c_out, kernel, 1, kernel / 2, false)?,
            batch_norm: BatchNorm2d::load(vb.pp("batch_norm"), c_out)?,
        })
    }
}

impl Module for ConvModule {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.batch_norm.forward(&self.conv.forward(x)?)?.relu()
    }
}

struct Head {
    psp: Vec<(usize, ConvModule)>,
    bottleneck: ConvModule,
    lateral_convs: Vec<ConvModule>,
    fpn_convs: Vec<ConvModule>,
    /// The fusion ConvModule, its conv applied without upsampling the coarse levels.
    fpn_bottleneck: (ConvOfUpsampled, BatchNorm2d),
    classifier: Conv,
}

impl Head {
    fn load(vb: VarBuilder, cfg: &UperNetConfig, in_channels: &[usize]) -> Result<Self> {
        let c = cfg.hidden_size;
        let deepest = *in_channels.last().expect("a backbone returns at least one stage");
        let psp = cfg
            .pool_scales
            .iter()
            .enumerate()
            .map(|(i, &scale)| {
                Ok((
                    scale,
                    ConvModule::load(vb.pp("psp_modules").pp(i).pp(1), deepest, c, 1)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let shallow = &in_channels[..in_channels.len() - 1];
        Ok(Head {
            psp,
            bottleneck: ConvModule::load(vb.pp("bottleneck"), deepest + cfg.pool_scales.len() * c, c, 3)?,
            lateral_convs: shallow
                .iter()
                .enumerate()
                .map(|(i, &ch)| ConvModule::load(vb.pp("lateral_convs").pp(i), ch, c, 1))
                .collect::<Result<_>>()?,
            fpn_convs: (0..shallow.len())
                .map(|i| ConvModule::load(vb.pp("fpn_convs").pp(i), c, c, 3))
                .collect::<Result<_>>()?,
            fpn_bottleneck: {
                let vb = vb.pp("fpn_bottleneck");
                let n = in_channels.len();
                let weight = vb.pp("conv").get((c, n * c, 3, 3), "weight")?;
                (
                    ConvOfUpsampled::new(&weight, n)?,
                    BatchNorm2d::load(vb.pp("batch_norm"), c)?,
                )
            },
            classifier: conv2d(vb.pp("classifier"), c, cfg.num_labels(), 1, 1, 0, true)?,
        })
    }

    fn pyramid_pooling(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut outs = vec![x.clone()];
        for (scale, conv) in &self.psp {
            outs.push(resize_bilinear(
                &conv.forward(&adaptive_avg_pool2d(x, *scale)?)?,
                h,
                w,
            )?);
        }
        self.bottleneck.forward(&Tensor::cat(&outs, 1)?)
    }

    fn forward(&self, features: &[Tensor]) -> Result<Tensor> {
        let mut laterals = features
            .iter()
            .zip(&self.lateral_convs)
            .map(|(f, conv)| conv.forward(f))
            .collect::<Result<Vec<_>>>()?;
        laterals.push(self.pyramid_pooling(features.last().expect("at least one feature map"))?);
        // Top-down: each level adds the (upsampled) level above it.
        for i in (1..laterals.len()).rev() {
            let (_, _, h, w) = laterals[i - 1].dims4()?;
            laterals[i - 1] = (&laterals[i - 1] + resize_bilinear(&laterals[i], h, w)?)?;
        }
        let mut outs = laterals
            .iter()
            .zip(&self.fpn_convs)
            .map(|(l, conv)| conv.forward(l))
            .collect::<Result<Vec<_>>>()?;
        outs.push(laterals.last().expect("at least one level").clone());
        let (conv, batch_norm) = &self.fpn_bottleneck;
        let fused = batch_norm.forward(&conv.forward(&outs)?)?.relu()?;
        self.classifier.forward(&fused)
    }
}

/// `UperNetForSemanticSegmentation`: logits at the input resolution.
pub struct UperNet {
    backbone: ConvNextBackbone,
    head: Head,
}

impl UperNet {
    pub fn load(vb: VarBuilder, cfg: &UperNetConfig) -> anyhow::Result<Self> {
        let convnext = cfg.convnext()?;
        let in_channels: Vec<usize> = convnext
            .out_stages()?
            .iter()
            .map(|&s| convnext.hidden_sizes[s - 1])
            .collect();
        Ok(UperNet {
            backbone: ConvNextBackbone::load(vb.pp("backbone"), convnext)?,
            head: Head::load(vb.pp("decode_head"), cfg, &in_channels)?,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = pixel_values.dims4()?;
        let logits = self.head.forward(&self.backbone.forward(pixel_values)?)?;
        resize_bilinear(&logits, h, w)
    }
}
