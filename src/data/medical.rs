//! LiTS and KiTS: CT slices prepared by `rankseg prepare` (or the experiment's own script)
//! as `<data_dir>/<lits|kits>/train/<case>_<slice>.npz` holding `ct` (Hounsfield units)
//! and `mask` (0 background, 1 organ, 2 tumor). The tumor is the foreground; cases are split
//! into five folds as the experiment splits them, and metrics are taken per case.

use std::path::Path;

use anyhow::{bail, Result};

use super::transform::{window, Plane};
use super::{files_ending, id_of, Dataset, Entry, Sample};
use crate::config::data::{DataConfig, DatasetKind};
use crate::tensor_io::{Npz, ProbArray};

pub struct CtSlices {
    crop: [usize; 2],
    window: (f32, f32),
    ignore_index: i64,
    entries: Vec<Entry>,
}

/// The validation cases of a fold: five consecutive blocks of `num_cases / 5` cases, the
/// last fold taking the remainder.
pub fn fold_cases(fold: usize, num_cases: usize) -> std::ops::Range<usize> {
    let size = num_cases / 5;
    let end = if fold <= 3 { size * (fold + 1) } else { num_cases };
    size * fold..end
}

/// `12_345.npz` -> (case 12, slice 345).
pub(super) fn case_and_slice(id: &str) -> Option<(u32, u32)> {
    let (case, slice) = id.split_once('_')?;
    Some((case.parse().ok()?, slice.parse().ok()?))
}

impl CtSlices {
    pub fn open(config: &DataConfig, data_dir: &Path) -> Result<Self> {
        let name = if config.dataset == DatasetKind::Lits {
            "lits"
        } else {
            "kits"
        };
        let cases = fold_cases(config.fold.unwrap_or(0), config.num_cases.unwrap_or(0));
        let mut entries = Vec::new();
        for file in files_ending(&data_dir.join(name).join("train"), ".npz")? {
            let id = id_of(&file, Some(".npz"));
            let Some((case, slice)) = case_and_slice(&id) else {
                bail!(
                    "{}: a slice file must be named <case>_<slice>.npz",
                    file.display()
                );
            };
            if cases.contains(&(case as usize)) {
                entries.push((
                    (case, slice),
                    Entry {
                        id,
                        label: file.clone(),
                        input: file,
                        case: Some(case),
                    },
                ));
            }
        }
        entries.sort_by_key(|(key, _)| *key);
        Ok(CtSlices {
            crop: config.crop(),
            window: (
                config.window_low.unwrap_or(0.0) as f32,
                config.window_high.unwrap_or(1.0) as f32,
            ),
            ignore_index: config.ignore_index,
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }
}

impl Dataset for CtSlices {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn load(&self, entry: &Entry) -> Result<Sample> {
        let (image, label) = read_slice(&entry.input)?;
        let [crop_h, crop_w] = self.crop;
        let (low, high) = self.window;
        let image = image.centre_crop(crop_h, crop_w, &[low]);
        let label = label.centre_crop(crop_h, crop_w, &[self.ignore_index]);
        let ignore = self.ignore_index;
        let label = label.data.into_iter().map(|v| tumour_class(v, ignore)).collect();
        Ok(Sample {
            input: image.to_chw(|_, v| window(v, low, high)),
            label,
            height: crop_h,
            width: crop_w,
        })
    }
}

/// A slice file's `ct` (float32, as the experiment's `np.float32(...)`) and `mask`, (H, W).
pub(super) fn read_slice(path: &Path) -> Result<(Plane<f32>, Plane<i64>)> {
    let mut npz = Npz::open(path)?;
    let (ct, shape) = match npz.probs("ct")? {
        ProbArray::F32(v, s) => (v, s),
        ProbArray::F64(v, s) => (v.into_iter().map(|x| x as f32).collect(), s),
    };
    let mask = npz.ints("mask")?;
    if shape.len() != 2 || mask.shape != shape {
        bail!(
            "{}: ct {shape:?} and mask {:?} must be two (H, W) arrays of one size",
            path.display(),
            mask.shape
        );
    }
    let (height, width) = (shape[0], shape[1]);
    let image = Plane {
        data: ct,
        height,
        width,
        channels: 1,
    };
    let label = Plane {
        data: mask.data,
        height,
        width,
        channels: 1,
    };
    Ok((image, label))
}

/// As the experiment, after its transforms: `label >>= 1` makes the tumor (2) class 1 and the
/// organ (1) background; what lands above 1 (the padding) is ignored.
pub(super) fn tumour_class(mask: i64, ignore: i64) -> i64 {
    match mask >> 1 {
        0 | 1 if mask >= 0 => mask >> 1,
        _ => ignore,
    }
}
