//! Segmentation metrics as the RankSEG-RMA experiment code's `AccuracyMetric` defines
//! them: per-image confusion counts, then dataset (D), image (I) and class (C) reductions
//! with worst-q variants; and the calibration of the probabilities (ECE, SCE). Metrics see
//! predictions, probabilities and labels, never models or datasets.

mod calibration;
mod counts;
mod summary;

pub use calibration::{Calibration, CalibrationSpec};
pub use counts::{ImageCounts, Prediction};
pub use summary::{summarize, ImageMetrics, Summary};

/// What the counts are taken against.
#[derive(Clone, Copy, Debug)]
pub struct MetricSpec {
    pub num_classes: usize,
    pub ignore_index: i64,
}

impl MetricSpec {
    /// Two classes: the binary rules (class 1 scored; an image with no class 1 anywhere
    /// scores 1).
    pub fn binary(&self) -> bool {
        self.num_classes == 2
    }
}
