//! `rankseg ablate`: every solver on a seeded suite, scored by the expected Dice and IoU
//! of its masks, with its gap to the best solver and its time.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ablation::{plot_gap_vs_time, run_case, suite};
use crate::report::Table;

#[derive(Args)]
pub struct AblateArgs {
    /// Where ablation.csv, ablation.md and ablation.png go.
    #[arg(long)]
    out: PathBuf,
    /// A small suite (under a minute on two cores).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: AblateArgs) -> Result<()> {
    let cases = suite(args.quick);
    let progress = ProgressBar::new(cases.len() as u64)
        .with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} cases ({eta})")?.progress_chars("=> "),
        )
        .with_message("ablate");
    let mut records = Vec::new();
    for case in &cases {
        progress.set_message(case.name.clone());
        records.extend(run_case(case)?);
        progress.inc(1);
    }
    progress.finish_and_clear();

    let mut table = Table::new(&[
        "case",
        "solver",
        "metric",
        "expected_value",
        "std_error",
        "gap_to_best",
        "seconds",
    ]);
    for r in &records {
        table.push(vec![
            r.case.clone(),
            r.solver.clone(),
            r.metric.to_string(),
            format!("{:.6}", r.expected_value),
            format!("{:.6}", r.std_error),
            format!("{:.6}", r.gap_to_best),
            format!("{:.6}", r.seconds),
        ]);
    }
    let preamble = format!(
        "Solver ablation ({} suite): expected Dice/IoU of each solver's masks under independent \
         Bernoulli(p) labels, exact for rows up to {} pixels, Monte Carlo beyond (std_error). \
         exact runs without pruning and is the optimum where it runs; the others use rankseg's \
         defaults (pruning 0.5, eps 1e-4).\n\n",
        if args.quick { "quick" } else { "full" },
        crate::predict::rankdice::EXACT_MAX_DIM
    );
    table.write(&args.out, "ablation", &preamble)?;
    let png = args.out.join("ablation.png");
    plot_gap_vs_time(&records, &png)?;
    print!("{preamble}{}", table.to_markdown()?);
    println!("\nwritten: {}/ablation.{{csv,md,png}}", args.out.display());
    Ok(())
}
