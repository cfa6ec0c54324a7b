//! Cityscapes labels: `*_gtFine_labelTrainIds.png` when prepared, otherwise made on the
//! fly from `*_gtFine_labelIds.png` with the official id -> train id table.

use std::path::{Path, PathBuf};

/// The 19 evaluated classes' label ids, in train id order (cityscapesScripts' labels.py).
const EVALUATED_IDS: [i64; 19] = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
];

/// The train id of a label id; `ignore` (the data yaml's `ignore_index`) for the classes
/// not evaluated.
pub fn train_id(label_id: i64, ignore: i64) -> i64 {
    EVALUATED_IDS
        .iter()
        .position(|&id| id == label_id)
        .map_or(ignore, |t| t as i64)
}

/// The `labelIds` file beside a missing `labelTrainIds` one, if there is one.
pub fn label_ids_file(train_ids: &Path) -> Option<PathBuf> {
    let name = train_ids.to_string_lossy();
    let ids = PathBuf::from(name.strip_suffix("_labelTrainIds.png")?.to_string() + "_labelIds.png");
    ids.exists().then_some(ids)
}
