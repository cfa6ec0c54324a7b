//! Result tables as CSV and markdown, written atomically side by side.

use std::path::Path;

use anyhow::Result;

use crate::atomic::write_string_atomic;

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

    pub fn to_csv(&self) -> String {
        let line = |cells: &[String]| {
            cells
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n']) {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        std::iter::once(line(&self.columns))
            .chain(self.rows.iter().map(|r| line(r)))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    pub fn to_markdown(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|j| {
                self.rows
                    .iter()
                    .map(|r| r[j].len())
                    .chain([self.columns[j].len(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, &w)| format!("{c:<w$}"))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let rule = format!(
            "|{}|",
            widths
                .iter()
                .map(|&w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        std::iter::once(line(&self.columns))
            .chain([rule])
            .chain(self.rows.iter().map(|r| line(r)))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    /// Writes `dir/stem.csv` and `dir/stem.md` (with `preamble` above the markdown table).
    pub fn write(&self, dir: &Path, stem: &str, preamble: &str) -> Result<()> {
        write_string_atomic(&dir.join(format!("{stem}.csv")), &self.to_csv())?;
        write_string_atomic(
            &dir.join(format!("{stem}.md")),
            &format!("{preamble}{}", self.to_markdown()),
        )
    }
}
