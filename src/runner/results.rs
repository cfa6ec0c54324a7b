//! Result files of a run, in `--output_dir`: `<predict>.metrics.json`,
//! `<predict>.per_image.csv` and optional prediction PNGs (run.json: `run_json`). Every
//! file is written atomically.

use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;
use serde_json::{json, Map, Value};

use super::{ImageRow, Outcome};
use crate::atomic::{write_atomic, write_string_atomic};
use crate::data::{write_palette_png, Entry};
use crate::metrics::{MetricSpec, Prediction};
use crate::paths::with_suffix;

pub fn metrics_path(dir: &Path, predict: &str) -> PathBuf {
    dir.join(format!("{predict}.metrics.json"))
}

pub fn per_image_path(dir: &Path, predict: &str) -> PathBuf {
    dir.join(format!("{predict}.per_image.csv"))
}

/// NaN (a mean over nothing) is written as null.
fn number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// The per-image table: image id, case (CT datasets), IoU and Dice (x100).
pub fn per_image_frame(rows: &[ImageRow]) -> Result<DataFrame> {
    let mut columns = vec![Column::new(
        "image".into(),
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
    )];
    if rows.iter().any(|r| r.case.is_some()) {
        columns.push(Column::new(
            "case".into(),
            rows.iter().map(|r| r.case).collect::<Vec<_>>(),
        ));
    }
    columns.push(Column::new(
        "IoU".into(),
        rows.iter().map(|r| r.iou).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "Dice".into(),
        rows.iter().map(|r| r.dice).collect::<Vec<_>>(),
    ));
    Ok(DataFrame::new_infer_height(columns)?)
}

/// Writes the run's metrics and per-image files (run.json is updated after them, by the
/// caller, so an entry there means these are complete).
pub fn write(dir: &Path, predict: &str, outcome: &Outcome) -> Result<()> {
    let mut frame = per_image_frame(&outcome.per_image)?;
    write_atomic(&per_image_path(dir, predict), |out| {
        CsvWriter::new(out).finish(&mut frame)?;
        Ok(())
    })?;
    let metrics: Map<String, Value> = outcome
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), number(*v)))
        .collect();
    write_string_atomic(
        &metrics_path(dir, predict),
        &(serde_json::to_string_pretty(&metrics)? + "\n"),
    )
}

/// Coloured predictions and labels as palette PNGs (`<predict>.pred/<id>_pred.png` and
/// `<id>.png`); the pixel values are the class indices, ignored pixels are `num_classes`.
pub struct PredictionImages {
    pub dir: PathBuf,
    pub palette: Vec<[u8; 3]>,
}

impl PredictionImages {
    pub fn save(
        &self,
        entry: &Entry,
        pred: Prediction,
        label: &[i64],
        height: usize,
        width: usize,
        spec: &MetricSpec,
    ) -> Result<()> {
        let n = spec.num_classes;
        let void = n.min(255) as u8;
        let class_of = |i: usize| -> u8 {
            match pred {
                Prediction::ClassMap(map) if (0..n as i64).contains(&map[i]) => map[i] as u8,
                Prediction::ClassMap(_) => void,
                // Masks: the binary foreground, or the first class a pixel's masks hold.
                Prediction::Masks(masks) => {
                    let dim = label.len();
                    let classes: Vec<usize> = if n == 2 { vec![1] } else { (0..n).collect() };
                    classes
                        .into_iter()
                        .find(|&c| masks[c * dim + i] != 0)
                        .map_or(0, |c| c as u8)
                }
            }
        };
        let pred: Vec<u8> = (0..label.len())
            .map(|i| {
                if label[i] == spec.ignore_index {
                    void
                } else {
                    class_of(i)
                }
            })
            .collect();
        let label: Vec<u8> = label
            .iter()
            .map(|&l| {
                if l == spec.ignore_index || !(0..n as i64).contains(&l) {
                    void
                } else {
                    l as u8
                }
            })
            .collect();
        let stem = self.dir.join(&entry.id);
        write_palette_png(
            &with_suffix(&stem, "_pred.png"),
            &pred,
            height,
            width,
            &self.palette,
        )?;
        write_palette_png(&with_suffix(&stem, ".png"), &label, height, width, &self.palette)
    }
}
