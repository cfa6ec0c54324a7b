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

/// A frame as a GitHub markdown table: every row and column, columns padded to their
/// widest cell, missing text cells left blank. (Rendered here rather than by polars'
/// Display, whose table options are read from environment variables only.)
pub fn markdown(frame: &DataFrame) -> String {
    let columns = frame.columns();
    let cells: Vec<Vec<String>> = columns
        .iter()
        .map(|column| {
            let header = column.name().to_string();
            let body = (0..column.len()).map(|i| match column.get(i) {
                Ok(AnyValue::Null) if column.dtype() == &DataType::String => String::new(),
                Ok(AnyValue::String(text)) => text.to_string(),
                Ok(AnyValue::StringOwned(text)) => text.to_string(),
                Ok(value) => value.to_string(),
                Err(_) => String::new(),
            });
            std::iter::once(header).chain(body).collect()
        })
        .collect();
    let widths: Vec<usize> = cells
        .iter()
        .map(|column| column.iter().map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let line = |row: usize| -> String {
        let mut text = String::from("|");
        for (column, width) in cells.iter().zip(&widths) {
            let cell = &column[row];
            let pad = width - cell.chars().count();
            text += &format!(" {cell}{} |", " ".repeat(pad));
        }
        text + "\n"
    };
    let mut out = line(0);
    out += "|";
    for width in &widths {
        out += &format!("{}|", "-".repeat(width + 2));
    }
    out += "\n";
    for row in 1..=frame.height() {
        out += &line(row);
    }
    out
}
