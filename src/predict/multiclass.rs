//! From per-class RMA masks to one class per pixel.
//!
//! A pixel selected by one class takes it. A pixel selected by several takes, among
//! them, the class whose score grows most by owning it (its incremental score, given the
//! pixels each class owns alone). A pixel selected by none takes the active class with
//! the largest incremental score (`max_score`; every class if none is active in the image)
//! or the void index (`void`).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::rma::RmaSearch;
use super::volume::CHUNK;
use super::{ProbMap, UnassignedPolicy};

pub fn resolve<T: Prob>(
    map: &ProbMap<T>,
    search: &RmaSearch<T>,
    objective: &RmaObjective,
    policy: UnassignedPolicy,
    void_index: i64,
) -> Vec<i64> {
    let mut out = vec![0i64; map.batch * map.dim];
    for (b, labels) in out.chunks_mut(map.dim).enumerate() {
        let rows = b * map.classes..(b + 1) * map.classes;
        let image = ImageSelection {
            map: map.image(b),
            cuts: &search.cuts[rows.clone()],
            masses: search.stats[rows.clone()]
                .iter()
                .map(|s| T::from_f64(s.mass))
                .collect(),
        };
        let unassigned: Vec<usize> = match policy {
            UnassignedPolicy::Void => Vec::new(),
            UnassignedPolicy::MaxScore => {
                let active: Vec<usize> = (0..map.classes)
                    .filter(|&c| search.active[rows.start + c])
                    .collect();
                if active.is_empty() {
                    (0..map.classes).collect()
                } else {
                    active
                }
            }
        };
        image.assign(labels, objective, &unassigned, void_index);
    }
    out
}

struct ImageSelection<'a, T> {
    map: ProbMap<'a, T>,
    cuts: &'a [Option<super::Cut<T>>],
    masses: Vec<T>,
}

/// Per pixel: how many classes selected it, and the first of them.
struct Selections {
    count: Vec<u32>,
    first: Vec<u32>,
}

impl<'a, T: Prob> ImageSelection<'a, T> {
    fn selecting_classes(&self) -> impl Iterator<Item = (usize, &super::Cut<T>)> + '_ {
        self.cuts
            .iter()
            .enumerate()
            .filter_map(|(c, cut)| cut.as_ref().map(|cut| (c, cut)))
    }

    fn selections(&self) -> Selections {
        let dim = self.map.dim;
        let mut count = vec![0u32; dim];
        let mut first = vec![0u32; dim];
        count
            .par_chunks_mut(CHUNK)
            .zip(first.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (count, first))| {
                let start = k * CHUNK;
                for (c, cut) in self.selecting_classes() {
                    let row = &self.map.row(0, c)[start..start + count.len()];
                    for (i, &p) in row.iter().enumerate() {
                        if cut.selects(start + i, p) {
                            if count[i] == 0 {
                                first[i] = c as u32;
                            }
                            count[i] += 1;
                        }
                    }
                }
            });
        Selections { count, first }
    }

    /// Count and mass of the pixels each class owns alone (fixed chunks, merged in order).
    fn sole_owners(&self, sel: &Selections) -> (Vec<T>, Vec<T>) {
        let classes = self.map.classes;
        let partials: Vec<(Vec<usize>, Vec<f64>)> = sel
            .count
            .par_chunks(CHUNK)
            .zip(sel.first.par_chunks(CHUNK))
            .enumerate()
            .map(|(k, (count, first))| {
                let (mut n, mut mass) = (vec![0usize; classes], vec![0f64; classes]);
                for (i, (&cnt, &c)) in count.iter().zip(first).enumerate() {
                    if cnt == 1 {
                        n[c as usize] += 1;
                        mass[c as usize] += self.map.row(0, c as usize)[k * CHUNK + i].to_f64();
                    }
                }
                (n, mass)
            })
            .collect();
        let (mut n, mut mass) = (vec![0usize; classes], vec![0f64; classes]);
        for (pn, pm) in &partials {
            for c in 0..classes {
                n[c] += pn[c];
                mass[c] += pm[c];
            }
        }
        (
            n.into_iter().map(T::from_count).collect(),
            mass.into_iter().map(T::from_f64).collect(),
        )
    }

    fn assign(&self, labels: &mut [i64], objective: &RmaObjective, unassigned: &[usize], void_index: i64) {
        let sel = self.selections();
        let (owned, owned_mass) = self.sole_owners(&sel);
        let score = |c: usize, i: usize| {
            objective.increment(self.map.row(0, c)[i], owned[c], owned_mass[c], self.masses[c])
        };
        // The first class with the largest score, as torch's argmax over classes.
        let best = |i: usize, candidates: &mut dyn Iterator<Item = usize>| {
            let first = candidates
                .next()
                .expect("a pixel has at least one candidate class");
            let (mut winner, mut top) = (first, score(first, i));
            for c in candidates {
                let s = score(c, i);
                if s > top {
                    (winner, top) = (c, s);
                }
            }
            winner as i64
        };
        labels.par_chunks_mut(CHUNK).enumerate().for_each(|(k, labels)| {
            for (j, label) in labels.iter_mut().enumerate() {
                let i = k * CHUNK + j;
                *label = match sel.count[i] {
                    1 => sel.first[i] as i64,
                    0 if unassigned.is_empty() => void_index,
                    0 => best(i, &mut unassigned.iter().copied()),
                    _ => best(
                        i,
                        &mut self
                            .selecting_classes()
                            .filter(|(c, cut)| cut.selects(i, self.map.row(0, *c)[i]))
                            .map(|(c, _)| c),
                    ),
                };
            }
        });
    }
}
