//! Per-image confusion counts.

use anyhow::{bail, Result};

use super::MetricSpec;

/// One image's prediction: a class map (D) or one 0/1 mask per class (C, D).
#[derive(Clone, Copy)]
pub enum Prediction<'a> {
    ClassMap(&'a [i64]),
    Masks(&'a [u8]),
}

/// tp, fp, fn per class over the image's kept pixels, and which classes are scored.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageCounts {
    pub tp: Vec<u64>,
    pub fp: Vec<u64>,
    pub fn_: Vec<u64>,
    pub active: Vec<bool>,
}

impl ImageCounts {
    /// Counts one image; `None` when every pixel carries the ignore label (the image is
    /// skipped, as the reference skips it).
    pub fn of(pred: Prediction, label: &[i64], spec: &MetricSpec) -> Result<Option<Self>> {
        let n = spec.num_classes;
        let in_range = |v: i64| (0..n as i64).contains(&v);
        let (mut tp, mut fp, mut fn_) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
        let mut predicted = vec![false; n];
        let mut in_label = vec![false; n];
        let mut kept = 0usize;
        for (i, &l) in label.iter().enumerate() {
            if l == spec.ignore_index {
                continue;
            }
            if !in_range(l) {
                bail!(
                    "label value {l} is outside the classes 0..{} and is not the ignore index {}",
                    n - 1,
                    spec.ignore_index
                );
            }
            kept += 1;
            let l = l as usize;
            in_label[l] = true;
            match pred {
                Prediction::ClassMap(map) => {
                    let p = map[i];
                    // A void (out-of-range) prediction claims no class.
                    if in_range(p) {
                        let p = p as usize;
                        predicted[p] = true;
                        if p == l {
                            tp[l] += 1;
                        } else {
                            fp[p] += 1;
                            fn_[l] += 1;
                        }
                    } else {
                        fn_[l] += 1;
                    }
                }
                Prediction::Masks(masks) => {
                    let dim = label.len();
                    for c in 0..n {
                        let on = masks[c * dim + i] != 0;
                        predicted[c] |= on;
                        match (on, c == l) {
                            (true, true) => tp[c] += 1,
                            (true, false) => fp[c] += 1,
                            (false, true) => fn_[c] += 1,
                            (false, false) => {}
                        }
                    }
                }
            }
        }
        if kept == 0 {
            return Ok(None);
        }
        let active = if spec.binary() {
            (0..n).map(|c| in_label[c] || predicted[c]).collect()
        } else {
            in_label
        };
        Ok(Some(ImageCounts { tp, fp, fn_, active }))
    }
}
