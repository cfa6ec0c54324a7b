//! argmax: the class of the largest probability, the first one on ties.

use rayon::prelude::*;

use super::float::Prob;
use super::volume::CHUNK;
use super::ProbMap;

pub fn class_map<T: Prob>(map: &ProbMap<T>) -> Vec<i64> {
    let mut out = vec![0i64; map.batch * map.dim];
    for (b, image_out) in out.chunks_mut(map.dim).enumerate() {
        image_out
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(k, labels)| {
                let start = k * CHUNK;
                let range = start..start + labels.len();
                let mut best: Vec<T> = map.row(b, 0)[range.clone()].to_vec();
                for c in 1..map.classes {
                    for ((p, top), label) in map.row(b, c)[range.clone()]
                        .iter()
                        .zip(&mut best)
                        .zip(labels.iter_mut())
                    {
                        if *p > *top {
                            *top = *p;
                            *label = c as i64;
                        }
                    }
                }
            });
    }
    out
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
