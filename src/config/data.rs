//! `configs/datas/NAME.yaml`: a dataset and how its images are prepared.

use serde::{Deserialize, Serialize};

/// The datasets `rankseg exp` reads (the experiment's `dataset` key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    PascalVoc,
    Cityscapes,
    Ade20k,
    Lits,
    Kits,
    /// Per-image probability maps (.npy) with their labels: any model's outputs.
    Probs,
}

impl DatasetKind {
    /// CT slices, scored per case (LiTS, KiTS).
    pub fn medical(self) -> bool {
        matches!(self, DatasetKind::Lits | DatasetKind::Kits)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Medical: which of the five case folds is evaluated.
    #[serde(default)]
    pub fold: Option<usize>,
    /// Medical: the number of cases the folds split.
    #[serde(default)]
    pub num_cases: Option<usize>,
    /// Image channels the model takes (3 for RGB, 1 for CT).
    #[serde(default)]
    pub in_channels: Option<usize>,
    pub num_classes: usize,
    // Training augmentation range, kept for the experiment's layout.
    #[serde(default)]
    pub scale_min: Option<f64>,
    #[serde(default)]
    pub scale_max: Option<f64>,
    /// Medical: the CT intensity window mapped to [-1, 1].
    #[serde(default)]
    pub window_low: Option<f64>,
    #[serde(default)]
    pub window_high: Option<f64>,
    /// (height, width) of the model's input window (image datasets).
    #[serde(default)]
    pub crop_size: Option<[usize; 2]>,
    pub ignore_index: i64,
    #[serde(default)]
    pub reduce_zero_label: bool,
    #[serde(default)]
    pub image_prefix: Option<String>,
    #[serde(default)]
    pub image_suffix: Option<String>,
    #[serde(default)]
    pub label_prefix: Option<String>,
    #[serde(default)]
    pub label_suffix: Option<String>,
}

impl DataConfig {
    /// The crop size of an image dataset (`check` made sure there is one).
    pub fn crop(&self) -> [usize; 2] {
        self.crop_size.unwrap_or([1, 1])
    }

    /// Checks what the yaml's types cannot: sizes, the CT window, the folds.
    pub fn check(&self) -> Result<(), String> {
        if self.num_classes < 2 {
            return Err(format!(
                "num_classes must be at least 2, got {}",
                self.num_classes
            ));
        }
        if self.num_classes > 256 {
            return Err(format!(
                "num_classes must be at most 256, got {}",
                self.num_classes
            ));
        }
        match self.crop_size {
            None if self.dataset != DatasetKind::Probs => return Err("crop_size is missing".into()),
            Some(crop) if crop.contains(&0) => {
                return Err(format!("crop_size must be positive, got {crop:?}"))
            }
            _ => {}
        }
        if (0..self.num_classes as i64).contains(&self.ignore_index) {
            return Err(format!(
                "ignore_index {} is one of the classes 0..{}",
                self.ignore_index,
                self.num_classes - 1
            ));
        }
        if self.dataset.medical() {
            match (self.window_low, self.window_high) {
                (Some(low), Some(high)) if low < high => {}
                _ => return Err("a CT dataset needs window_low < window_high".into()),
            }
            match (self.fold, self.num_cases) {
                (Some(fold), Some(cases)) if fold < 5 && cases >= 5 => {}
                _ => return Err("a CT dataset needs fold in 0..=4 and num_cases >= 5".into()),
            }
        }
        Ok(())
    }
}
