//! threshold ("TR"): each class's mask is p > 0.5.

use rayon::prelude::*;

use super::float::Prob;
use super::ProbMap;

pub fn masks<T: Prob>(map: &ProbMap<T>) -> Vec<u8> {
    let half = T::from_f64(0.5);
    map.data.par_iter().map(|&p| (p > half) as u8).collect()
}
