//! Path helpers.

use std::path::{Path, PathBuf};

/// `stem` with `suffix` appended to its last component (`a/b` + `.csv` = `a/b.csv`), which
/// `Path::with_extension` would not do for stems that hold a dot.
pub fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
