//! threshold ("TR"): each class's mask is p > 0.5.

use rayon::prelude::*;

use super::argmax::all_in_unit;
use super::float::Prob;
use super::{check_values, PredictError, ProbMap};

/// Values per task (fixed, so the work split does not depend on the thread count).
const VALUES: usize = 1 << 16;

/// The masks, checking the values in the same pass (see `argmax::class_map`).
pub fn masks<T: Prob>(map: &ProbMap<T>) -> Result<Vec<u8>, PredictError> {
    let half = T::from_f64(0.5);
    let mut out = vec![0u8; map.data.len()];
    let in_range = out
        .par_chunks_mut(VALUES)
        .zip(map.data.par_chunks(VALUES))
        .map(|(mask, values)| {
            for (m, &p) in mask.iter_mut().zip(values) {
                *m = u8::from(p > half);
            }
            all_in_unit(values)
        })
        .reduce(|| true, |a, b| a & b);
    if !in_range {
        check_values(map)?;
    }
    Ok(out)
}
