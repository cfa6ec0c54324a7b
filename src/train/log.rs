//! `train_log.csv`: one row per optimizer step (`iter, epoch, lr, loss, seconds`; lr is the
//! rate parameter group 0 used for the step, seconds the step's wall time), and the loss
//! curve drawn from it. The file is rewritten whole and atomically (at each checkpoint and
//! at the end), and a resumed run keeps only the rows before its checkpoint, so the log
//! always matches the weights on disk.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

use crate::atomic::write_string_atomic;
use crate::chart::{write_chart, SIZE};

pub const HEADER: &str = "iter,epoch,lr,loss,seconds";

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub iter: u64,
    pub epoch: u64,
    pub lr: f64,
    pub loss: f64,
    pub seconds: f64,
}

pub struct TrainLog {
    path: PathBuf,
    rows: Vec<Row>,
}

impl TrainLog {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("train_log.csv")
    }

    /// The log of `dir`, keeping the rows of the steps before `first_iter` (a resumed run
    /// redoes the others).
    pub fn open(dir: &Path, first_iter: u64) -> Result<Self> {
        let path = Self::path(dir);
        let mut rows = Vec::new();
        if first_iter > 1 && path.exists() {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            for (n, line) in text.lines().enumerate().skip(1) {
                let row = parse(line).with_context(|| format!("{} line {}", path.display(), n + 1))?;
                if row.iter < first_iter {
                    rows.push(row);
                }
            }
        }
        Ok(TrainLog { path, rows })
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn write(&self) -> Result<()> {
        let mut text = String::from(HEADER);
        text.push('\n');
        for r in &self.rows {
            text.push_str(&format!(
                "{},{},{:e},{:e},{:.6}\n",
                r.iter, r.epoch, r.lr, r.loss, r.seconds
            ));
        }
        write_string_atomic(&self.path, &text)
    }

    /// The loss per step, as a PNG.
    pub fn plot(&self, path: &Path) -> Result<()> {
        if self.rows.is_empty() {
            bail!("no training steps to plot");
        }
        write_chart(path, |rgb| draw(&self.rows, path, rgb))
    }
}

fn parse(line: &str) -> Result<Row> {
    let fields: Vec<&str> = line.split(',').collect();
    let [iter, epoch, lr, loss, seconds] = fields.as_slice() else {
        bail!("expected the 5 columns {HEADER}, got {line:?}");
    };
    Ok(Row {
        iter: iter.parse()?,
        epoch: epoch.parse()?,
        lr: lr.parse()?,
        loss: loss.parse()?,
        seconds: seconds.parse()?,
    })
}

fn draw(rows: &[Row], path: &Path, rgb: &mut [u8]) -> Result<()> {
    let finite = rows.iter().map(|r| r.loss).filter(|l| l.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| {
        (a.min(l), b.max(l))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo.min(0.0), hi.max(lo + 1e-6))
    } else {
        (0.0, 1.0)
    };
    let (first, last) = (rows[0].iter, rows[rows.len() - 1].iter.max(rows[0].iter + 1));
    let root = BitMapBackend::with_buffer(rgb, SIZE).into_drawing_area();
    let failed = |e: DrawingAreaErrorKind<_>| anyhow!("cannot draw {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Training loss", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(first..last, lo..hi * 1.05)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("loss")
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (r.iter, r.loss)),
            BLUE.stroke_width(2),
        ))
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumed_log_keeps_the_steps_before_the_checkpoint() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut log = TrainLog::open(dir.path(), 1)?;
        for iter in 1..=5 {
            log.push(Row {
                iter,
                epoch: iter,
                lr: 1e-3 / iter as f64,
                loss: 2.0 - 0.1 * iter as f64,
                seconds: 0.5,
            });
        }
        log.write()?;
        let resumed = TrainLog::open(dir.path(), 4)?;
        assert_eq!(resumed.rows(), &log.rows()[..3]);
        assert!(TrainLog::open(dir.path(), 1)?.rows().is_empty());
        log.plot(&dir.path().join("loss.png"))?;
        assert!(std::fs::metadata(dir.path().join("loss.png"))?.len() > 1000);
        Ok(())
    }
}
