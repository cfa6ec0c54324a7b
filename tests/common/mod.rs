//! Shared helpers for the integration tests: fixture discovery, parameter parsing, copies.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures under {}", dir.display());
    cases
}

pub fn params(case: &Path) -> serde_json::Value {
    let path = case.join("params.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The `rankseg predict` flags a fixture's params.json stands for.
pub fn predict_flags(case: &Path) -> Vec<String> {
    let params = params(case);
    params
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(k, v)| {
            let value = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            [format!("--{}", k.replace('_', "-")), value]
        })
        .collect()
}

/// A copy of a fixture folder that a test may change.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The tensors of `tests/fixtures/<kind>/<name>.safetensors`.
pub fn load_tensors(
    kind: &str,
    name: &str,
) -> anyhow::Result<std::collections::HashMap<String, candle_core::Tensor>> {
    use anyhow::Context;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .with_context(|| format!("{}", path.display()))
}

/// A fixture tensor by key.
pub fn tensor<'a>(
    tensors: &'a std::collections::HashMap<String, candle_core::Tensor>,
    key: &str,
) -> anyhow::Result<&'a candle_core::Tensor> {
    use anyhow::Context;
    tensors.get(key).with_context(|| format!("no tensor {key}"))
}

/// max |ours - theirs| / max(1, max |theirs|), in float64.
pub fn rel_diff(ours: &candle_core::Tensor, theirs: &candle_core::Tensor) -> anyhow::Result<f64> {
    use candle_core::DType;
    assert_eq!(ours.shape(), theirs.shape());
    let (a, b) = (ours.to_dtype(DType::F64)?, theirs.to_dtype(DType::F64)?);
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f64>()?.max(1.0);
    Ok(diff / scale)
}
