//! `run.json` in an `exp` output directory: one self-contained entry per finished predictor
//! run (its configs, checkpoint, build, device, fingerprint and timings). `exp` writes it
//! and `table` reads it through these types only. Runs into one directory update it under an
//! advisory lock (`run.json.lock`), so concurrent runs never lose each other's entries.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Seconds;
use crate::atomic::write_string_atomic;

/// Bumped when an entry's meaning changes; an older file is reported, never misread.
pub const FORMAT: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunJson {
    pub format: u32,
    /// Finished runs by predict yaml name.
    pub predictions: BTreeMap<String, PredictionRun>,
}

impl Default for RunJson {
    fn default() -> Self {
        RunJson {
            format: FORMAT,
            predictions: BTreeMap::new(),
        }
    }
}

/// A config as the run used it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlRecord {
    pub name: String,
    /// The file it came from, or `configs/<kind>/NAME.yaml (built in)`.
    pub origin: String,
    pub values: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// The directory or file given (or found in the output directory).
    pub source: String,
    /// config.json of a Hugging Face checkpoint, or the model yaml of the experiment's.
    pub config: String,
    pub weights: Vec<PathBuf>,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub rankseg: String,
    pub git_revision: String,
    pub candle_core: String,
    pub polars: String,
    pub hf_hub: String,
}

impl Build {
    pub fn current() -> Self {
        Build {
            rankseg: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("RANKSEG_GIT_REVISION").into(),
            candle_core: env!("RANKSEG_CANDLE_VERSION").into(),
            polars: env!("RANKSEG_POLARS_VERSION").into(),
            hf_hub: env!("RANKSEG_HF_HUB_VERSION").into(),
        }
    }
}

/// Everything that decides a run's numbers, as named parts (`config.data_yaml.crop_size`,
/// `data.files`, `checkpoint.weights`, `build.git_revision`, `device`, ...) and one digest
/// of them all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub digest: String,
    pub parts: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn new(parts: BTreeMap<String, String>) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (key, value) in &parts {
            hasher.update(key.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        Fingerprint {
            digest: format!("{:x}", hasher.finalize()),
            parts,
        }
    }

    /// The parts that differ from `earlier`, as `key: old -> new` lines.
    pub fn changes_since(&self, earlier: &Fingerprint) -> Vec<String> {
        let shorten = |v: Option<&String>| match v {
            None => "(absent)".to_string(),
            Some(v) if v.chars().count() > 48 => format!("{}...", v.chars().take(45).collect::<String>()),
            Some(v) => v.clone(),
        };
        let mut keys: Vec<&String> = self.parts.keys().chain(earlier.parts.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.parts.get(*k) != earlier.parts.get(*k))
            .map(|k| {
                format!(
                    "{k}: {} -> {}",
                    shorten(earlier.parts.get(k)),
                    shorten(self.parts.get(k))
                )
            })
            .collect()
    }
}

/// One finished predictor run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionRun {
    /// What `table` calls the model: the model yaml's name, else the checkpoint's file name,
    /// else `probabilities` (a probs dataset).
    pub model: String,
    /// The data yaml's name.
    pub dataset: String,
    /// Every config by flag (`data_yaml`, `predict_yaml`, ...).
    pub configs: BTreeMap<String, YamlRecord>,
    /// The predictor as resolved (defaults filled in).
    pub predict: serde_json::Value,
    pub data_dir: PathBuf,
    pub checkpoint: Option<CheckpointRecord>,
    pub build: Build,
    pub device: String,
    pub threads: usize,
    pub batch_size: usize,
    pub fingerprint: Fingerprint,
    pub images: usize,
    pub scored_images: usize,
    pub seconds: Seconds,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("run.json")
}

/// The run.json in `dir`, if there is one.
pub fn read(dir: &Path) -> Result<Option<RunJson>> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?
        .get("format")
        .and_then(serde_json::Value::as_u64);
    if format != Some(FORMAT as u64) {
        anyhow::bail!(
            "{} was written by another rankseg version (format {}, this one reads {FORMAT}): rerun `rankseg exp` with --force into that directory, or use a new --output_dir",
            path.display(),
            format.map_or("none".into(), |f| f.to_string())
        );
    }
    let run =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid run.json", path.display()))?;
    Ok(Some(run))
}

/// Reads, changes and rewrites `dir`'s run.json while holding its lock. `fresh` starts from
/// an empty record when the existing one cannot be read (a forced rerun replaces it).
pub fn update(dir: &Path, fresh: bool, change: impl FnOnce(&mut RunJson)) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock_path = dir.join("run.json.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut run = match read(dir) {
        Ok(run) => run.unwrap_or_default(),
        Err(_) if fresh => RunJson::default(),
        Err(e) => return Err(e),
    };
    change(&mut run);
    let text = serde_json::to_string_pretty(&run)? + "\n";
    write_string_atomic(&path(dir), &text)
    // The lock is released when `lock` is dropped, after the new file is in place.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str) -> PredictionRun {
        PredictionRun {
            model: "m".into(),
            dataset: "d".into(),
            configs: BTreeMap::new(),
            predict: serde_json::Value::Null,
            data_dir: PathBuf::from("/data"),
            checkpoint: None,
            build: Build::current(),
            device: "cpu".into(),
            threads: 1,
            batch_size: 1,
            fingerprint: Fingerprint::new(BTreeMap::from([("data.files".into(), digest.into())])),
            images: 1,
            scored_images: 1,
            seconds: Seconds::default(),
        }
    }

    #[test]
    fn concurrent_updates_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let dir = dir.path();
                scope.spawn(move || {
                    for i in 0..10 {
                        update(dir, false, |run| {
                            run.predictions.insert(format!("p{t}_{i}"), entry("x"));
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(read(dir.path()).unwrap().unwrap().predictions.len(), 80);
    }

    #[test]
    fn changes_name_the_parts_that_differ() {
        let old = Fingerprint::new(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        let new = Fingerprint::new(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "3".to_string()),
            ("c".to_string(), "4".to_string()),
        ]));
        assert_ne!(old.digest, new.digest);
        assert_eq!(new.changes_since(&old), vec!["b: 2 -> 3", "c: (absent) -> 4"]);
        assert!(new.changes_since(&new).is_empty());
    }

    #[test]
    fn another_format_is_reported_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), r#"{"predictions": {}, "data_yaml": {}}"#).unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("run.json") && error.contains("--force"), "{error}");
    }
}
