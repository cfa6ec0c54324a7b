//! The fingerprint of a run: every input that decides its numbers, as named parts, so that a
//! rerun can say what changed. Covered: every resolved config value; the checkpoint's
//! weight files (sha256) and config.json; the evaluated data (file names and sizes of every
//! input, contents of every label file); the data directory; the build (crate version and
//! git revision); the device and the evaluation batch size.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::data::Dataset;
use crate::runner::run_json::{Build, Fingerprint, YamlRecord};

/// The parts of a fingerprint, added by kind.
#[derive(Default)]
pub struct Parts(BTreeMap<String, String>);

impl Parts {
    fn put(&mut self, key: String, value: impl Into<String>) {
        self.0.insert(key, value.into());
    }

    /// One part per leaf value of each config (`config.data_yaml.crop_size`).
    pub fn configs(&mut self, records: &[(&str, YamlRecord)]) {
        for (flag, record) in records {
            self.put(format!("config.{flag}.name"), record.name.clone());
            flatten(&format!("config.{flag}"), &record.values, &mut self.0);
        }
    }

    pub fn checkpoint(&mut self, weights_sha256: &str, config_file: Option<&Path>) -> Result<()> {
        self.put("checkpoint.weights".into(), weights_sha256);
        if let Some(config) = config_file {
            let text = std::fs::read(config).with_context(|| format!("cannot read {}", config.display()))?;
            self.put("checkpoint.config".into(), format!("{:x}", Sha256::digest(&text)));
        }
        Ok(())
    }

    pub fn data(&mut self, data_dir: &Path, dataset: &dyn Dataset) -> Result<()> {
        self.put("data.dir".into(), data_dir.display().to_string());
        self.put("data.images".into(), dataset.entries().len().to_string());
        self.put("data.files".into(), data_digest(data_dir, dataset)?);
        Ok(())
    }

    pub fn build(&mut self, build: &Build) {
        self.put("build.rankseg".into(), build.rankseg.clone());
        self.put("build.git_revision".into(), build.git_revision.clone());
    }

    pub fn run(&mut self, device: &str, batch_size: usize) {
        self.put("device".into(), device);
        self.put("batch_size".into(), batch_size.to_string());
    }

    pub fn finish(self) -> Fingerprint {
        Fingerprint::new(self.0)
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                flatten(&format!("{prefix}.{key}"), value, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// The sha256 of the weight files, in order (what run.json records of the checkpoint).
pub fn sha256_files(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        let mut reader =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        loop {
            let n = reader
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A fast digest (xxh3-128) of what a dataset evaluates: each entry's id, its input file's
/// name and size, and its label file's name, size and contents. Inputs are not read whole:
/// they are the bulk of the data (images, probability maps) and the labels decide the
/// scores; a resized or replaced input changes its size in practice.
fn data_digest(data_dir: &Path, dataset: &dyn Dataset) -> Result<String> {
    let relative = |path: &Path| path.strip_prefix(data_dir).unwrap_or(path).display().to_string();
    let per_entry: Vec<u128> = dataset
        .entries()
        .par_iter()
        .map(|entry| -> Result<u128> {
            let mut hasher = Xxh3::new();
            let size = |path: &Path| -> Result<u64> {
                Ok(std::fs::metadata(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len())
            };
            hasher.update(entry.id.as_bytes());
            hasher.update(relative(&entry.input).as_bytes());
            hasher.update(&size(&entry.input)?.to_le_bytes());
            let label_file = dataset.label_file(entry);
            hasher.update(relative(&label_file).as_bytes());
            let label = std::fs::read(&label_file).with_context(|| {
                format!(
                    "cannot read the label file {} (see DATA.md for the expected layout)",
                    label_file.display()
                )
            })?;
            hasher.update(&(label.len() as u64).to_le_bytes());
            hasher.update(&label);
            Ok(hasher.digest128())
        })
        .collect::<Result<_>>()?;
    let mut total = Xxh3::new();
    for digest in per_entry {
        total.update(&digest.to_le_bytes());
    }
    Ok(format!("{:032x}", total.digest128()))
}
