//! Result tables: polars frames written as CSV and markdown side by side, atomically; and
//! the papers' tables built from finished runs (`rankseg table`).

pub mod bootstrap;
pub mod paper;

use std::path::Path;

use anyhow::Result;
use polars::prelude::*;

use crate::atomic::{write_atomic, write_string_atomic};

/// A table of text cells, built row by row.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Self {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    pub fn to_frame(&self) -> Result<DataFrame> {
        let columns = self
            .columns
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let cells: Vec<&str> = self.rows.iter().map(|r| r[j].as_str()).collect();
                Column::new(name.as_str().into(), cells)
            })
            .collect();
        Ok(DataFrame::new_infer_height(columns)?)
    }

    pub fn to_markdown(&self) -> Result<String> {
        Ok(markdown(&self.to_frame()?))
    }

    /// Writes `dir/stem.csv` and `dir/stem.md` (with `preamble` above the markdown table).
    pub fn write(&self, dir: &Path, stem: &str, preamble: &str) -> Result<()> {
        let mut frame = self.to_frame()?;
        write_csv(&dir.join(format!("{stem}.csv")), &mut frame)?;
        write_string_atomic(
            &dir.join(format!("{stem}.md")),
            &format!("{preamble}{}", markdown(&frame)),
        )
    }
}

pub fn write_csv(path: &Path, frame: &mut DataFrame) -> Result<()> {
    write_atomic(path, |out| {
        CsvWriter::new(out).finish(frame)?;
        Ok(())
    })
}

/// A frame as a GitHub markdown table: every row and column, no dtypes or shape line, and
/// missing text cells left blank.
pub fn markdown(frame: &DataFrame) -> String {
    let blank_nulls = |column: &Column| -> Column {
        match column.str() {
            Ok(text) if column.null_count() > 0 => Column::new(
                column.name().clone(),
                text.iter().map(|v| v.unwrap_or("")).collect::<Vec<_>>(),
            ),
            _ => column.clone(),
        }
    };
    let frame = DataFrame::new_infer_height(frame.columns().iter().map(blank_nulls).collect())
        .unwrap_or_else(|_| frame.clone());
    for (key, value) in [
        ("POLARS_FMT_TABLE_FORMATTING", "ASCII_MARKDOWN"),
        ("POLARS_FMT_TABLE_HIDE_COLUMN_DATA_TYPES", "1"),
        ("POLARS_FMT_TABLE_HIDE_DATAFRAME_SHAPE_INFORMATION", "1"),
        ("POLARS_FMT_MAX_ROWS", "-1"),
        ("POLARS_FMT_MAX_COLS", "-1"),
        ("POLARS_FMT_STR_LEN", "1000"),
        ("POLARS_TABLE_WIDTH", "65535"),
    ] {
        // polars reads its display options from the environment only.
        std::env::set_var(key, value);
    }
    format!("{frame}\n")
}
