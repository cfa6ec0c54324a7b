//! Datasets, read from the experiment's layouts (see DATA.md): PASCAL VOC, Cityscapes and
//! ADE20K images, LiTS and KiTS CT slices, and `probs`, a folder of probability maps that
//! any model wrote. A dataset turns files into model inputs (or probabilities) and labels
//! on the padded canvas the experiment predicts on; it knows nothing of models.

mod cityscapes;
mod decode;
pub mod medical;
mod natural;
mod palette;
pub mod prepare;
mod probs;
pub mod resize;
pub mod synthetic;
pub mod train;
pub mod transform;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::data::{DataConfig, DatasetKind};

pub use decode::{read_label, read_rgb, write_palette_png, Rgb};
pub use palette::palette;

/// What the model (or, for `probs`, the predictor) is given for one image.
pub struct Sample {
    /// Input channels (C, H, W): the normalised image, or the probabilities themselves.
    pub input: Vec<f32>,
    /// (H, W) class indices on the same canvas; pixels to leave out carry the ignore index.
    pub label: Vec<i64>,
    pub height: usize,
    pub width: usize,
}

/// One entry of a dataset, known before its files are read.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The image id (file stem, or VOC's list entry).
    pub id: String,
    pub input: PathBuf,
    pub label: PathBuf,
    /// CT datasets: the case the slice belongs to (metrics are per case).
    pub case: Option<u32>,
}

pub trait Dataset: Send + Sync {
    fn entries(&self) -> &[Entry];
    fn load(&self, entry: &Entry) -> Result<Sample>;
    /// The file `load` reads the entry's label from (what a run's fingerprint digests).
    fn label_file(&self, entry: &Entry) -> PathBuf {
        entry.label.clone()
    }
    /// Whether `Sample::input` holds probabilities rather than a model input.
    fn gives_probabilities(&self) -> bool {
        false
    }
}

/// Opens the evaluation split of the dataset a data yaml describes, under `data_dir`.
pub fn open(config: &DataConfig, data_dir: &Path) -> Result<Box<dyn Dataset>> {
    if !data_dir.is_dir() {
        bail!("--data_dir {} is not a directory", data_dir.display());
    }
    let dataset: Box<dyn Dataset> = match config.dataset {
        DatasetKind::PascalVoc | DatasetKind::Cityscapes | DatasetKind::Ade20k => {
            Box::new(natural::ImageFolder::open(config, data_dir)?)
        }
        DatasetKind::Lits | DatasetKind::Kits => Box::new(medical::CtSlices::open(config, data_dir)?),
        DatasetKind::Probs => Box::new(probs::ProbFolder::open(config, data_dir)?),
    };
    if dataset.entries().is_empty() {
        bail!(
            "no {:?} images found under {} (see DATA.md for the expected layout)",
            config.dataset,
            data_dir.display()
        );
    }
    Ok(dataset)
}

/// The label file of an image file, as the experiment finds it: `image_prefix` replaced by
/// `label_prefix` and `image_suffix` by `label_suffix` in the path.
pub fn label_path(config: &DataConfig, image: &Path) -> PathBuf {
    let mut path = image.to_string_lossy().into_owned();
    if let (Some(from), Some(to)) = (&config.image_prefix, &config.label_prefix) {
        path = path.replace(from.as_str(), to);
    }
    if let (Some(from), Some(to)) = (&config.image_suffix, &config.label_suffix) {
        path = path.replace(from.as_str(), to);
    }
    PathBuf::from(path)
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        bail!(
            "{} is not a directory (see DATA.md for the expected layout)",
            dir.display()
        );
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.to_string_lossy().ends_with(suffix) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The file name of `path` without `suffix` (or without its extension).
fn id_of(path: &Path, suffix: Option<&str>) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match suffix.and_then(|s| name.strip_suffix(s)) {
        Some(id) => id.to_string(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(name),
    }
}
