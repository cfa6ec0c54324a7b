//! The RankSEG-RMA experiment's own models (`exp/models/segmentor.py`): a timm or MiT
//! backbone, one of its methods (DeepLabV3, DeepLabV3+, PSPNet, UNet, UPerNet, SegFormer),
//! `SegHead` and the auxiliary branch, loaded from the state dicts its `main.py` saves
//! and evaluated as `Segmentor.forward` in eval mode (BatchNorm folded at load).
//!
//! One file per method and per backbone family; the ConvNeXt and MiT backbones share their
//! math with the Hugging Face models (`../convnext.rs`, `../segformer.rs`).

mod deeplabv3;
mod deeplabv3plus;
mod efficientnet;
pub(crate) mod layers;
mod pspnet;
mod resnet;
mod segformer_head;
pub(crate) mod trainable;
mod unet;
mod upernet;

use anyhow::{bail, ensure, Context};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use self::efficientnet::EfficientNet;
use self::layers::{conv_bn_relu, ConvBn, ConvSpec, SegHead, SegHeadSpec};
use self::resnet::ResNet;
use super::convnext::{ConvNextBackbone, ConvNextConfig};
use super::segformer::{Encoder, EncoderNames, SegformerConfig};
use super::ModelYaml;
use crate::config::{self, Kind};

/// The data yaml keys a model is built from (`Segmentor.__init__` reads no others).
#[derive(Deserialize)]
struct ModelInputs {
    in_channels: usize,
    num_classes: usize,
    crop_size: [usize; 2],
}

/// What `Segmentor.__init__` reads from the model and data yamls.
#[derive(Clone, Debug)]
pub struct SegmentorConfig {
    pub backbone: String,
    pub method: Method,
    pub output_stride: usize,
    pub out_channels: usize,
    pub aux_out_channels: usize,
    pub align_corners: bool,
    pub in_channels: usize,
    pub num_classes: usize,
    /// The data yaml's (height, width) crop: SegHead resizes the logits to it.
    pub crop_size: (usize, usize),
    /// The yaml's `dropout` and `aux`: only training reads them.
    pub dropout: Option<f64>,
    pub aux: Option<bool>,
    /// MiT's stochastic depth in train mode: the yaml's `drop_path_rate` (an extension of
    /// ours, e.g. 0 for deterministic parity runs), else the experiment's 0.1.
    pub drop_path_rate: f64,
    /// Seeds train-time randomness (the Dropout2d and DropPath masks).
    pub seed: u64,
}

/// A method with the yaml keys only it reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    DeepLabV3 {
        atrous_rates: Vec<usize>,
    },
    DeepLabV3Plus {
        atrous_rates: Vec<usize>,
        shortcut_channels: usize,
    },
    PspNet {
        bins: Vec<usize>,
    },
    UNet,
    UperNet {
        bins: Vec<usize>,
    },
    SegFormer,
}

/// The methods `Segmentor` builds.
pub const METHODS: [&str; 6] = [
    "deeplabv3",
    "deeplabv3plus",
    "pspnet",
    "unet",
    "upernet",
    "segformer",
];

/// Backbones of the experiment's allow-list this harness does not build.
const UNSUPPORTED_BACKBONES: [&str; 3] = [
    "xception65",
    "mobilevitv2_100",
    "swin_large_patch4_window12_384.ms_in22k",
];

/// The experiment's MiT encoders (`mix_transformer_encoders`) train with stochastic depth 0.1.
const MIT_DROP_PATH_RATE: f64 = 0.1;

fn mit_config(name: &str) -> Option<SegformerConfig> {
    let (hidden_sizes, depths) = match name {
        "mit_b0" => (vec![32, 64, 160, 256], vec![2, 2, 2, 2]),
        "mit_b1" => (vec![64, 128, 320, 512], vec![2, 2, 2, 2]),
        "mit_b2" => (vec![64, 128, 320, 512], vec![3, 4, 6, 3]),
        "mit_b3" => (vec![64, 128, 320, 512], vec![3, 4, 18, 3]),
        "mit_b4" => (vec![64, 128, 320, 512], vec![3, 8, 27, 3]),
        "mit_b5" => (vec![64, 128, 320, 512], vec![3, 6, 40, 3]),
        _ => return None,
    };
    Some(SegformerConfig {
        num_channels: 3,
        drop_path_rate: MIT_DROP_PATH_RATE,
        num_encoder_blocks: 4,
        depths,
        sr_ratios: vec![8, 4, 2, 1],
        hidden_sizes,
        patch_sizes: vec![7, 3, 3, 3],
        strides: vec![4, 2, 2, 2],
        num_attention_heads: vec![1, 2, 5, 8],
        mlp_ratios: vec![4, 4, 4, 4],
        decoder_hidden_size: 256,
        hidden_act: None,
        id2label: Default::default(),
    })
}

fn convnext_config(name: &str, in_channels: usize) -> Option<ConvNextConfig> {
    let (hidden_sizes, depths) = match name {
        "convnext_base.fb_in22k_ft_in1k_384" => (vec![128, 256, 512, 1024], vec![3, 3, 27, 3]),
        _ => return None,
    };
    Some(ConvNextConfig {
        num_channels: in_channels,
        patch_size: 4,
        hidden_sizes,
        depths,
        hidden_act: None,
        out_features: None,
    })
}

impl SegmentorConfig {
    /// From a model yaml and a data yaml (names under configs/ or paths). Returns the config
    /// and a description of both files for messages.
    pub fn from_yamls(model_spec: &str, data_spec: &str) -> anyhow::Result<(Self, String)> {
        let model_source = config::find(Kind::Models, model_spec).context("--model_yaml")?;
        let model: ModelYaml = model_source.parse()?;
        let data_source = config::find(Kind::Datas, data_spec).context("--data_yaml")?;
        let data: ModelInputs = data_source.parse()?;
        let cfg = Self::new(
            &model,
            data.in_channels,
            data.num_classes,
            (data.crop_size[0], data.crop_size[1]),
        )
        .with_context(|| format!("{} with {}", model_source.origin, data_source.origin))?;
        Ok((
            cfg,
            format!("{} with {}", model_source.origin, data_source.origin),
        ))
    }

    /// The yaml's `method` name.
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::DeepLabV3 { .. } => "deeplabv3",
            Method::DeepLabV3Plus { .. } => "deeplabv3plus",
            Method::PspNet { .. } => "pspnet",
            Method::UNet => "unet",
            Method::UperNet { .. } => "upernet",
            Method::SegFormer => "segformer",
        }
    }

    /// The experiment's model yaml plus the data yaml's `in_channels`, `num_classes` and
    /// `crop_size`; a missing key or an unsupported combination is an error naming it.
    pub fn new(
        model: &ModelYaml,
        in_channels: usize,
        num_classes: usize,
        crop_size: (usize, usize),
    ) -> anyhow::Result<Self> {
        let backbone = model
            .backbone
            .clone()
            .context("the model yaml names no `backbone`")?;
        let need =
            |key: &str, value: Option<usize>| value.with_context(|| format!("the model yaml has no `{key}`"));
        let method = match model.method.as_str() {
            "deeplabv3" => Method::DeepLabV3 {
                atrous_rates: model
                    .atrous_rates
                    .clone()
                    .context("the model yaml has no `atrous_rates`")?,
            },
            "deeplabv3plus" => Method::DeepLabV3Plus {
                atrous_rates: model
                    .atrous_rates
                    .clone()
                    .context("the model yaml has no `atrous_rates`")?,
                shortcut_channels: need("shortcut_channels", model.shortcut_channels)?,
            },
            "pspnet" => Method::PspNet {
                bins: model.bins.clone().context("the model yaml has no `bins`")?,
            },
            "unet" => Method::UNet,
            "upernet" => Method::UperNet {
                bins: model.bins.clone().context("the model yaml has no `bins`")?,
            },
            "segformer" => Method::SegFormer,
            "cpt" => bail!(
                "method \"cpt\" (CategoryPrototypeTransformer) is not supported; supported: {}",
                METHODS.join(", ")
            ),
            other => bail!("unknown method {other:?}; supported: {}", METHODS.join(", ")),
        };
        let output_stride = need("output_stride", model.output_stride)?;
        ensure!(
            [8, 16, 32].contains(&output_stride),
            "output_stride {output_stride} is not one of 8, 16, 32"
        );
        if matches!(method, Method::SegFormer | Method::UNet | Method::UperNet { .. }) {
            ensure!(
                output_stride == 32,
                "method {:?} needs output_stride 32 (as the experiment asserts), got {output_stride}",
                model.method
            );
        }
        if UNSUPPORTED_BACKBONES.contains(&backbone.as_str()) {
            bail!("backbone {backbone:?} is not supported by this harness (supported: resnet18d/34d/50d/101d/152d, efficientnet_b0, mobilenetv2_100, convnext_base.fb_in22k_ft_in1k_384, mit_b0..mit_b5)");
        }
        let is_mit = mit_config(&backbone).is_some();
        let known = is_mit
            || ResNet::supports(&backbone)
            || EfficientNet::supports(&backbone)
            || convnext_config(&backbone, in_channels).is_some();
        ensure!(known, "unknown backbone {backbone:?}");
        if is_mit {
            ensure!(
                in_channels == 3,
                "backbone {backbone} takes 3 input channels (the experiment's MiT rejects others), the data yaml has {in_channels}"
            );
            ensure!(
                output_stride == 32,
                "backbone {backbone} does not support dilation: output_stride must be 32"
            );
            ensure!(
                method != Method::UNet,
                "method unet on {backbone} is not supported (MiT has no stride-2 map)"
            );
        }
        if backbone.starts_with("convnext") {
            ensure!(
                output_stride == 32,
                "backbone {backbone} supports output_stride 32 only"
            );
        }
        ensure!(
            crop_size.0 > 0 && crop_size.1 > 0 && num_classes > 0 && in_channels > 0,
            "crop_size, num_classes and in_channels must be positive"
        );
        Ok(SegmentorConfig {
            backbone,
            method,
            output_stride,
            out_channels: need("out_channels", model.out_channels)?,
            aux_out_channels: need("aux_out_channels", model.aux_out_channels)?,
            align_corners: model
                .align_corners
                .context("the model yaml has no `align_corners`")?,
            in_channels,
            num_classes,
            crop_size,
            dropout: model.dropout,
            aux: model.aux,
            drop_path_rate: model.drop_path_rate.unwrap_or(MIT_DROP_PATH_RATE),
            seed: 0,
        })
    }

    /// SegHead's settings; `stream` tells the main (0) and auxiliary (1) heads' dropout
    /// draws apart (MiT's DropPath blocks take 2 on).
    fn seg_head(&self, stream: u64) -> SegHeadSpec {
        SegHeadSpec {
            size: self.crop_size,
            align_corners: self.align_corners,
            dropout: self.dropout.unwrap_or(0.0),
            stream,
        }
    }
}

enum Backbone {
    ResNet(ResNet),
    EfficientNet(EfficientNet),
    ConvNext(ConvNextBackbone),
    Mit(Encoder),
}

impl Backbone {
    fn load(vb: VarBuilder, cfg: &SegmentorConfig) -> Result<(Self, Vec<usize>)> {
        let name = cfg.backbone.as_str();
        let input = cfg.in_channels;
        // `Backbone.out_channels`: the input's channels, then timm's feature channels; MiT's
        // own list (3, 0, ...) has a 0 for the stride-2 map it does not make.
        Ok(if let Some(mut mit) = mit_config(name) {
            mit.drop_path_rate = cfg.drop_path_rate;
            let channels = [vec![3, 0], mit.hidden_sizes.clone()].concat();
            (
                Backbone::Mit(Encoder::load(vb, &mit, EncoderNames::Experiment)?),
                channels,
            )
        } else if let Some(convnext) = convnext_config(name, input) {
            let channels = [vec![input], convnext.hidden_sizes.clone()].concat();
            (
                Backbone::ConvNext(ConvNextBackbone::load_timm(vb, &convnext)?),
                channels,
            )
        } else if ResNet::supports(name) {
            let net = ResNet::load(vb, name, input, cfg.output_stride)?;
            let channels = [&[input], net.channels()].concat();
            (Backbone::ResNet(net), channels)
        } else {
            let net = EfficientNet::load(vb, name, input, cfg.output_stride)?;
            let channels = [&[input], net.channels()].concat();
            (Backbone::EfficientNet(net), channels)
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Features> {
        let (dummy, maps) = match self {
            Backbone::ResNet(net) => (false, net.forward(x)?),
            Backbone::EfficientNet(net) => (false, net.forward(x)?),
            Backbone::ConvNext(net) => (false, net.forward(x)?),
            Backbone::Mit(net) => (true, net.forward(x)?),
        };
        let mut all = vec![Some(x.clone())];
        if dummy {
            all.push(None);
        }
        all.extend(maps.into_iter().map(Some));
        Ok(Features { maps: all })
    }
}

/// The experiment's `features`: the input, then the backbone's maps shallowest first
/// (`None` for MiT's empty stride-2 placeholder).
pub struct Features {
    maps: Vec<Option<Tensor>>,
}

impl Features {
    fn get(&self, i: usize) -> Result<&Tensor> {
        self.maps[i]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("feature map {i} is MiT's empty placeholder")))
    }

    /// `features[-k]`.
    pub fn from_end(&self, k: usize) -> Result<&Tensor> {
        self.get(self.maps.len() - k)
    }

    /// `features[i:]`.
    pub fn from_index(&self, i: usize) -> Result<Vec<&Tensor>> {
        (i..self.maps.len()).map(|j| self.get(j)).collect()
    }

    /// `features[1:]`: the backbone's maps.
    pub fn backbone_maps(&self) -> Result<Vec<&Tensor>> {
        self.from_index(1)
    }
}

enum Head {
    DeepLabV3(Box<deeplabv3::DeepLabV3>),
    DeepLabV3Plus(Box<deeplabv3plus::DeepLabV3Plus>),
    PspNet(Box<pspnet::PspNet>),
    UNet(Box<unet::UNet>),
    UperNet(Box<upernet::UperNet>),
    SegFormer(Box<segformer_head::SegFormerHead>),
}

impl Head {
    fn load(vb: VarBuilder, cfg: &SegmentorConfig, channels: &[usize]) -> Result<Self> {
        let (c, align) = (cfg.out_channels, cfg.align_corners);
        Ok(match &cfg.method {
            Method::DeepLabV3 { atrous_rates } => Head::DeepLabV3(Box::new(deeplabv3::DeepLabV3::load(
                vb,
                channels,
                c,
                atrous_rates,
                align,
            )?)),
            Method::DeepLabV3Plus {
                atrous_rates,
                shortcut_channels,
            } => Head::DeepLabV3Plus(Box::new(deeplabv3plus::DeepLabV3Plus::load(
                vb,
                channels,
                c,
                *shortcut_channels,
                atrous_rates,
                align,
            )?)),
            Method::PspNet { bins } => {
                Head::PspNet(Box::new(pspnet::PspNet::load(vb, channels, c, bins, align)?))
            }
            Method::UNet => Head::UNet(Box::new(unet::UNet::load(vb, &channels[1..], c, align)?)),
            Method::UperNet { bins } => Head::UperNet(Box::new(upernet::UperNet::load(
                vb,
                &channels[2..],
                c,
                bins,
                align,
            )?)),
            Method::SegFormer => Head::SegFormer(Box::new(segformer_head::SegFormerHead::load(
                vb,
                &channels[2..],
                c,
                align,
            )?)),
        })
    }

    fn forward(&self, features: &Features) -> Result<Tensor> {
        match self {
            Head::DeepLabV3(m) => m.forward(features),
            Head::DeepLabV3Plus(m) => m.forward(features),
            Head::PspNet(m) => m.forward(features),
            Head::UNet(m) => m.forward(features),
            Head::UperNet(m) => m.forward(features),
            Head::SegFormer(m) => m.forward(features),
        }
    }
}

/// `Segmentor` in eval mode.
pub struct Segmentor {
    backbone: Backbone,
    method: Head,
    head: SegHead,
    /// The auxiliary branch (`aux_conv` on `features[-2]`, `aux_head`): loaded because
    /// every checkpoint holds it; only training uses it.
    aux: (ConvBn, SegHead),
    pub config: SegmentorConfig,
}

impl Segmentor {
    pub fn load(vb: VarBuilder, cfg: &SegmentorConfig) -> Result<Self> {
        let (backbone, channels) = Backbone::load(vb.pp("backbone").pp("backbone"), cfg)?;
        let method = Head::load(vb.pp("method"), cfg, &channels)?;
        let classes = cfg.num_classes;
        let head = SegHead::load(vb.pp("head"), cfg.out_channels, classes, cfg.seg_head(0))?;
        let aux_in = channels[channels.len() - 2];
        let aux = (
            conv_bn_relu(vb.pp("aux_conv"), ConvSpec::same(aux_in, cfg.aux_out_channels, 3))?,
            SegHead::load(vb.pp("aux_head"), cfg.aux_out_channels, classes, cfg.seg_head(1))?,
        );
        Ok(Segmentor {
            backbone,
            method,
            head,
            aux,
            config: cfg.clone(),
        })
    }

    /// The main logits, (B, num_classes, crop_h, crop_w): `Segmentor.forward(x)[0]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.backbone.forward(x)?;
        self.head.forward(&self.method.forward(&features)?)
    }

    /// Train mode: the optimizer step the next forward belongs to (keys its random draws).
    pub fn set_iteration(&self, iteration: u64) {
        if let Backbone::Mit(encoder) = &self.backbone {
            encoder.set_iteration(self.config.seed, iteration);
        }
        self.head.set_iteration(self.config.seed, iteration);
        self.aux.1.set_iteration(self.config.seed, iteration);
    }

    /// The main and the auxiliary logits (`Segmentor.forward(x)` with the yaml's `aux` on).
    pub fn forward_with_aux(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let features = self.backbone.forward(x)?;
        let main = self.head.forward(&self.method.forward(&features)?)?;
        let (conv, head) = &self.aux;
        let aux = head.forward(&conv.forward(features.from_end(2)?)?)?;
        Ok((main, aux))
    }
}
