//! `rankseg prepare lits|kits --data_dir D`: NIfTI volumes to the tumor slices the CT
//! datasets read (see DATA.md).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::data::prepare::{prepare, Challenge};

#[derive(Args)]
pub struct PrepareArgs {
    /// Which challenge's volumes to prepare.
    #[arg(value_enum)]
    challenge: Challenge,
    /// The folder holding `lits/` or `kits/`; slices go to `<data_dir>/<challenge>/train/`.
    #[arg(long = "data_dir", alias = "data-dir")]
    data_dir: PathBuf,
}

pub fn run(args: PrepareArgs) -> Result<()> {
    let written = prepare(args.challenge, &args.data_dir)?;
    eprintln!("{written} slices written");
    Ok(())
}
