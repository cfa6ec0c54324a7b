//! The ablation's picture: gap to the best solver against time, one point per case,
//! solver and metric (log time axis).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::Record;
use crate::chart::{write_chart, SIZE};

/// Draws the plot in memory and writes it as a PNG in one atomic step, so that a failed or
/// interrupted run never leaves a partial ablation.png.
pub fn plot_gap_vs_time(records: &[Record], path: &Path) -> Result<()> {
    write_chart(path, |rgb| draw(records, path, rgb))
}

/// The chart into an RGB buffer of `SIZE` (`path` only names it in errors).
fn draw(records: &[Record], path: &Path, rgb: &mut [u8]) -> Result<()> {
    let mut solvers: Vec<&str> = records.iter().map(|r| r.solver.as_str()).collect();
    solvers.dedup();
    solvers.sort_unstable();
    solvers.dedup();
    let (t_min, t_max) = records
        .iter()
        .map(|r| r.seconds.max(1e-6))
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let gap_max = records
        .iter()
        .map(|r| r.gap_to_best)
        .fold(0.0f64, f64::max)
        .max(1e-6);

    let root = BitMapBackend::with_buffer(rgb, SIZE).into_drawing_area();
    let failed = |e: DrawingAreaErrorKind<_>| anyhow!("cannot draw {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gap to the best solver vs time (expected Dice and IoU)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((t_min / 2.0..t_max * 2.0).log_scale(), 0.0..gap_max * 1.1)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("seconds per case (log scale)")
        .y_desc("gap to best expected score")
        .draw()
        .map_err(failed)?;
    for (k, solver) in solvers.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let points = records
            .iter()
            .filter(|r| r.solver == *solver)
            .map(|r| (r.seconds.max(1e-6), r.gap_to_best));
        chart
            .draw_series(points.map(|p| Circle::new(p, 5, color.filled())))
            .map_err(failed)?
            .label(*solver)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}
