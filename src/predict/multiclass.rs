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
use super::torch_sum::{torch_sum, TorchSum, MAX_GROUP_LEN};
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

/// Pixels per task of the per-pixel passes: a task's counters and running scores stay in
/// L1 while each class's row streams past them (fixed, so the split is thread-independent).
const PIXELS: usize = 4096;

/// The selections of one image's rows (`cuts[c]` for class c): class by class over
/// fixed chunks of pixels, so each class's row is read contiguously.
pub(super) fn selections<T: Prob>(map: &ProbMap<T>, cuts: &[Option<super::Cut<T>>]) -> Selections {
    let dim = map.dim;
    let mut count = vec![0u32; dim];
    let mut first = vec![0u32; dim];
    count
        .par_chunks_mut(PIXELS)
        .zip(first.par_chunks_mut(PIXELS))
        .enumerate()
        .for_each(|(k, (count, first))| {
            let start = k * PIXELS;
            for (c, cut) in cuts.iter().enumerate() {
                let Some(cut) = cut else { continue };
                let row = &map.row(0, c)[start..start + count.len()];
                if cut.ties.is_none() {
                    // No tie list: the test is one comparison, and the loop vectorises.
                    let value = cut.value;
                    mark(row, count, first, c as u32, |_, p| p >= value);
                } else {
                    mark(row, count, first, c as u32, |i, p| cut.selects(start + i, p));
                }
            }
        });
    Selections { count, first }
}

/// Counts the pixels of `row` that `selects` (given index and value) in `count`, and
/// makes `class` their owner.
#[inline(always)]
fn mark<T: Prob>(
    row: &[T],
    count: &mut [u32],
    owner: &mut [u32],
    class: u32,
    selects: impl Fn(usize, T) -> bool,
) {
    for (i, (&p, (n, o))) in row.iter().zip(count.iter_mut().zip(owner.iter_mut())).enumerate() {
        let selected = selects(i, p);
        *n += selected as u32;
        // Only read where exactly one class selected the pixel.
        *o = if selected { class } else { *o };
    }
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
        let selecting: Vec<usize> = self.selecting_classes().map(|(c, _)| c).collect();
        // One pass per selecting class, in parallel, beats one serial pass over all
        // classes while the classes are few (binary maps, Cityscapes); ADE20K's 150 stay
        // on the serial pass.
        if selecting.len() > 4 * rayon::current_num_threads() {
            return self.sole_owners_serial(sel);
        }
        let per_class: Vec<(usize, T)> = selecting.par_iter().map(|&c| self.owned_alone(sel, c)).collect();
        let mut count = vec![T::ZERO; self.map.classes];
        let mut masses = vec![T::ZERO; self.map.classes];
        for (&c, &(n, mass)) in selecting.iter().zip(&per_class) {
            (count[c], masses[c]) = (T::from_count(n), mass);
        }
        (count, masses)
    }

    /// Count and mass of the pixels class `c` owns alone: torch's sum of the row times
    /// the 0/1 ownership mask, in whole groups (a vectorised pass).
    fn owned_alone(&self, sel: &Selections, c: usize) -> (usize, T) {
        let dim = self.map.dim;
        let row = self.map.row(0, c);
        let owned = |i: usize| sel.count[i] == 1 && sel.first[i] == c as u32;
        let group = TorchSum::<T>::group_len();
        let whole = TorchSum::<T>::groups(dim) * group;
        let mut sum = TorchSum::<T>::new(dim);
        let mut count = 0usize;
        let mut values = [T::ZERO; MAX_GROUP_LEN];
        let values = &mut values[..group];
        for start in (0..whole).step_by(group) {
            for (k, v) in values.iter_mut().enumerate() {
                let mine = owned(start + k);
                count += mine as usize;
                *v = if mine { row[start + k] } else { T::ZERO };
            }
            sum.add_group(values);
            sum.end_group();
        }
        let rest: Vec<T> = (whole..dim)
            .map(|i| if owned(i) { row[i] } else { T::ZERO })
            .collect();
        count += (whole..dim).filter(|&i| owned(i)).count();
        (count, sum.finish(&rest))
    }

    /// `sole_owners` in one serial pass over the pixels for all classes at once.
    fn sole_owners_serial(&self, sel: &Selections) -> (Vec<T>, Vec<T>) {
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
        let mut may_take_unassigned = vec![false; self.map.classes];
        for &c in unassigned {
            may_take_unassigned[c] = true;
        }
        // Every class a contested pixel may go to, in class order.
        let candidates: Vec<usize> = (0..self.map.classes)
            .filter(|&c| may_take_unassigned[c] || self.cuts[c].is_some())
            .collect();
        labels.par_chunks_mut(PIXELS).enumerate().for_each(|(k, labels)| {
            let start = k * PIXELS;
            let mut contested: Vec<usize> = Vec::new();
            for (j, label) in labels.iter_mut().enumerate() {
                let i = start + j;
                match sel.count[i] {
                    1 => *label = i64::from(sel.first[i]),
                    0 if unassigned.is_empty() => *label = void_index,
                    _ => contested.push(i),
                }
            }
            if contested.is_empty() {
                return;
            }
            // The first class with the largest score, as torch's argmax over classes: class
            // by class over the contested pixels, so each class's constants are computed once
            // (the same operations in the same precision, hoisted out of the pixel loop).
            let mut top = vec![T::ZERO; contested.len()];
            let mut winner = vec![None; contested.len()];
            for &c in &candidates {
                let row = self.map.row(0, c);
                let (count, mass, mu) = (owned[c], owned_mass[c], self.masses[c]);
                let cut = self.cuts[c].as_ref();
                for ((&i, top), winner) in contested.iter().zip(&mut top).zip(&mut winner) {
                    let p = row[i];
                    let eligible = if sel.count[i] == 0 {
                        may_take_unassigned[c]
                    } else {
                        cut.is_some_and(|cut| cut.selects(i, p))
                    };
                    if eligible {
                        let score = objective.increment(p, count, mass, mu);
                        if winner.is_none() || score > *top {
                            (*top, *winner) = (score, Some(c));
                        }
                    }
                }
            }
            for (&i, winner) in contested.iter().zip(&winner) {
                let winner = winner.expect("a contested pixel has at least one candidate class");
                labels[i - start] = winner as i64;
            }
        });
    }
}
