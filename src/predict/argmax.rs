//! argmax: the class of the largest probability, the first one on ties.

use rayon::prelude::*;

use super::float::Prob;
use super::{check_values, PredictError, ProbMap};

/// Pixels per task: a chunk's running maxima and labels (32-bit each) stay in L1 while
/// every class's row streams past them.
const PIXELS: usize = 4096;

/// The class map, checking the values in the same pass: a map that fails the fused check
/// is checked again by `check_values`, which names the offending value as rankseg does.
pub fn class_map<T: Prob>(map: &ProbMap<T>) -> Result<Vec<i64>, PredictError> {
    let mut out = vec![0i64; map.batch * map.dim];
    let mut in_range = true;
    for (b, image_out) in out.chunks_mut(map.dim).enumerate() {
        in_range &= image_out
            .par_chunks_mut(PIXELS)
            .enumerate()
            .map(|(k, labels)| chunk_argmax(map, b, k * PIXELS, labels))
            .reduce(|| true, |a, b| a & b);
    }
    if !in_range {
        check_values(map)?;
    }
    Ok(out)
}

/// argmax of the pixels `start..start + labels.len()` of image `b`; whether all the
/// values read lie in [0, 1] (NaN does not).
fn chunk_argmax<T: Prob>(map: &ProbMap<T>, b: usize, start: usize, labels: &mut [i64]) -> bool {
    let range = start..start + labels.len();
    let first = &map.row(b, 0)[range.clone()];
    let mut in_range = all_in_unit(first);
    let mut best = [T::ZERO; PIXELS];
    let mut owner = [0u32; PIXELS];
    let (best, owner) = (&mut best[..labels.len()], &mut owner[..labels.len()]);
    best.copy_from_slice(first);
    for c in 1..map.classes {
        let row = &map.row(b, c)[range.clone()];
        in_range &= all_in_unit(row);
        // Branch-free so that it vectorises: f32 values and u32 labels share lanes.
        for ((&p, top), label) in row.iter().zip(best.iter_mut()).zip(owner.iter_mut()) {
            let higher = p > *top;
            *top = if higher { p } else { *top };
            *label = if higher { c as u32 } else { *label };
        }
    }
    for (label, &c) in labels.iter_mut().zip(owner.iter()) {
        *label = i64::from(c);
    }
    in_range
}

/// Whether every value is in [0, 1]: false for NaN, infinities and anything outside.
#[inline]
pub(super) fn all_in_unit<T: Prob>(values: &[T]) -> bool {
    values
        .iter()
        .fold(true, |ok, &p| ok & (p >= T::ZERO) & (p <= T::ONE))
}

/// argmax as multilabel masks: one-hot, as rankseg's multilabel argmax returns.
pub fn one_hot<T: Prob>(classes: &[i64], map: &ProbMap<T>) -> Vec<u8> {
    let mut out = vec![0u8; map.batch * map.classes * map.dim];
    for (b, labels) in classes.chunks(map.dim).enumerate() {
        for (i, &c) in labels.iter().enumerate() {
            out[(b * map.classes + c as usize) * map.dim + i] = 1;
        }
    }
    out
}
