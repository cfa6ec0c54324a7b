//! Result files of a run, in `--output_dir`: `<predict>.metrics.json`,
//! `<predict>.per_image.csv`, `run.json` (one entry per predictor, written last, so an
//! entry there means the run finished), and optional prediction PNGs. Every file is
//! written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use serde_json::{json, Map, Value};

use super::{ImageRow, Outcome};
use crate::atomic::{write_atomic, write_string_atomic};
use crate::data::{write_palette_png, Entry};
use crate::metrics::{MetricSpec, Prediction};

pub fn metrics_path(dir: &Path, predict: &str) -> PathBuf {
    dir.join(format!("{predict}.metrics.json"))
}

pub fn per_image_path(dir: &Path, predict: &str) -> PathBuf {
    dir.join(format!("{predict}.per_image.csv"))
}

pub fn run_json_path(dir: &Path) -> PathBuf {
    dir.join("run.json")
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

/// The run's record in run.json under `entry`.
pub struct RunRecord {
    /// Keys shared by every predictor of the run (configs, checkpoint, versions).
    pub shared: Map<String, Value>,
    /// This predictor's own keys (its config, a fingerprint of everything that decides
    /// the numbers).
    pub entry: Map<String, Value>,
}

pub fn write(dir: &Path, predict: &str, outcome: &Outcome, record: RunRecord) -> Result<()> {
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
    )?;

    let mut run = read_run_json(dir)?.unwrap_or_default();
    for (k, v) in record.shared {
        run.insert(k, v);
    }
    let mut entry = record.entry;
    entry.insert("images".into(), json!(outcome.images));
    entry.insert("scored_images".into(), json!(outcome.per_image.len()));
    entry.insert(
        "seconds".into(),
        json!({
            "forward": outcome.seconds.forward,
            "predict": outcome.seconds.predict,
            "metric": outcome.seconds.metric,
        }),
    );
    let predictions = run.entry("predictions").or_insert_with(|| json!({}));
    if let Value::Object(map) = predictions {
        map.insert(predict.to_string(), Value::Object(entry));
    }
    write_string_atomic(&run_json_path(dir), &(serde_json::to_string_pretty(&run)? + "\n"))
}

pub fn read_run_json(dir: &Path) -> Result<Option<Map<String, Value>>> {
    let path = run_json_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        _ => anyhow::bail!("{} is not a JSON object", path.display()),
    }
}

/// The fingerprint recorded for a finished predictor run, if there is one.
pub fn finished_fingerprint(dir: &Path, predict: &str) -> Result<Option<String>> {
    if !metrics_path(dir, predict).exists() {
        return Ok(None);
    }
    Ok(read_run_json(dir)?.and_then(|run| {
        run.get("predictions")?
            .get(predict)?
            .get("fingerprint")?
            .as_str()
            .map(str::to_string)
    }))
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

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
