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
use super::torch_sum::{torch_sum, TorchSum};
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
        let image_map = map.image(b);
        // Row masses as rankseg divides by them: known for active rows; the all-pruned
        // fallback needs every class's.
        let masses = search.torch_mass[rows.clone()]
            .iter()
            .enumerate()
            .map(|(c, mass)| mass.unwrap_or_else(|| torch_sum(image_map.row(0, c))))
            .collect();
        let image = ImageSelection {
            map: image_map,
            cuts: &search.cuts[rows.clone()],
            masses,
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

/// Per pixel: how many classes selected it, and (when one did) which.
pub(super) struct Selections {
    pub count: Vec<u32>,
    pub first: Vec<u32>,
}

/// The selections of one image's rows (`cuts[c]` for class c): class by class over
/// fixed chunks of pixels, so each class's row is read contiguously.
pub(super) fn selections<T: Prob>(map: &ProbMap<T>, cuts: &[Option<super::Cut<T>>]) -> Selections {
    let dim = map.dim;
    let mut count = vec![0u32; dim];
    let mut first = vec![0u32; dim];
    count
        .par_chunks_mut(CHUNK)
        .zip(first.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(k, (count, first))| {
            let start = k * CHUNK;
            for (c, cut) in cuts.iter().enumerate() {
                let Some(cut) = cut else { continue };
                let row = &map.row(0, c)[start..start + count.len()];
                for (i, (&p, (count, owner))) in
                    row.iter().zip(count.iter_mut().zip(first.iter_mut())).enumerate()
                {
                    let selected = cut.selects(start + i, p);
                    *count += selected as u32;
                    // Only read where exactly one class selected the pixel.
                    *owner = if selected { c as u32 } else { *owner };
                }
            }
        });
    Selections { count, first }
}

impl<'a, T: Prob> ImageSelection<'a, T> {
    fn selecting_classes(&self) -> impl Iterator<Item = (usize, &super::Cut<T>)> + '_ {
        self.cuts
            .iter()
            .enumerate()
            .filter_map(|(c, cut)| cut.as_ref().map(|cut| (c, cut)))
    }

    /// Count and mass of the pixels each class owns alone, the mass summed as torch sums
    /// `(probs * owned_alone).sum(-1)`. One pass for all classes: every class's sum
    /// sees the same group structure, and a pixel adds to its owner's sum only (adding
    /// the other classes' zeros would change nothing).
    fn sole_owners(&self, sel: &Selections) -> (Vec<T>, Vec<T>) {
        let classes = self.map.classes;
        let dim = self.map.dim;
        let mut count = vec![0usize; classes];
        let mut sums = vec![TorchSum::<T>::new(dim); classes];
        let group = TorchSum::<T>::group_len();
        let whole = TorchSum::<T>::groups(dim) * group;
        let selecting: Vec<usize> = self.selecting_classes().map(|(c, _)| c).collect();
        for start in (0..whole).step_by(group) {
            for i in start..start + group {
                if sel.count[i] == 1 {
                    let c = sel.first[i] as usize;
                    count[c] += 1;
                    sums[c].add(i - start, self.map.row(0, c)[i]);
                }
            }
            for &c in &selecting {
                sums[c].end_group();
            }
        }
        let mut rest = vec![vec![T::ZERO; dim - whole]; classes];
        for i in whole..dim {
            if sel.count[i] == 1 {
                let c = sel.first[i] as usize;
                count[c] += 1;
                rest[c][i - whole] = self.map.row(0, c)[i];
            }
        }
        let masses = sums
            .into_iter()
            .zip(&rest)
            .map(|(sum, rest)| sum.finish(rest))
            .collect();
        (count.into_iter().map(T::from_count).collect(), masses)
    }

    fn assign(&self, labels: &mut [i64], objective: &RmaObjective, unassigned: &[usize], void_index: i64) {
        let sel = selections(&self.map, self.cuts);
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
