//! The weights of a model being trained: a VarBuilder backend that hands out every
//! parameter as a `Var` (so `models::zoo` builds its train mode) and every BatchNorm buffer as
//! a tensor of its own, which the layers update in place. Values come from a checkpoint
//! (strict, as `load_state_dict`), else from the backbone's pretrained file where it has the
//! key, else from the experiment's initialisation (`Segmentor.initialize`, timm's for the
//! backbone). It remembers what it handed out in creation order, which the model files keep
//! equal to torch's `state_dict()` order: that order numbers the optimizer state.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

use super::optim::groups::{module_groups, Module};
use super::optim::ParamGroup;
use crate::models::StateDict;

/// Where the starting values come from.
pub enum Start {
    /// A full state dict (`--model_checkpoint` or a checkpoint to resume).
    Checkpoint(StateDict),
    /// Initialised, the backbone from its pretrained weights (keys without the
    /// `backbone.backbone.` prefix) when given.
    Fresh {
        pretrained: Option<StateDict>,
        seed: u64,
    },
}

/// What the store handed out.
#[derive(Clone)]
pub enum Slot {
    Param(Var),
    Buffer(Tensor),
}

impl Slot {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Slot::Param(var) => var.as_tensor(),
            Slot::Buffer(t) => t,
        }
    }
}

struct Inner {
    start: Start,
    created: Mutex<Vec<(String, Slot)>>,
}

/// Shared by the VarBuilder the model loads from and the trainer.
#[derive(Clone)]
pub struct TrainStore(Arc<Inner>);

/// The prefix under which `Segmentor` keeps its timm / MiT backbone.
pub const BACKBONE: &str = "backbone.backbone.";

fn is_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"]
        .iter()
        .any(|b| name.ends_with(b))
}

impl TrainStore {
    pub fn new(start: Start) -> Self {
        TrainStore(Arc::new(Inner {
            start,
            created: Mutex::new(Vec::new()),
        }))
    }

    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// Everything handed out, in creation (= state dict) order.
    pub fn entries(&self) -> Vec<(String, Slot)> {
        self.0
            .created
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }

    /// The trainable parameters, in order.
    pub fn params(&self) -> Vec<(String, Var)> {
        self.entries()
            .into_iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Param(var) => Some((name, var)),
                Slot::Buffer(_) => None,
            })
            .collect()
    }

    /// The state dict as it stands, names as the experiment's.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.entries()
            .into_iter()
            .map(|(name, slot)| (name, slot.tensor().clone()))
            .collect()
    }

    /// Checkpoint keys the model never asked for (an error, as strict `load_state_dict`).
    pub fn unexpected_keys(&self) -> Vec<String> {
        match &self.0.start {
            Start::Checkpoint(dict) => dict.unexpected_keys(),
            Start::Fresh { .. } => Vec::new(),
        }
    }

    /// `Segmentor.get_params_list(lr, multiplier)`: backbone, method, head, then (with the
    /// auxiliary branch on) aux_conv and aux_head, each split by `group_weight`.
    pub fn segmentor_groups(
        &self,
        lr: f64,
        multiplier: f64,
        weight_decay: f64,
        aux: bool,
    ) -> Vec<ParamGroup> {
        let params = self.params();
        let mut modules = vec!["backbone", "method", "head"];
        if aux {
            modules.extend(["aux_conv", "aux_head"]);
        }
        let modules = modules
            .into_iter()
            .map(|module| Module {
                params: params
                    .iter()
                    .filter(|(name, _)| name.split('.').next() == Some(module))
                    .map(|(_, var)| var.clone())
                    .collect(),
                lr_multiplier: if module == "backbone" { 1.0 } else { multiplier },
            })
            .collect();
        module_groups(modules, lr, weight_decay)
    }

    fn value(&self, shape: &Shape, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match &self.0.start {
            Start::Checkpoint(dict) => dict.tensor(name, shape, dev),
            Start::Fresh { pretrained, seed } => {
                if let (Some(dict), Some(key)) = (pretrained, name.strip_prefix(BACKBONE)) {
                    if dict.contains(key) {
                        return dict.tensor(key, shape, dev);
                    }
                }
                initial(shape, name, *seed, dev)?.to_dtype(dtype)
            }
        }
    }
}

impl SimpleBackend for TrainStore {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        // An owned copy: the store's tensors are written in place, never a checkpoint's mmap.
        let value = self.value(&shape, name, dtype, dev)?;
        let value = value.to_dtype(dtype)?.copy()?;
        let slot = if is_buffer(name) {
            Slot::Buffer(value)
        } else {
            Slot::Param(Var::from_tensor(&value)?)
        };
        let tensor = slot.tensor().clone();
        let mut created = self.0.created.lock().expect("no panic while holding the lock");
        if created.iter().any(|(n, _)| n == name) {
            candle_core::bail!("the model asked twice for {name}");
        }
        created.push((name.to_string(), slot));
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("training needs the shape of {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.0.start {
            Start::Checkpoint(dict) => dict.contains(name),
            Start::Fresh { .. } => true,
        }
    }
}

/// A seed of its own per tensor, from the run's seed and the name (FNV-1a).
fn tensor_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The experiment's initialisation by name: BatchNorm buffers 0 / 1 / 0 batches, 1-D weights
/// 1 and biases 0; the method and aux_conv's convolutions `kaiming_uniform_(fan_in, relu)`,
/// the heads' (and the method's linear layers) `xavier_uniform_`; a backbone without
/// pretrained weights as timm initialises ResNets (`kaiming_normal_(fan_out, relu)`) and
/// MiT's linear layers (normal, std 0.02).
fn initial(shape: &Shape, name: &str, seed: u64, dev: &Device) -> Result<Tensor> {
    let dims = shape.dims();
    let constant = |v: f64| Tensor::full(v as f32, shape, dev);
    if name.ends_with("num_batches_tracked") {
        return Tensor::zeros(shape, DType::I64, dev);
    }
    if name.ends_with("running_mean") {
        return constant(0.0);
    }
    if name.ends_with("running_var") {
        return constant(1.0);
    }
    if dims.len() <= 1 {
        return constant(if name.ends_with("weight") { 1.0 } else { 0.0 });
    }
    let receptive: usize = dims[2..].iter().product();
    let (fan_in, fan_out) = ((dims[1] * receptive) as f64, (dims[0] * receptive) as f64);
    let module = name.split('.').next().unwrap_or_default();
    let mut rng = StdRng::seed_from_u64(tensor_seed(seed, name));
    let n = shape.elem_count();
    let values: Vec<f32> = match (module, dims.len()) {
        ("method" | "aux_conv", 4) => uniform(&mut rng, n, (6.0 / fan_in).sqrt()),
        ("backbone", 4) => normal(&mut rng, n, (2.0 / fan_out).sqrt())?,
        ("backbone", _) => normal(&mut rng, n, 0.02)?,
        _ => uniform(&mut rng, n, (6.0 / (fan_in + fan_out)).sqrt()),
    };
    Tensor::from_vec(values, shape, dev)
}

fn uniform(rng: &mut StdRng, n: usize, bound: f64) -> Vec<f32> {
    let dist = Uniform::new_inclusive(-bound, bound).expect("a positive bound");
    (0..n).map(|_| dist.sample(rng) as f32).collect()
}

fn normal(rng: &mut StdRng, n: usize, std: f64) -> Result<Vec<f32>> {
    let dist = Normal::new(0.0, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok((0..n).map(|_| dist.sample(rng) as f32).collect())
}
