//! The ablation's picture: gap to the best solver against time, one point per case,
//! solver and metric (log time axis).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::Record;

/// Where Debian's fonts-dejavu-core puts the font the labels are drawn with.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn load_font() -> Result<()> {
    let bytes = std::fs::read(FONT)
        .with_context(|| format!("cannot read the plot font {FONT} (install fonts-dejavu-core)"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable TrueType font"))
}

pub fn plot_gap_vs_time(records: &[Record], path: &Path) -> Result<()> {
    load_font()?;
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

    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow!("cannot draw {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gap to the best solver vs time (expected Dice and IoU)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((t_min / 2.0..t_max * 2.0).log_scale(), 0.0..gap_max * 1.1)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("seconds per case (log scale)")
        .y_desc("gap to best expected score")
        .draw()
        .map_err(draw)?;
    for (k, solver) in solvers.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let points = records
            .iter()
            .filter(|r| r.solver == *solver)
            .map(|r| (r.seconds.max(1e-6), r.gap_to_best));
        chart
            .draw_series(points.map(|p| Circle::new(p, 5, color.filled())))
            .map_err(draw)?
            .label(*solver)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}
