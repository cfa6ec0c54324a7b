//! The experiment's train-time data: its train splits ([`split`]), its random transforms
//! with their draws made explicit ([`augment`]) and a seeded loader that decodes and
//! augments ahead of the step ([`loader`]).
//!
//! Labels keep the crate's convention: pixels to leave out carry the data yaml's
//! `ignore_index`. The experiment's `__getitem__` writes `num_classes` there instead (its loss
//! maps `ignore_index` to `num_classes` too, so both name the same pixels).

pub mod augment;
pub mod loader;
pub mod split;

use std::path::Path;

use anyhow::{bail, Result};
use rand::rngs::StdRng;

use super::medical::{read_slice, tumour_class};
use super::natural::ImageFolder;
use super::transform::{Plane, MEAN};
use super::{Entry, Sample};
use crate::config::data::DataConfig;
pub use augment::{Augment, Draws, Normalise, Uniform};
pub use loader::{Batch, Loader, LoaderConfig, Source};

/// One decoded sample before its transforms: the image as float32 (H, W, C) and the label.
pub struct Decoded {
    pub image: Plane<f32>,
    pub label: Plane<i64>,
}

/// A dataset's train split with its transforms.
pub struct TrainSet {
    config: DataConfig,
    entries: Vec<Entry>,
    augment: Augment,
}

impl TrainSet {
    pub fn open(config: &DataConfig, data_dir: &Path) -> Result<Self> {
        if !data_dir.is_dir() {
            bail!("--data_dir {} is not a directory", data_dir.display());
        }
        let entries = split::entries(config, data_dir)?;
        if entries.is_empty() {
            bail!(
                "no {:?} training images found under {} (see DATA.md for the expected layout)",
                config.dataset,
                data_dir.display()
            );
        }
        let [crop_h, crop_w] = config.crop();
        let (image_fill, normalise) = if config.dataset.medical() {
            let (low, high) = (
                config.window_low.unwrap_or(0.0),
                config.window_high.unwrap_or(1.0),
            );
            let (low, high) = (low as f32, high as f32);
            (vec![low], Normalise::Window { low, high })
        } else {
            (MEAN.to_vec(), Normalise::MeanStd)
        };
        let augment = Augment {
            // The experiment's defaults (BaseDataset) when a yaml leaves them out.
            scale_min: config.scale_min.unwrap_or(0.5),
            scale_max: config.scale_max.unwrap_or(2.0),
            crop: [crop_h, crop_w],
            image_fill,
            label_fill: config.ignore_index,
            normalise,
        };
        Ok(TrainSet {
            config: config.clone(),
            entries,
            augment,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn augment(&self) -> &Augment {
        &self.augment
    }

    /// Reads an entry as the experiment's `__getitem__` does before `self.transform`:
    /// `np.float32` of the RGB image (or the CT slice) and the label (`reduce_zero_label` and
    /// the Cityscapes id mapping applied).
    pub fn decode(&self, entry: &Entry) -> Result<Decoded> {
        if self.config.dataset.medical() {
            let (image, label) = read_slice(&entry.input)?;
            return Ok(Decoded { image, label });
        }
        let (image, label) = ImageFolder::planes(&self.config, entry)?;
        Ok(Decoded { image, label })
    }

    /// The transforms with the given draws, then the dataset's label step after them (CT:
    /// `label >>= 1`, padding ignored).
    pub fn transform(&self, decoded: &Decoded, draws: &Draws) -> Sample {
        let (input, mut label) = self.augment.apply(&decoded.image, &decoded.label, draws);
        if self.config.dataset.medical() {
            let ignore = self.config.ignore_index;
            label.iter_mut().for_each(|v| *v = tumour_class(*v, ignore));
        }
        let [height, width] = self.augment.crop;
        Sample {
            input,
            label,
            height,
            width,
        }
    }
}

impl Source for TrainSet {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn channels(&self) -> usize {
        if self.config.dataset.medical() {
            1
        } else {
            3
        }
    }

    fn load(&self, index: usize, rng: &mut StdRng) -> Result<(Sample, Draws)> {
        let decoded = self.decode(&self.entries[index])?;
        let draws = augment::sample(&self.augment, decoded.image.height, decoded.image.width, rng);
        Ok((self.transform(&decoded, &draws), draws))
    }
}
