//! The experiment's yaml configs, `configs/<kind>/NAME.yaml`, laid out and keyed as in the
//! RankSEG-RMA experiment code: one struct per kind, unknown keys rejected with the file and
//! key named. A config is named by a path, or by a name looked up under `./configs/<kind>/`
//! and then among the configs shipped inside the binary.

pub mod data;
pub mod predict;
pub mod test;
pub mod training;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};
use serde::de::DeserializeOwned;

static CONFIGS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/configs");

/// The folders of `configs/`, one per yaml flag of `rankseg exp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Models,
    Datas,
    Losses,
    Predict,
    Test,
    Schedules,
    Optims,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Models => "models",
            Kind::Datas => "datas",
            Kind::Losses => "losses",
            Kind::Predict => "predict",
            Kind::Test => "test",
            Kind::Schedules => "schedules",
            Kind::Optims => "optims",
        }
    }

    /// The `rankseg exp` flag that names a config of this kind, without dashes.
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Models => "model_yaml",
            Kind::Datas => "data_yaml",
            Kind::Losses => "loss_yaml",
            Kind::Predict => "predict_yaml",
            Kind::Test => "test_yaml",
            Kind::Schedules => "schedule_yaml",
            Kind::Optims => "optim_yaml",
        }
    }

    /// The shipped names of this kind, sorted.
    pub fn names(self) -> Vec<String> {
        let mut names: Vec<String> = CONFIGS
            .get_dir(self.dir())
            .map(|dir| {
                dir.files()
                    .filter_map(|f| f.path().file_stem().and_then(|s| s.to_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// A config's text and where it came from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The config's name: the file stem (what result files are named after).
    pub name: String,
    /// The file it was read from, or `configs/<kind>/NAME.yaml (built in)`.
    pub origin: String,
    pub text: String,
    /// The file on disk, when there is one (relative paths in it resolve against it).
    pub path: Option<PathBuf>,
}

/// Finds what `spec` names: a yaml file, `./configs/<kind>/<spec>.yaml`, or a shipped config.
pub fn find(kind: Kind, spec: &str) -> Result<Source> {
    let read = |path: &Path| -> Result<Source> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Source {
            name: stem(path),
            origin: path.display().to_string(),
            text,
            path: Some(path.to_path_buf()),
        })
    };
    let path = Path::new(spec);
    if path.is_file() {
        return read(path);
    }
    let relative = format!("{}/{spec}.yaml", kind.dir());
    let local = Path::new("configs").join(&relative);
    if local.is_file() {
        return read(&local);
    }
    if let Some(text) = CONFIGS.get_file(&relative).and_then(|f| f.contents_utf8()) {
        return Ok(Source {
            name: spec.to_string(),
            origin: format!("configs/{relative} (built in)"),
            text: text.to_string(),
            path: None,
        });
    }
    bail!(
        "{spec:?} is neither a yaml file nor a name under configs/{}/ (known: {})",
        kind.dir(),
        kind.names().join(", ")
    )
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

impl Source {
    /// Parses the text as `T`; an unknown or misspelled key is an error naming this file.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_yaml::from_str(&self.text).with_context(|| format!("{}: invalid config", self.origin))
    }
}
