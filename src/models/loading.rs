//! Where a model's files come from: a local Hugging Face layout (config.json plus
//! model.safetensors, sharded safetensors or pytorch_model.bin), or a hub repo fetched
//! into the standard Hugging Face cache (offline with HF_HUB_OFFLINE=1), named directly
//! or through a model yaml. Weights are checked as they are read: a missing tensor, a
//! wrong shape or a non-float dtype is an error naming the tensor and the checkpoint.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::ops::require_float;
use crate::config::Source;

/// A model yaml (`configs/models/NAME.yaml`): where the checkpoint lives.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelYaml {
    /// The architecture family: `segformer` or `upernet`; checked against config.json.
    pub method: String,
    /// The backbone: informational for Hugging Face checkpoints (their config.json decides),
    /// the architecture of the experiment's own models (resnet50d, mit_b0, ...).
    #[serde(default)]
    pub backbone: Option<String>,
    /// A local directory in Hugging Face layout.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Hugging Face hub repo id, fetched into the standard cache.
    #[serde(default)]
    pub hub_repo: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    // The experiment's architecture keys (`exp/configs/models/*.yaml`): they build its own
    // models (`models::zoo`); a Hugging Face checkpoint takes its architecture from its
    // config.json instead.
    pub output_stride: Option<usize>,
    pub out_channels: Option<usize>,
    pub aux_out_channels: Option<usize>,
    pub dropout: Option<f64>,
    pub align_corners: Option<bool>,
    pub aux: Option<bool>,
    pub bins: Option<Vec<usize>>,
    pub atrous_rates: Option<Vec<usize>>,
    pub shortcut_channels: Option<usize>,
    /// Ours, not the experiment's: MiT's stochastic-depth rate in training (default 0.1, as
    /// the experiment hard-codes); 0 makes MiT training deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_path_rate: Option<f64>,
}

impl ModelYaml {
    /// The checkpoint the yaml names (`path`, relative to the yaml's folder, or
    /// `hub_repo`), or `None` for a yaml that only describes an architecture.
    pub fn checkpoint(&self, source: &Source) -> Result<Option<Checkpoint>> {
        let mut checkpoint = match (&self.path, &self.hub_repo) {
            (None, None) => return Ok(None),
            (Some(dir), None) => {
                let base = source
                    .path
                    .as_deref()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("."));
                Checkpoint::from_dir(&base.join(dir))?
            }
            (None, Some(repo)) => from_hub(repo, self.revision.as_deref().unwrap_or("main"))
                .with_context(|| format!("{}: cannot get the checkpoint", source.origin))?,
            _ => bail!(
                "{}: a model yaml names at most one of `path` or `hub_repo`",
                source.origin
            ),
        };
        checkpoint.method = Some(self.method.clone());
        Ok(Some(checkpoint))
    }
}

/// The files of one checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    /// What the user named, for messages.
    pub source: String,
    /// The family a model yaml promised, if any.
    pub method: Option<String>,
}

impl Checkpoint {
    /// A directory holding config.json and weights.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        if !config.is_file() {
            bail!(
                "{} has no config.json: a model directory needs config.json and model.safetensors",
                dir.display()
            );
        }
        let lookup = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let weights = weight_files(lookup).with_context(|| format!("in {}", dir.display()))?;
        Ok(Checkpoint {
            config,
            weights,
            source: dir.display().to_string(),
            method: None,
        })
    }

    /// A model yaml (path), resolved to local files (downloading only if it names a hub
    /// repo whose files are not cached and HF_HUB_OFFLINE is not set).
    /// A VarBuilder over the weights, with the checks above.
    pub fn var_builder(&self, device: &Device) -> Result<VarBuilder<'static>> {
        let backend = CheckedWeights::open(&self.weights, &self.source)?;
        Ok(VarBuilder::from_backend(
            Box::new(backend),
            DType::F32,
            device.clone(),
        ))
    }
}

/// Which weight files a checkpoint has: one safetensors file, the shards of an index,
/// or a PyTorch pickle.
fn weight_files(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<Vec<PathBuf>> {
    if let Some(file) = lookup("model.safetensors") {
        return Ok(vec![file]);
    }
    if let Some(index) = lookup("model.safetensors.index.json") {
        let text =
            std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = parsed["weight_map"]
            .as_object()
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        return shards
            .into_iter()
            .map(|s| lookup(s).with_context(|| format!("shard {s} named in {} is missing", index.display())))
            .collect();
    }
    if let Some(file) = lookup("pytorch_model.bin") {
        return Ok(vec![file]);
    }
    bail!("no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin")
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A hub checkpoint: from the Hugging Face cache, or downloaded into it when allowed.
fn from_hub(repo: &str, revision: &str) -> Result<Checkpoint> {
    use hf_hub::{Repo, RepoType};
    let label = format!("{repo}@{revision}");
    let spec = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cached = hf_hub::Cache::from_env().repo(spec.clone());
    let api = if offline() {
        None
    } else {
        let client = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .context("cannot set up the Hugging Face hub client")?;
        Some(client.repo(spec))
    };
    // The cache first; then the hub, where only "no such file" lets the caller try another
    // weight format: any other failure is reported as what it is.
    let fetch = |name: &str| -> Result<Option<PathBuf>> {
        if let Some(path) = cached.get(name) {
            return Ok(Some(path));
        }
        match &api {
            None => Ok(None),
            Some(api) => match api.get(name) {
                Ok(path) => Ok(Some(path)),
                Err(error) => hub_failure(&error, &label, name),
            },
        }
    };
    let config = fetch("config.json")?.with_context(|| {
        if offline() {
            format!("{label}: config.json is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        } else {
            format!("{label}: the repo has no config.json (is it a transformers model?)")
        }
    })?;
    // `weight_files` asks for one format after another and needs a plain yes/no per file:
    // the first real failure is kept and reported instead of "no weights".
    let failure = std::cell::RefCell::new(None);
    let weights = weight_files(|name| match fetch(name) {
        Ok(path) => path,
        Err(error) => {
            failure.borrow_mut().get_or_insert(error);
            None
        }
    });
    if let Some(error) = failure.into_inner() {
        return Err(error);
    }
    let weights = weights.with_context(|| label.clone())?;
    Ok(Checkpoint {
        config,
        weights,
        source: label,
        method: None,
    })
}

/// A failed hub download as what it is: `Ok(None)` for a file the repo does not have (the
/// caller tries the next weight format), an error saying what to do otherwise.
fn hub_failure(error: &hf_hub::api::sync::ApiError, label: &str, name: &str) -> Result<Option<PathBuf>> {
    use hf_hub::api::sync::ApiError;
    match error {
        ApiError::TooManyRetries(inner) => hub_failure(inner, label, name),
        ApiError::RequestError(request) => match request.as_ref() {
            ureq::Error::Status(404, _) => Ok(None),
            ureq::Error::Status(code @ (401 | 403), _) => bail!(
                "{label}: the Hugging Face hub refused {name} (HTTP {code}): the repo is private, gated or does not exist; check the name, or set HF_TOKEN to a token with access"
            ),
            ureq::Error::Status(code, _) => {
                bail!("{label}: the Hugging Face hub answered HTTP {code} for {name}; try again later")
            }
            ureq::Error::Transport(transport) if is_timeout(transport) => bail!(
                "{label}: timed out downloading {name} from the Hugging Face hub; check the network, or set HF_HUB_OFFLINE=1 to use the cache only"
            ),
            ureq::Error::Transport(transport) => bail!(
                "{label}: cannot reach the Hugging Face hub for {name} ({transport}); check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1"
            ),
        },
        ApiError::IoError(io) if is_disk_full(io) => bail!(
            "{label}: the disk is full: {name} cannot be written to the Hugging Face cache ({}); free space or point HF_HOME elsewhere",
            hf_hub::Cache::from_env().path().display()
        ),
        other => bail!("{label}: cannot download {name} from the Hugging Face hub: {other}"),
    }
}

fn is_timeout(transport: &ureq::Transport) -> bool {
    use std::error::Error;
    let mut source = transport.source();
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        source = error.source();
    }
    transport.to_string().contains("timed out")
}

/// ENOSPC (28 on Linux and macOS) or the quota equivalent.
fn is_disk_full(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(28 | 122))
}

enum Store {
    Safetensors(MmapedSafetensors),
    Pickle(candle_core::pickle::PthTensors),
}

/// The checkpoint's tensors, handed out only when they exist with the right shape and a
/// floating-point dtype.
struct CheckedWeights {
    store: Store,
    source: String,
    /// Requested name -> stored name, where they differ (a stripped `module.` prefix).
    renamed: HashMap<String, String>,
    /// The stored names handed out, for the strict check of a state dict.
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl CheckedWeights {
    fn open(files: &[PathBuf], source: &str) -> Result<Self> {
        let is_pickle = files.len() == 1
            && files[0]
                .extension()
                .is_some_and(|e| e == "bin" || e == "pth" || e == "pt");
        let store = if is_pickle {
            let file = &files[0];
            let read = |key| candle_core::pickle::PthTensors::new(file, key);
            // The experiment's checkpoints hold the weights under "state_dict"; a bare state
            // dict (and transformers' pytorch_model.bin) is the dict itself.
            let tensors = match read(Some("state_dict")) {
                Ok(tensors) => tensors,
                Err(candle_core::Error::Msg(m)) if m.contains("not found") => read(None)
                    .with_context(|| format!("cannot read {} as a PyTorch checkpoint", file.display()))?,
                Err(e) => {
                    return Err(anyhow::Error::new(e)).with_context(|| {
                        format!(
                            "cannot read {} as a PyTorch checkpoint (torch.save zip)",
                            file.display()
                        )
                    })
                }
            };
            Store::Pickle(tensors)
        } else {
            // Safety: the files are memory-mapped read-only; like every safetensors reader we
            // assume nobody truncates them while the model loads.
            Store::Safetensors(
                unsafe { MmapedSafetensors::multi(files) }
                    .with_context(|| format!("cannot read the safetensors of {source}"))?,
            )
        };
        Ok(CheckedWeights {
            store,
            source: source.to_string(),
            renamed: HashMap::new(),
            used: Arc::default(),
        })
    }

    /// Every stored tensor name.
    fn names(&self) -> Vec<String> {
        match &self.store {
            Store::Safetensors(st) => st.tensors().into_iter().map(|(name, _)| name).collect(),
            Store::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
        }
    }

    fn stored<'a>(&'a self, name: &'a str) -> &'a str {
        self.renamed.get(name).map_or(name, String::as_str)
    }

    fn raw(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let name = self.stored(name);
        self.used
            .lock()
            .expect("no panic while holding the lock")
            .insert(name.to_string());
        let missing =
            || candle_core::Error::Msg(format!("{}: the checkpoint has no tensor {name}", self.source));
        match &self.store {
            Store::Safetensors(st) => {
                st.get(name).map_err(|_| missing())?;
                st.load(name, dev)
            }
            Store::Pickle(pth) => pth.get(name)?.ok_or_else(missing),
        }
    }
}

impl SimpleBackend for CheckedWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.raw(name, dev)?;
        require_float(tensor.dtype(), &format!("{name} in {}", self.source))?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "{}: tensor {name} has shape {:?}, the config implies {:?}",
                self.source,
                tensor.dims(),
                shape.dims()
            );
        }
        tensor.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.raw(name, dev)?;
        require_float(tensor.dtype(), &format!("{name} in {}", self.source))?;
        tensor.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let name = self.stored(name);
        match &self.store {
            Store::Safetensors(st) => st.get(name).is_ok(),
            Store::Pickle(pth) => pth.tensor_infos().contains_key(name),
        }
    }
}

/// A state dict file of the experiment's models: `.pth` (`torch.save` of the checkpoint dict
/// `{"epoch", "state_dict", "optimizer", "lr_scheduler"}` that its `main.py` writes, or of a
/// bare state dict) or `.safetensors`, with the same key names. Keys saved under
/// DistributedDataParallel lose their `module.` as the experiment's `load_checkpoint` does.
pub struct StateDict {
    weights: Arc<CheckedWeights>,
}

impl StateDict {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!("checkpoint {} does not exist", path.display());
        }
        let known = path
            .extension()
            .is_some_and(|e| e == "pth" || e == "pt" || e == "bin" || e == "safetensors");
        if !known {
            bail!(
                "{}: expected a .pth (torch.save) or .safetensors state dict",
                path.display()
            );
        }
        let mut weights = CheckedWeights::open(&[path.to_path_buf()], &path.display().to_string())?;
        let names = weights.names();
        if names.iter().any(|n| n.starts_with("module.")) {
            weights.renamed = names
                .iter()
                .map(|n| (n.replace("module.", ""), n.clone()))
                .collect();
        }
        Ok(StateDict {
            weights: Arc::new(weights),
        })
    }

    /// A stored tensor as saved (any dtype: training also restores the int64
    /// `num_batches_tracked`), checked against the shape the model asks for.
    pub fn tensor(&self, name: &str, shape: &Shape, device: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.weights.raw(name, device)?;
        if tensor.shape() != shape {
            candle_core::bail!(
                "{}: tensor {name} has shape {:?}, the config implies {:?}",
                self.weights.source,
                tensor.dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains_tensor(name)
    }

    /// The file it was read from, for messages.
    pub fn source(&self) -> &str {
        &self.weights.source
    }

    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Shared(self.weights.clone())), DType::F32, device.clone())
    }

    /// After a model has loaded: the stored keys it never asked for, as `load_state_dict`'s
    /// "unexpected keys" (a BatchNorm's `num_batches_tracked` counts as read with its
    /// `running_mean`).
    pub fn unexpected_keys(&self) -> Vec<String> {
        let used = self.weights.used.lock().expect("no panic while holding the lock");
        let mut unexpected: Vec<String> = self
            .weights
            .names()
            .into_iter()
            .filter(|name| {
                if used.contains(name) {
                    return false;
                }
                match name.strip_suffix("num_batches_tracked") {
                    Some(stem) => !used.contains(&format!("{stem}running_mean")),
                    None => true,
                }
            })
            .collect();
        unexpected.sort();
        unexpected
    }
}

/// The backend VarBuilder owns, sharing the weights with the `StateDict` that checks them.
struct Shared(Arc<CheckedWeights>);

impl SimpleBackend for Shared {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(shape, name, init, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}
