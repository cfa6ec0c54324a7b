//! Training checkpoints. Ours: `checkpoint{epoch:03d}.safetensors`, the state dict with the
//! experiment's key names (BatchNorm buffers included, so `model.load_state_dict(
//! safetensors.torch.load_file(...))` works in Python), and beside it
//! `checkpoint{epoch:03d}.resume.safetensors`: the optimizer state in torch's numbering
//! (`{i}.exp_avg`, ...), `epoch` and the scheduler's `last_epoch`. Both are written
//! atomically, the resume file first, so a state dict on disk always has its resume file.
//! The experiment's `.pth` (`{"epoch", "state_dict", "optimizer", "lr_scheduler"}`) resumes
//! the same way: its pickle is walked for the epoch, the optimizer's per-parameter tensors and
//! the scheduler's `last_epoch`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::atomic::write_atomic;

/// Where a run stands when a checkpoint is written: the epoch just finished and the
/// scheduler's step count.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub epoch: u64,
    pub last_epoch: u64,
}

/// What a checkpoint gives back besides the weights.
pub struct Resume {
    pub progress: Progress,
    /// Optimizer state as `Optimizer::load_state_tensors` reads it (empty: a fresh optimizer).
    pub optimizer: HashMap<String, Tensor>,
}

pub fn state_dict_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("checkpoint{epoch:03}.safetensors"))
}

pub fn resume_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("checkpoint{epoch:03}.resume.safetensors"))
}

fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let contiguous = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(contiguous.iter().map(|(n, t)| (n.as_str(), t)), None)
        .with_context(|| format!("cannot serialise {}", path.display()))?;
    write_atomic(path, |out| Ok(std::io::Write::write_all(out, &bytes)?))
}

/// Writes epoch `progress.epoch`'s checkpoint pair into `dir`; returns the state dict's path.
pub fn save(
    dir: &Path,
    progress: &Progress,
    state_dict: &[(String, Tensor)],
    optimizer: Vec<(String, Tensor)>,
) -> Result<PathBuf> {
    let cpu = Device::Cpu;
    let mut resume = optimizer;
    resume.push(("epoch".into(), Tensor::new(progress.epoch as i64, &cpu)?));
    resume.push((
        "last_epoch".into(),
        Tensor::new(progress.last_epoch as i64, &cpu)?,
    ));
    write_safetensors(&resume_path(dir, progress.epoch), &resume)?;
    let path = state_dict_path(dir, progress.epoch);
    write_safetensors(&path, state_dict)?;
    Ok(path)
}

/// `remove_old`: the previous epoch's pair, once this epoch's is on disk.
pub fn remove(dir: &Path, epoch: u64) -> Result<()> {
    for path in [state_dict_path(dir, epoch), resume_path(dir, epoch)] {
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The epoch, optimizer and scheduler state saved with the weights at `path`; `None` for a
/// bare state dict (training then starts at epoch 1 from those weights).
pub fn read_resume(path: &Path) -> Result<Option<Resume>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        let Some(epoch) = epoch_of(path) else {
            return Ok(None);
        };
        let sidecar = resume_path(path.parent().unwrap_or(Path::new(".")), epoch);
        if !sidecar.exists() {
            return Ok(None);
        }
        let mut tensors = candle_core::safetensors::load(&sidecar, &Device::Cpu)
            .with_context(|| format!("cannot read {}", sidecar.display()))?;
        let mut scalar = |key: &str| -> Result<u64> {
            let t = tensors
                .remove(key)
                .with_context(|| format!("{} has no {key}", sidecar.display()))?;
            Ok(t.to_dtype(DType::I64)?.to_scalar::<i64>()?.max(0) as u64)
        };
        let progress = Progress {
            epoch: scalar("epoch")?,
            last_epoch: scalar("last_epoch")?,
        };
        return Ok(Some(Resume {
            progress,
            optimizer: tensors,
        }));
    }
    read_pth_resume(path)
}

/// `checkpoint{NNN}.safetensors` -> NNN.
fn epoch_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("checkpoint")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

fn key<'a>(dict: &'a [(Object, Object)], name: &str) -> Option<&'a Object> {
    dict.iter()
        .find(|(k, _)| matches!(k, Object::Unicode(s) if s == name))
        .map(|(_, v)| v)
}

fn as_int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(i64::from(*i)),
        Object::Long(i) => Some(*i),
        _ => None,
    }
}

/// The experiment's `.pth`: `None` when it is a bare state dict (no `epoch`).
fn read_pth_resume(path: &Path) -> Result<Option<Resume>> {
    let what = || format!("cannot read {} as a PyTorch checkpoint", path.display());
    let file = std::fs::File::open(path).with_context(what)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(what)?;
    let pickle = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).and_then(|n| n.ok()).map(|n| n.to_string()))
        .find(|n| n.ends_with("data.pkl"))
        .with_context(|| format!("{}: no data.pkl inside", path.display()))?;
    let dir = PathBuf::from(pickle.strip_suffix(".pkl").expect("ends with .pkl"));
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut std::io::BufReader::new(zip.by_name(&pickle)?))
        .with_context(what)?;
    let Object::Dict(top) = stack.finalize().with_context(what)? else {
        return Ok(None);
    };
    let Some(epoch) = key(&top, "epoch").and_then(as_int) else {
        return Ok(None);
    };
    let last_epoch = key(&top, "lr_scheduler")
        .and_then(|s| match s {
            Object::Dict(d) => key(d, "last_epoch").and_then(as_int),
            _ => None,
        })
        .with_context(|| {
            format!(
                "{}: no lr_scheduler.last_epoch beside epoch {epoch}",
                path.display()
            )
        })?;
    let mut optimizer = HashMap::new();
    let state = match key(&top, "optimizer") {
        Some(Object::Dict(opt)) => key(opt, "state"),
        _ => bail!("{}: no optimizer state beside epoch {epoch}", path.display()),
    };
    if let Some(Object::Dict(per_param)) = state {
        for (index, entries) in per_param {
            let (Some(index), Object::Dict(entries)) = (as_int(index), entries) else {
                bail!("{}: unexpected optimizer state layout", path.display());
            };
            for (name, value) in entries {
                let Object::Unicode(name) = name else { continue };
                let label = Object::Unicode(format!("{index}.{name}"));
                let info = value.clone().into_tensor_info(label, &dir)?.with_context(|| {
                    format!(
                        "{}: optimizer state {index}.{name} is not a tensor",
                        path.display()
                    )
                })?;
                optimizer.insert(info.name.clone(), read_storage(&mut zip, &info, path)?);
            }
        }
    }
    Ok(Some(Resume {
        progress: Progress {
            epoch: epoch.max(0) as u64,
            last_epoch: last_epoch.max(0) as u64,
        },
        optimizer,
    }))
}

/// A contiguous tensor's values from its storage record.
fn read_storage<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &candle_core::pickle::TensorInfo,
    path: &Path,
) -> Result<Tensor> {
    if !info.layout.is_contiguous() {
        bail!(
            "{}: optimizer state {} is not contiguous",
            path.display(),
            info.name
        );
    }
    let mut bytes = Vec::new();
    zip.by_name(&info.path)
        .with_context(|| format!("{}: no storage {}", path.display(), info.path))?
        .read_to_end(&mut bytes)?;
    let size = info.dtype.size_in_bytes();
    let start = info.layout.start_offset() * size;
    let len = info.layout.shape().elem_count() * size;
    let Some(slice) = bytes.get(start..start + len) else {
        bail!("{}: optimizer state {} is truncated", path.display(), info.name);
    };
    Ok(Tensor::from_raw_buffer(
        slice,
        info.dtype,
        info.layout.dims(),
        &Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// main.py's format with a real AdamW state (scripts/make_resume_fixture.py): the
    /// epoch, the scheduler's step and every per-parameter tensor come back.
    #[test]
    fn reads_the_experiments_pth_resume_state() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_resume");
        let resume = read_resume(&dir.join("adamw_epoch3.pth"))?.expect("a resumable checkpoint");
        let expected =
            candle_core::safetensors::load(dir.join("adamw_epoch3.expected.safetensors"), &Device::Cpu)?;
        let scalar = |k: &str| expected[k].to_dtype(DType::I64)?.to_scalar::<i64>();
        assert_eq!(
            resume.progress,
            Progress {
                epoch: scalar("epoch")? as u64,
                last_epoch: scalar("last_epoch")? as u64,
            }
        );
        assert_eq!(resume.optimizer.len() + 2, expected.len());
        for (name, tensor) in &resume.optimizer {
            let want = expected[name]
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            assert_eq!(
                tensor.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                want,
                "{name}"
            );
        }
        // A bare state dict has nothing to resume.
        assert!(read_resume(&dir.join("adamw_epoch3.expected.safetensors"))?.is_none());
        Ok(())
    }
}
