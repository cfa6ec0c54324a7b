//! SegFormer (Xie et al. 2021) as Hugging Face's `SegformerForSemanticSegmentation`:
//! same tensor names, same numbers.
//!
//! Modelled on candle-transformers' segformer.rs but written again, because that one differs
//! from transformers numerically: it ignores the classifier bias, upsamples the decoder
//! features with nearest instead of bilinear interpolation, and uses the config's
//! `layer_norm_eps` for every norm where transformers uses PyTorch's default 1e-5. Its
//! depthwise convolutions are also replaced by our own kernel (`ops::DepthwiseConv2d`).

use std::collections::BTreeMap;

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::ops::{conv2d, resize_bilinear, Activation, BatchNorm2d, Conv, Dense, DepthwiseConv2d};
use super::zoo::layers::{ConvBn, ConvSpec};
use super::zoo::trainable::{training, DropPath};

/// nn.LayerNorm's default: transformers builds every SegFormer norm without an eps.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Whose module tree the MiT encoder's tensor names follow. The experiment's MiT
/// (`exp/models/backbones/mit.py`, from segmentation_models.pytorch) fuses keys and values
/// into one `kv` linear and builds its block and stage norms with eps 1e-6 (its patch
/// embedding and reduction norms keep PyTorch's 1e-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderNames {
    Transformers,
    Experiment,
}

impl EncoderNames {
    /// The eps of the block norms and the per-stage output norms.
    fn block_eps(self) -> f64 {
        match self {
            EncoderNames::Transformers => LAYER_NORM_EPS,
            EncoderNames::Experiment => 1e-6,
        }
    }
}

/// Each of `blocks` blocks' stochastic-depth rate in train mode, `torch.linspace(0, rate,
/// blocks)` in float32 as the experiment's MiT spreads its `drop_path_rate`.
fn drop_path_rates(rate: f64, blocks: usize) -> Vec<f64> {
    let step = rate as f32 / (blocks.max(2) - 1) as f32;
    (0..blocks).map(|k| f64::from(step * k as f32)).collect()
}

/// The fields of a SegFormer `config.json` the forward pass needs. transformers writes
/// only the values that differ from its defaults, so every default here is transformers'
/// (those of nvidia/mit-b0).
#[derive(Clone, Debug, Deserialize)]
pub struct SegformerConfig {
    #[serde(default = "defaults::three")]
    pub num_channels: usize,
    /// Stochastic depth in train mode (transformers' and the experiment's MiT: 0.1).
    #[serde(default = "defaults::drop_path_rate")]
    pub drop_path_rate: f64,
    #[serde(default = "defaults::four")]
    pub num_encoder_blocks: usize,
    #[serde(default = "defaults::depths")]
    pub depths: Vec<usize>,
    #[serde(default = "defaults::sr_ratios")]
    pub sr_ratios: Vec<usize>,
    #[serde(default = "defaults::hidden_sizes")]
    pub hidden_sizes: Vec<usize>,
    #[serde(default = "defaults::patch_sizes")]
    pub patch_sizes: Vec<usize>,
    #[serde(default = "defaults::strides")]
    pub strides: Vec<usize>,
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: Vec<usize>,
    #[serde(default = "defaults::mlp_ratios")]
    pub mlp_ratios: Vec<usize>,
    #[serde(default = "defaults::decoder_hidden_size")]
    pub decoder_hidden_size: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default = "super::default_id2label")]
    pub id2label: BTreeMap<String, String>,
}

mod defaults {
    pub fn drop_path_rate() -> f64 {
        0.1
    }
    pub fn three() -> usize {
        3
    }
    pub fn four() -> usize {
        4
    }
    pub fn depths() -> Vec<usize> {
        vec![2, 2, 2, 2]
    }
    pub fn sr_ratios() -> Vec<usize> {
        vec![8, 4, 2, 1]
    }
    pub fn hidden_sizes() -> Vec<usize> {
        vec![32, 64, 160, 256]
    }
    pub fn patch_sizes() -> Vec<usize> {
        vec![7, 3, 3, 3]
    }
    pub fn strides() -> Vec<usize> {
        vec![4, 2, 2, 2]
    }
    pub fn num_attention_heads() -> Vec<usize> {
        vec![1, 2, 5, 8]
    }
    pub fn mlp_ratios() -> Vec<usize> {
        vec![4, 4, 4, 4]
    }
    pub fn decoder_hidden_size() -> usize {
        256
    }
}

impl SegformerConfig {
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        let n = self.num_encoder_blocks;
        let lists = [
            ("depths", self.depths.len()),
            ("sr_ratios", self.sr_ratios.len()),
            ("hidden_sizes", self.hidden_sizes.len()),
            ("patch_sizes", self.patch_sizes.len()),
            ("strides", self.strides.len()),
            ("num_attention_heads", self.num_attention_heads.len()),
            ("mlp_ratios", self.mlp_ratios.len()),
        ];
        anyhow::ensure!(n > 0, "config.json: num_encoder_blocks must be at least 1");
        for (key, len) in lists {
            anyhow::ensure!(
                len == n,
                "config.json: {key} has {len} entries, num_encoder_blocks is {n}"
            );
        }
        let all_positive = [
            &self.depths,
            &self.sr_ratios,
            &self.hidden_sizes,
            &self.patch_sizes,
            &self.strides,
            &self.num_attention_heads,
            &self.mlp_ratios,
        ]
        .iter()
        .all(|list| list.iter().all(|&v| v > 0));
        anyhow::ensure!(
            all_positive,
            "config.json: every size, ratio, stride and head count must be positive"
        );
        for (i, (&hidden, &heads)) in self
            .hidden_sizes
            .iter()
            .zip(&self.num_attention_heads)
            .enumerate()
        {
            anyhow::ensure!(hidden % heads == 0, "config.json: hidden_sizes[{i}] = {hidden} is not divisible by num_attention_heads[{i}] = {heads}");
        }
        if let Some(act) = &self.hidden_act {
            anyhow::ensure!(
                act == "gelu",
                "config.json: hidden_act {act:?} is not supported (only \"gelu\")"
            );
        }
        anyhow::ensure!(self.num_labels() > 0, "config.json: id2label is empty");
        Ok(())
    }
}

/// `nn.LayerNorm` over the last dimension: candle's fused kernel, or in train mode the
/// differentiable form.
struct Norm {
    inner: LayerNorm,
    eps: f64,
}

fn norm(channels: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    Ok(Norm {
        inner: layer_norm(channels, eps, vb)?,
        eps,
    })
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if training(x) {
            return crate::train::layer_norm(x, Some(self.inner.weight()), self.inner.bias(), self.eps);
        }
        self.inner.forward(x)
    }
}

/// A convolution with a bias: `conv2d(c_in, c_out, kernel, stride, padding)`.
fn biased_conv(
    vb: VarBuilder,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<ConvBn> {
    let spec = ConvSpec::same(c_in, c_out, kernel)
        .stride(stride)
        .padding(padding);
    ConvBn::plain(vb, spec, Activation::Identity)
}

struct OverlapPatchEmbeddings {
    proj: ConvBn,
    layer_norm: Norm,
}

impl OverlapPatchEmbeddings {
    fn load(
        vb: VarBuilder,
        patch: usize,
        stride: usize,
        c_in: usize,
        hidden: usize,
        norm_name: &str,
    ) -> Result<Self> {
        Ok(OverlapPatchEmbeddings {
            proj: biased_conv(vb.pp("proj"), c_in, hidden, patch, stride, patch / 2)?,
            layer_norm: norm(hidden, LAYER_NORM_EPS, vb.pp(norm_name))?,
        })
    }

    /// (B, C, H, W) -> tokens (B, h*w, hidden) and (h, w).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, usize, usize)> {
        let x = self.proj.forward(x)?;
        let (_, _, h, w) = x.dims4()?;
        let tokens = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        Ok((self.layer_norm.forward(&tokens)?, h, w))
    }
}

/// The key and value projections: two linears, or in train mode the experiment's fused
/// `kv` linear whose output is split (a split of its weight would not see the updates).
enum KeyValue {
    Split(Linear, Linear),
    Fused(Linear),
}

impl KeyValue {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            KeyValue::Split(key, value) => Ok((key.forward(x)?, value.forward(x)?)),
            KeyValue::Fused(kv) => {
                let both = kv.forward(x)?;
                let c = both.dim(2)? / 2;
                Ok((
                    both.narrow(2, 0, c)?.contiguous()?,
                    both.narrow(2, c, c)?.contiguous()?,
                ))
            }
        }
    }
}

/// Attention whose keys and values come from a strided (sequence-reduced) copy of the map.
struct EfficientSelfAttention {
    query: Linear,
    key_value: KeyValue,
    reduction: Option<(ConvBn, Norm)>,
    heads: usize,
    output: Linear,
}

impl EfficientSelfAttention {
    fn load(vb: VarBuilder, hidden: usize, heads: usize, sr: usize, names: EncoderNames) -> Result<Self> {
        let (me, sr_norm, query, output) = match names {
            EncoderNames::Transformers => (vb.pp("self"), "layer_norm", "query", vb.pp("output").pp("dense")),
            EncoderNames::Experiment => (vb.clone(), "norm", "q", vb.pp("proj")),
        };
        // Created in the state dict's order (the experiment's: q, kv, proj, sr, norm).
        let query = linear(hidden, hidden, me.pp(query))?;
        let key_value = match names {
            EncoderNames::Transformers => KeyValue::Split(
                linear(hidden, hidden, me.pp("key"))?,
                linear(hidden, hidden, me.pp("value"))?,
            ),
            EncoderNames::Experiment => {
                // One (2 C, C) linear: its first C outputs are the keys, the rest the values.
                let kv = me.pp("kv");
                let (weight, bias) = (
                    kv.get((2 * hidden, hidden), "weight")?,
                    kv.get(2 * hidden, "bias")?,
                );
                if weight.is_variable() {
                    KeyValue::Fused(Linear::new(weight, Some(bias)))
                } else {
                    let half = |i: usize| -> Result<Linear> {
                        Ok(Linear::new(
                            weight.narrow(0, i * hidden, hidden)?.contiguous()?,
                            Some(bias.narrow(0, i * hidden, hidden)?.contiguous()?),
                        ))
                    };
                    KeyValue::Split(half(0)?, half(1)?)
                }
            }
        };
        let output = linear(hidden, hidden, output)?;
        let reduction = if sr > 1 {
            Some((
                biased_conv(me.pp("sr"), hidden, hidden, sr, sr, 0)?,
                norm(hidden, LAYER_NORM_EPS, me.pp(sr_norm))?,
            ))
        } else {
            None
        };
        Ok(EfficientSelfAttention {
            query,
            key_value,
            reduction,
            heads,
            output,
        })
    }

    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let head_dim = c / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            let len = t.dim(1)?;
            if self.heads == 1 {
                return t.reshape((b, 1, len, head_dim));
            }
            t.reshape((b, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let context = match &self.reduction {
            Some((sr, norm)) => {
                let map = x.transpose(1, 2)?.reshape((b, c, h, w))?;
                let reduced = sr.forward(&map)?.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
                norm.forward(&reduced)?
            }
            None => x.clone(),
        };
        let (k, v) = self.key_value.forward(&context)?;
        let (k, v) = (split(k)?, split(v)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_dim as f64).sqrt())?;
        let attention = if training(&scores) {
            crate::train::softmax_last_dim(&scores)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = attention.matmul(&v)?;
        let out = if self.heads == 1 {
            out.reshape((b, n, c))?
        } else {
            out.transpose(1, 2)?.reshape((b, n, c))?
        };
        self.output.forward(&out)
    }
}

/// The depthwise conv with the GELU that follows it: our token kernel, or in train mode
/// the differentiable conv on the (B, C, H, W) map.
enum MixConv {
    Tokens(DepthwiseConv2d),
    Train(ConvBn),
}

struct MixFfn {
    dense1: Dense,
    dwconv: MixConv,
    dense2: Dense,
}

impl MixFfn {
    /// `train`: the weights are `Var`s (train mode).
    fn load(
        vb: VarBuilder,
        hidden: usize,
        mlp_ratio: usize,
        names: EncoderNames,
        train: bool,
    ) -> Result<Self> {
        let inner = hidden * mlp_ratio;
        let (fc1, fc2) = match names {
            EncoderNames::Transformers => ("dense1", "dense2"),
            EncoderNames::Experiment => ("fc1", "fc2"),
        };
        let dense1 = Dense::load(vb.pp(fc1), hidden, inner, Activation::Identity)?;
        let conv = vb.pp("dwconv").pp("dwconv");
        let dwconv = if train {
            MixConv::Train(ConvBn::plain(
                conv,
                ConvSpec::depthwise(inner, 3),
                Activation::Gelu,
            )?)
        } else {
            MixConv::Tokens(DepthwiseConv2d::load(conv, inner, 3, 1)?.with_activation(Activation::Gelu))
        };
        Ok(MixFfn {
            dense1,
            dwconv,
            dense2: Dense::load(vb.pp(fc2), inner, hidden, Activation::Identity)?,
        })
    }

    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let x = self.dense1.forward(x)?;
        let x = match &self.dwconv {
            MixConv::Tokens(conv) => conv.forward_tokens(&x, h, w)?,
            MixConv::Train(conv) => {
                let (b, n, c) = x.dims3()?;
                let map = x.transpose(1, 2)?.reshape((b, c, h, w))?;
                conv.forward(&map)?
                    .reshape((b, c, n))?
                    .transpose(1, 2)?
                    .contiguous()?
            }
        };
        self.dense2.forward(&x)
    }
}

struct Layer {
    layer_norm_1: Norm,
    attention: EfficientSelfAttention,
    layer_norm_2: Norm,
    mlp: MixFfn,
    /// Stochastic depth on both residual branches (train mode with a rate above 0).
    drop_path: Option<DropPath>,
}

impl Layer {
    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let branch = |y: Tensor| match &self.drop_path {
            Some(drop) => drop.forward(&y),
            None => Ok(y),
        };
        let x = (branch(self.attention.forward(&self.layer_norm_1.forward(x)?, h, w)?)? + x)?;
        branch(self.mlp.forward(&self.layer_norm_2.forward(&x)?, h, w)?)? + x
    }
}

struct Stage {
    embeddings: OverlapPatchEmbeddings,
    layers: Vec<Layer>,
    norm: Norm,
}

/// The MiT encoder: four stages, each returning a (B, C, H, W) map.
pub struct Encoder {
    stages: Vec<Stage>,
}

impl Encoder {
    /// The encoder under `vb` (transformers: `segformer.encoder`; the experiment: its
    /// `MixVisionTransformerEncoder`), sized by `cfg`'s encoder fields.
    pub fn load(vb: VarBuilder, cfg: &SegformerConfig, names: EncoderNames) -> Result<Self> {
        let eps = names.block_eps();
        let stage_names = |i: usize| match names {
            EncoderNames::Transformers => (
                vb.pp("block").pp(i),
                ["layer_norm_1", "attention", "layer_norm_2"],
                vb.pp("patch_embeddings").pp(i),
                "layer_norm",
                vb.pp("layer_norm").pp(i),
            ),
            EncoderNames::Experiment => (
                vb.pp(format!("block{}", i + 1)),
                ["norm1", "attn", "norm2"],
                vb.pp(format!("patch_embed{}", i + 1)),
                "norm",
                vb.pp(format!("norm{}", i + 1)),
            ),
        };
        // Every patch embedding first, as both state dicts order them.
        let mut embeddings = Vec::with_capacity(cfg.num_encoder_blocks);
        for i in 0..cfg.num_encoder_blocks {
            let c_in = if i == 0 {
                cfg.num_channels
            } else {
                cfg.hidden_sizes[i - 1]
            };
            let (_, _, vb, norm_name, _) = stage_names(i);
            embeddings.push(OverlapPatchEmbeddings::load(
                vb,
                cfg.patch_sizes[i],
                cfg.strides[i],
                c_in,
                cfg.hidden_sizes[i],
                norm_name,
            )?);
        }
        let drop_rates = drop_path_rates(cfg.drop_path_rate, cfg.depths.iter().sum());
        let train = embeddings[0].proj.is_trainable();
        let mut stages = Vec::with_capacity(cfg.num_encoder_blocks);
        let mut block_index = 0;
        for (i, embeddings) in embeddings.into_iter().enumerate() {
            let hidden = cfg.hidden_sizes[i];
            let (block, [norm_1, attention, norm_2], _, _, stage_norm) = stage_names(i);
            let mut layers = Vec::with_capacity(cfg.depths[i]);
            for j in 0..cfg.depths[i] {
                let vb = block.pp(j);
                let rate = drop_rates[block_index];
                layers.push(Layer {
                    layer_norm_1: norm(hidden, eps, vb.pp(norm_1))?,
                    attention: EfficientSelfAttention::load(
                        vb.pp(attention),
                        hidden,
                        cfg.num_attention_heads[i],
                        cfg.sr_ratios[i],
                        names,
                    )?,
                    layer_norm_2: norm(hidden, eps, vb.pp(norm_2))?,
                    mlp: MixFfn::load(vb.pp("mlp"), hidden, cfg.mlp_ratios[i], names, train)?,
                    drop_path: (train && rate > 0.0).then(|| DropPath::new(rate, 2 + block_index as u64)),
                });
                block_index += 1;
            }
            stages.push(Stage {
                embeddings,
                layers,
                norm: norm(hidden, eps, stage_norm)?,
            });
        }
        Ok(Encoder { stages })
    }

    /// Train mode: the run's seed and the optimizer step the next forward belongs to (keys
    /// the stochastic-depth draws).
    pub fn set_iteration(&self, seed: u64, iteration: u64) {
        for layer in self.stages.iter().flat_map(|s| &s.layers) {
            if let Some(drop) = &layer.drop_path {
                drop.set_iteration(seed, iteration);
            }
        }
    }

    /// The four stage maps, shallowest first.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut maps = Vec::with_capacity(self.stages.len());
        let mut x = x.clone();
        for stage in &self.stages {
            let (mut tokens, h, w) = stage.embeddings.forward(&x)?;
            for layer in &stage.layers {
                tokens = layer.forward(&tokens, h, w)?;
            }
            let tokens = stage.norm.forward(&tokens)?;
            let (b, _, c) = tokens.dims3()?;
            x = tokens.transpose(1, 2)?.reshape((b, c, h, w))?;
            maps.push(x.clone());
        }
        Ok(maps)
    }
}

/// The all-MLP decoder: project every stage to one width, upsample to the first stage's
/// size (bilinear), concatenate in reverse stage order, fuse (1x1 conv, batch norm), ReLU,
/// classify.
///
/// Projection, fusion and batch norm are linear and bilinear upsampling commutes with
/// channel mixing, so they are folded at load time into one (D x C_i) matrix per stage,
/// applied at the stage's own resolution before upsampling: the same function, without
/// the (4D x D) conv over the full 1/4-resolution map, which was most of a SegFormer-B0
/// forward.
struct DecodeHead {
    /// Per stage: the folded projection (D, C_i, 1, 1).
    stages: Vec<Conv>,
    /// The folded biases (1, D, 1, 1).
    bias: Tensor,
    classifier: Conv,
}

impl DecodeHead {
    fn load(vb: VarBuilder, cfg: &SegformerConfig) -> Result<Self> {
        let (d, n) = (cfg.decoder_hidden_size, cfg.num_encoder_blocks);
        let fuse = vb
            .pp("linear_fuse")
            .get((d, n * d, 1, 1), "weight")?
            .reshape((d, n * d))?;
        let batch_norm = BatchNorm2d::load(vb.pp("batch_norm"), d)?;
        let (scale, shift) = (
            batch_norm.scale().reshape((d, 1))?,
            batch_norm.shift().reshape(d)?,
        );
        let mut stages = Vec::with_capacity(n);
        let mut bias = shift;
        for i in 0..n {
            let proj = vb.pp("linear_c").pp(i).pp("proj");
            let weight = proj.get((d, cfg.hidden_sizes[i]), "weight")?;
            let b = proj.get(d, "bias")?;
            // The fused input concatenates the stages in reverse: stage i is block n-1-i.
            let block = fuse.narrow(1, (n - 1 - i) * d, d)?.broadcast_mul(&scale)?;
            stages.push(Conv::from_weight(
                block.matmul(&weight)?.reshape((d, cfg.hidden_sizes[i], 1, 1))?,
                None,
            )?);
            bias = (bias + block.matmul(&b.reshape((d, 1))?)?.reshape(d)?)?;
        }
        Ok(DecodeHead {
            stages,
            bias: bias.reshape((1, d, 1, 1))?,
            classifier: conv2d(vb.pp("classifier"), d, cfg.num_labels(), 1, 1, 0, true)?,
        })
    }

    fn forward(&self, maps: &[Tensor]) -> Result<Tensor> {
        let (_, _, h0, w0) = maps[0].dims4()?;
        let mut fused = self.bias.clone();
        for (map, stage) in maps.iter().zip(&self.stages) {
            fused = fused.broadcast_add(&resize_bilinear(&stage.forward(map)?, h0, w0)?)?;
        }
        self.classifier.forward(&fused.relu()?)
    }
}

/// `SegformerForSemanticSegmentation`: logits at 1/4 of the input resolution.
pub struct Segformer {
    encoder: Encoder,
    decode_head: DecodeHead,
}

impl Segformer {
    pub fn load(vb: VarBuilder, cfg: &SegformerConfig) -> Result<Self> {
        Ok(Segformer {
            encoder: Encoder::load(vb.pp("segformer").pp("encoder"), cfg, EncoderNames::Transformers)?,
            decode_head: DecodeHead::load(vb.pp("decode_head"), cfg)?,
        })
    }

    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.decode_head.forward(&self.encoder.forward(pixel_values)?)
    }
}
