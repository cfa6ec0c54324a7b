//! `probs`: a folder of per-image probability maps, (C, H, W) float32 or float64 .npy,
//! each with a label file found by the yaml's prefix/suffix rule (an (H, W) integer .npy
//! or a grey/palette PNG). Scores any model's outputs with every predictor. float64 maps
//! are cast to float32, in which every predictor and metric of `exp` runs (DATA.md); the
//! run says so once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

use super::{files_ending, id_of, label_path, read_label, Dataset, Entry, Sample};
use crate::config::data::DataConfig;
use crate::tensor_io::{read_probs, ProbArray};

pub struct ProbFolder {
    classes: usize,
    entries: Vec<Entry>,
    /// Whether the float64 -> float32 cast has been reported.
    cast_reported: AtomicBool,
}

impl ProbFolder {
    pub fn open(config: &DataConfig, data_dir: &Path) -> Result<Self> {
        let prefix = config.image_prefix.as_deref().unwrap_or("/probs/");
        let suffix = config.image_suffix.as_deref().unwrap_or(".npy");
        let dir = data_dir.join(prefix.trim_matches('/'));
        let label_suffix = config.label_suffix.as_deref();
        let entries = files_ending(&dir, suffix)?
            .into_iter()
            // Labels may sit beside the maps (`<id>_label.npy`): they are not images.
            .filter(|file| !label_suffix.is_some_and(|s| s != suffix && file.to_string_lossy().ends_with(s)))
            .map(|file| Entry {
                id: id_of(&file, Some(suffix)),
                label: label_path(config, &file),
                input: file,
                case: None,
            })
            .collect();
        Ok(ProbFolder {
            classes: config.num_classes,
            entries,
            cast_reported: AtomicBool::new(false),
        })
    }
}

impl Dataset for ProbFolder {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn gives_probabilities(&self) -> bool {
        true
    }

    fn load(&self, entry: &Entry) -> Result<Sample> {
        let (probs, shape) = match read_probs(&entry.input)? {
            ProbArray::F32(v, s) => (v, s),
            ProbArray::F64(v, s) => {
                if !self.cast_reported.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "note: {} holds float64 probabilities: they are cast to float32, in which \
                         the predictors and metrics run (see DATA.md)",
                        entry.input.display()
                    );
                }
                (v.into_iter().map(|x| x as f32).collect(), s)
            }
        };
        if shape.len() != 3 || shape[0] != self.classes {
            bail!(
                "{}: expected probabilities of shape ({}, H, W), got {shape:?}",
                entry.input.display(),
                self.classes
            );
        }
        let (label, height, width) = read_label(&entry.label)?;
        if (height, width) != (shape[1], shape[2]) {
            bail!(
                "{} is {height}x{width} but the probabilities {} are {}x{}",
                entry.label.display(),
                entry.input.display(),
                shape[1],
                shape[2]
            );
        }
        Ok(Sample {
            input: probs,
            label,
            height,
            width,
        })
    }
}
