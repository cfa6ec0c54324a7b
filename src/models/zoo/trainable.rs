//! The building blocks in train mode, chosen when the VarBuilder hands out `Var`s (the
//! trainer's store): convolutions followed by BatchNorm with the batch's statistics (the
//! running statistics moved in place, so the store that created them sees the update),
//! Dropout2d, and the differentiable forms of the pools and resizes whose fast kernels have
//! no backward. Eval mode never reaches this file: its weights are plain tensors.

use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::layers::{Act, ConvSpec};
use crate::train::batch_norm::{batch_norm2d_relu_train, batch_norm2d_train, BatchNormStats, EPS, MOMENTUM};
use crate::train::conv::conv2d;
use crate::train::conv_bn::conv_bn_train;

/// `nn.BatchNorm2d` in train mode with its buffers as tensors shared with the store.
struct TrainBatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    /// int64, shape () as in torch's state dict.
    num_batches_tracked: Tensor,
}

impl TrainBatchNorm {
    fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(TrainBatchNorm {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            running_mean: vb.get(channels, "running_mean")?,
            running_var: vb.get(channels, "running_var")?,
            num_batches_tracked: vb.get_with_hints_dtype(
                (),
                "num_batches_tracked",
                Init::Const(0.),
                DType::I64,
            )?,
        })
    }

    /// `norm(&mut stats)` runs the layer on its running statistics; they are written back
    /// into the store's tensors afterwards.
    fn with_stats(&self, norm: impl FnOnce(&mut BatchNormStats) -> Result<Tensor>) -> Result<Tensor> {
        let mut stats = BatchNormStats {
            running_mean: self.running_mean.clone(),
            running_var: self.running_var.clone(),
            num_batches_tracked: 0,
        };
        let y = norm(&mut stats)?;
        self.running_mean.slice_set(&stats.running_mean, 0, 0)?;
        self.running_var.slice_set(&stats.running_var, 0, 0)?;
        let counted = self.num_batches_tracked.reshape(1)?;
        counted.slice_set(
            &(counted.to_dtype(DType::F64)? + 1.0)?.to_dtype(DType::I64)?,
            0,
            0,
        )?;
        Ok(y)
    }
}

/// conv (+ bias) -> BatchNorm in train mode (when present) -> activation.
pub struct TrainConv {
    weight: Tensor,
    bias: Option<Tensor>,
    norm: Option<TrainBatchNorm>,
    spec: ConvSpec,
    act: Act,
}

impl TrainConv {
    /// The convolution's `weight` (already fetched, to tell the mode) and, in the state
    /// dict's order, its `bias` and the BatchNorm under `bn`.
    pub fn load(
        weight: Tensor,
        conv: VarBuilder,
        bn: Option<VarBuilder>,
        spec: ConvSpec,
        conv_bias: bool,
        act: Act,
    ) -> Result<Self> {
        let bias = if conv_bias {
            Some(conv.get(spec.c_out, "bias")?)
        } else {
            None
        };
        let norm = bn.map(|bn| TrainBatchNorm::load(bn, spec.c_out)).transpose()?;
        Ok(TrainConv {
            weight,
            bias,
            norm,
            spec,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (geometry, depthwise) = (self.spec.geometry, self.spec.depthwise);
        let relu = self.act == Act::Relu;
        if let (Some(norm), None) = (&self.norm, &self.bias) {
            // One op for conv, BatchNorm and a ReLU (the experiment's convolutions before a
            // BatchNorm have no bias).
            let y = norm.with_stats(|stats| {
                let affine = (&norm.weight, &norm.bias);
                conv_bn_train(
                    x,
                    &self.weight,
                    (geometry, depthwise),
                    affine,
                    relu,
                    stats,
                    MOMENTUM,
                    EPS,
                )
            })?;
            return if relu { Ok(y) } else { self.act.tensor(&y) };
        }
        let mut y = conv2d(x, &self.weight, geometry, depthwise)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(&bias.reshape((1, self.spec.c_out, 1, 1))?)?;
        }
        if let Some(norm) = &self.norm {
            let train = if relu {
                batch_norm2d_relu_train
            } else {
                batch_norm2d_train
            };
            y = norm
                .with_stats(|stats| train(&y, Some(&norm.weight), Some(&norm.bias), stats, MOMENTUM, EPS))?;
            if relu {
                return Ok(y);
            }
        }
        self.act.tensor(&y)
    }
}

/// The random draws of one train-mode layer: a generator keyed by the whole (seed, stream,
/// iteration) tuple, so a resumed run draws what an uninterrupted one would (torch's draws
/// cannot be reproduced anyway). `stream` tells the layers apart.
struct Draws {
    stream: u64,
    key: Mutex<(u64, u64)>,
}

impl Draws {
    fn new(stream: u64) -> Self {
        Draws {
            stream,
            key: Mutex::new((0, 0)),
        }
    }

    fn set(&self, seed: u64, iteration: u64) {
        *self.key.lock().expect("no panic while holding the lock") = (seed, iteration);
    }

    fn rng(&self) -> StdRng {
        let (seed, iteration) = *self.key.lock().expect("no panic while holding the lock");
        let mut key = [0u8; 32];
        for (i, word) in [seed, self.stream, iteration].into_iter().enumerate() {
            key[i * 8..(i + 1) * 8].copy_from_slice(&word.to_le_bytes());
        }
        StdRng::from_seed(key)
    }
}

/// `nn.Dropout2d(p)` in train mode: whole channels zeroed with probability p, the rest
/// scaled by 1 / (1 - p).
pub struct Dropout2d {
    p: f64,
    draws: Draws,
}

impl Dropout2d {
    pub fn new(p: f64, stream: u64) -> Self {
        Dropout2d {
            p,
            draws: Draws::new(stream),
        }
    }

    /// The run's seed and the optimizer step the next forward belongs to.
    pub fn set_iteration(&self, seed: u64, iteration: u64) {
        self.draws.set(seed, iteration);
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        keep_mask(x, self.p, (n, c, 1, 1), &mut self.draws.rng())
    }
}

/// `x` times a mask of `shape` (broadcast over the rest): 0 with probability p, else
/// 1 / (1 - p).
fn keep_mask(x: &Tensor, p: f64, shape: impl Into<candle_core::Shape>, rng: &mut StdRng) -> Result<Tensor> {
    let shape = shape.into();
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            if keep > 0.0 && rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&mask)
}

/// timm's `DropPath(p)` (stochastic depth) in train mode on tokens (B, N, C): whole samples
/// of a residual branch dropped with probability p, the rest scaled by 1 / (1 - p).
pub struct DropPath {
    p: f64,
    draws: Draws,
}

impl DropPath {
    pub fn new(p: f64, stream: u64) -> Self {
        DropPath {
            p,
            draws: Draws::new(stream),
        }
    }

    /// The run's seed and the optimizer step the next forward belongs to.
    pub fn set_iteration(&self, seed: u64, iteration: u64) {
        self.draws.set(seed, iteration);
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _) = x.dims3()?;
        keep_mask(x, self.p, (b, 1, 1), &mut self.draws.rng())
    }
}

/// Whether `x` carries gradients: the differentiable forms are used for it.
pub fn training(x: &Tensor) -> bool {
    x.track_op()
}
