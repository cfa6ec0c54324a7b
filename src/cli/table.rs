//! `rankseg table --runs DIR... --out PATH`: the papers' table from finished `exp` runs.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use polars::prelude::*;

use crate::atomic::write_string_atomic;
use crate::paths::with_suffix;
use crate::report::paper::{build, collect, TableSpec};
use crate::report::{markdown, write_csv};

#[derive(Args)]
pub struct TableArgs {
    /// `rankseg exp` output directories (each with run.json and its metrics files).
    #[arg(long, num_args = 1.., required = true)]
    runs: Vec<PathBuf>,
    /// The metrics.json key to tabulate (mIoUI, mDiceI, mIoUD, ...).
    #[arg(long, default_value = "mIoUI")]
    metric: String,
    /// The prediction the deltas are taken against.
    #[arg(long, default_value = "argmax")]
    baseline: String,
    /// Writes PATH.md, PATH.csv and PATH.deltas.csv (an .md or .csv extension is dropped).
    #[arg(long)]
    out: PathBuf,
    /// Bootstrap resamples for the 95% intervals of the deltas (image metrics only).
    #[arg(long, default_value_t = 2000)]
    draws: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: TableArgs) -> Result<()> {
    let spec = TableSpec {
        metric: &args.metric,
        baseline: &args.baseline,
        draws: args.draws,
        seed: args.seed,
    };
    print!("{}", write_table(&args.runs, &spec, &args.out)?);
    Ok(())
}

/// Builds the table of `runs` and writes PATH.md, PATH.csv and PATH.deltas.csv (an .md or
/// .csv extension of `out` is dropped); returns the table as markdown.
pub(super) fn write_table(runs: &[PathBuf], spec: &TableSpec, out: &std::path::Path) -> Result<String> {
    let results = collect(runs)?;
    if results.is_empty() {
        bail!("no finished runs in the given directories");
    }
    let mut table = build(&results, spec)?;
    let stem = match out.extension().and_then(|e| e.to_str()) {
        Some("md" | "csv") => out.with_extension(""),
        _ => out.to_path_buf(),
    };
    write_csv(&with_suffix(&stem, ".csv"), &mut table.wide)?;
    write_csv(&with_suffix(&stem, ".deltas.csv"), &mut table.deltas)?;
    let intervals = readable_deltas(&table.deltas)?;
    let text = format!(
        "{} per model and prediction; in brackets the change from {} on the same model and data.\n\n{}\n\
         Paired bootstrap 95% intervals of the changes ({} resamples over images, or cases for CT data):\n\n{}",
        spec.metric,
        spec.baseline,
        markdown(&table.wide),
        spec.draws,
        markdown(&intervals)
    );
    write_string_atomic(&with_suffix(&stem, ".md"), &text)?;
    Ok(text)
}

/// The deltas with each interval as one readable column.
fn readable_deltas(deltas: &DataFrame) -> Result<DataFrame> {
    let delta = deltas.column("delta")?.f64()?;
    let lo = deltas.column("ci_low")?.f64()?;
    let hi = deltas.column("ci_high")?.f64()?;
    let interval: Vec<String> = delta
        .iter()
        .zip(lo.iter().zip(hi.iter()))
        .map(|(d, (l, h))| match (d, l, h) {
            (Some(d), Some(l), Some(h)) => format!("{d:+.2} [{l:+.2}, {h:+.2}]"),
            (Some(d), _, _) => format!("{d:+.2}"),
            _ => String::new(),
        })
        .collect();
    let mut out = deltas.select(["model", "prediction", "dataset", "units"])?;
    out.with_column(Column::new("change [95% CI]".into(), interval))?;
    Ok(out)
}
