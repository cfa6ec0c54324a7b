//! From per-class RMA masks to one class per pixel.
//!
//! A pixel selected by one class takes it. A pixel selected by several takes, among
//! them, the class whose score grows most by owning it (its incremental score, given the
//! pixels each class owns alone). A pixel selected by none takes the active class with
//! the largest incremental score (`max_score`; every class if none is active in the image)
//! or the void index (`void`).

use rayon::prelude::*;

use super::float::Prob;
use super::objective::{Increment, RmaObjective};
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

/// Per pixel, who selected it: `NOBODY`, one class (its index) or `SEVERAL` classes. One
/// word per pixel, so the passes after the selection read half what a count and an owner
/// would take.
pub(super) struct Selections {
    pub owner: Vec<u32>,
}

/// No class selected the pixel.
pub(super) const NOBODY: u32 = u32::MAX;
/// At least two classes selected the pixel (class indices stay far below).
pub(super) const SEVERAL: u32 = u32::MAX - 1;

/// Pixels per task of the per-pixel passes: a task's counters and running scores stay in
/// L1 while each class's row streams past them (fixed, so the split is thread-independent).
const PIXELS: usize = 4096;

/// The selections of one image's rows (`cuts[c]` for class c): class by class over
/// fixed chunks of pixels, so each class's row is read contiguously.
pub(super) fn selections<T: Prob>(map: &ProbMap<T>, cuts: &[Option<super::Cut<T>>]) -> Selections {
    let mut owner = vec![NOBODY; map.dim];
    owner.par_chunks_mut(PIXELS).enumerate().for_each(|(k, owner)| {
        let start = k * PIXELS;
        for (c, cut) in cuts.iter().enumerate() {
            let Some(cut) = cut else { continue };
            let row = &map.row(0, c)[start..start + owner.len()];
            let (value, class) = (cut.value, c as u32);
            // One comparison per pixel, vectorised; with a tie list, the pixels equal to
            // the cut value are left to it.
            match &cut.ties {
                None => mark(row, owner, class, move |p| p >= value),
                Some(ties) => {
                    mark(row, owner, class, move |p| p > value);
                    let from = ties.partition_point(|&i| (i as usize) < start);
                    let to = ties.partition_point(|&i| (i as usize) < start + owner.len());
                    for &i in &ties[from..to] {
                        let o = &mut owner[i as usize - start];
                        *o = joined(*o, class);
                    }
                }
            }
        }
    });
    Selections { owner }
}

/// The owner code of a pixel that `class` selects, given its code so far.
#[inline(always)]
fn joined(owner: u32, class: u32) -> u32 {
    if owner == NOBODY {
        class
    } else {
        SEVERAL
    }
}

/// Adds `class` to the owners of the pixels of `row` that `selects` (given the value).
#[inline(always)]
fn mark<T: Prob>(row: &[T], owner: &mut [u32], class: u32, selects: impl Fn(T) -> bool) {
    // The slices go in as arguments of the compiled-again function, where the compiler
    // knows they do not overlap (captured by a closure, it would not, and would not
    // vectorise).
    #[inline(always)]
    fn each<T: Prob>(row: &[T], owner: &mut [u32], class: u32, selects: impl Fn(T) -> bool) {
        for (&p, o) in row.iter().zip(owner.iter_mut()) {
            *o = if selects(p) { joined(*o, class) } else { *o };
        }
    }
    crate::simd::vectorized(
        #[inline(always)]
        move || each(row, owner, class, selects),
    )
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
        // One pass per selecting class, in parallel, reads the selections once per class:
        // it beats one serial pass over all classes only while there is a thread per
        // class (binary maps); Cityscapes' and ADE20K's classes take the serial pass.
        if selecting.len() > rayon::current_num_threads() {
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
        let row = self.map.row(0, c);
        crate::simd::vectorized(
            #[inline(always)]
            move || owned_alone(row, &sel.owner, c as u32),
        )
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
                if sel.owner[i] < SEVERAL {
                    let c = sel.owner[i] as usize;
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
            if sel.owner[i] < SEVERAL {
                let c = sel.owner[i] as usize;
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
        let candidates: Vec<Candidate<T>> = (0..self.map.classes)
            .filter(|&c| may_take_unassigned[c] || self.cuts[c].is_some())
            .map(|c| Candidate {
                class: c,
                row: self.map.row(0, c),
                cut: self.cuts[c].as_ref(),
                takes_unassigned: may_take_unassigned[c],
                increment: objective.increment(owned[c], owned_mass[c], self.masses[c]),
            })
            .collect();
        labels.par_chunks_mut(PIXELS).enumerate().for_each(|(k, labels)| {
            let start = k * PIXELS;
            let owner = &sel.owner[start..start + labels.len()];
            let mut contested = 0;
            for (label, &o) in labels.iter_mut().zip(owner) {
                match o {
                    NOBODY if unassigned.is_empty() => *label = void_index,
                    NOBODY | SEVERAL => contested += 1,
                    class => *label = i64::from(class),
                }
            }
            if contested * DENSE_SHARE >= labels.len() {
                dense_winners(&candidates, start, owner, labels);
            } else if contested > 0 {
                sparse_winners(&candidates, start, owner, labels);
            }
        });
    }
}

/// A chunk's contested pixels are scored over the whole chunk, vectorised, once at least
/// one in this many is contested (pixels no class selected, under `max_score`, make whole
/// chunks contested).
const DENSE_SHARE: usize = 8;

/// A class that may win contested pixels: where its row is, what it selects, and its
/// score increment.
struct Candidate<'a, T> {
    class: usize,
    row: &'a [T],
    cut: Option<&'a super::Cut<T>>,
    takes_unassigned: bool,
    increment: Increment<T>,
}

impl<T: Prob> Candidate<'_, T> {
    /// Whether this class may take pixel `i` of value `p` whose owner code is `owner`
    /// (`NOBODY` or `SEVERAL`).
    #[inline]
    fn eligible(&self, i: usize, p: T, owner: u32) -> bool {
        if owner == NOBODY {
            self.takes_unassigned
        } else {
            self.cut.is_some_and(|cut| cut.selects(i, p))
        }
    }
}

/// The first class with the largest increment, as torch's argmax over classes, for the
/// contested pixels (owner `NOBODY` or `SEVERAL`) of the chunk at `start`, written to
/// `labels`: class by class over a list of them, so each class's row is read in order.
fn sparse_winners<T: Prob>(candidates: &[Candidate<T>], start: usize, owner: &[u32], labels: &mut [i64]) {
    let contested: Vec<usize> = (0..owner.len()).filter(|&j| owner[j] >= SEVERAL).collect();
    let mut top = vec![T::ZERO; contested.len()];
    let mut winner = vec![None; contested.len()];
    for candidate in candidates {
        for ((&j, top), winner) in contested.iter().zip(&mut top).zip(&mut winner) {
            let p = candidate.row[start + j];
            if candidate.eligible(start + j, p, owner[j]) {
                let score = candidate.increment.at(p);
                if winner.is_none() || score > *top {
                    (*top, *winner) = (score, Some(candidate.class));
                }
            }
        }
    }
    for (&j, winner) in contested.iter().zip(&winner) {
        if let Some(winner) = winner {
            labels[j] = *winner as i64;
        }
    }
}

/// `ImageSelection::owned_alone` on plain slices (inlined into the vectorised version).
#[inline(always)]
fn owned_alone<T: Prob>(row: &[T], owner: &[u32], c: u32) -> (usize, T) {
    let dim = row.len();
    let owned = |i: usize| owner[i] == c;
    let group = TorchSum::<T>::group_len();
    let whole = TorchSum::<T>::groups(dim) * group;
    let mut sum = TorchSum::<T>::new(dim);
    let mut owned_count = 0usize;
    let mut values = [T::ZERO; MAX_GROUP_LEN];
    let values = &mut values[..group];
    for (row, owner) in row[..whole].chunks_exact(group).zip(owner.chunks_exact(group)) {
        let mut mine = 0u32;
        for (v, (&p, &o)) in values.iter_mut().zip(row.iter().zip(owner)) {
            let owned = o == c;
            mine += owned as u32;
            *v = if owned { p } else { T::ZERO };
        }
        owned_count += mine as usize;
        sum.add_group(values);
        sum.end_group();
    }
    let rest: Vec<T> = (whole..dim)
        .map(|i| if owned(i) { row[i] } else { T::ZERO })
        .collect();
    owned_count += (whole..dim).filter(|&i| owned(i)).count();
    (owned_count, sum.finish(&rest))
}

/// No winner yet.
const NONE: u32 = u32::MAX;

/// One candidate's pass over a chunk in `dense_winners`.
struct ClassPass<T> {
    class: u32,
    /// The cut value, and whether it has a tie list (then only larger values are taken
    /// here).
    cut: Option<(T, bool)>,
    takes_unassigned: bool,
}

impl<T: Prob> ClassPass<T> {
    #[inline(always)]
    fn run(&self, row: &[T], owner: &[u32], top: &mut [T], winner: &mut [u32], score: impl Fn(T) -> T) {
        let (has_cut, (value, strict)) = (self.cut.is_some(), self.cut.unwrap_or((T::ZERO, false)));
        let (class, takes_unassigned) = (self.class, self.takes_unassigned);
        crate::simd::vectorized(
            #[inline(always)]
            move || {
                for (((&p, &o), top), winner) in
                    row.iter().zip(owner).zip(top.iter_mut()).zip(winner.iter_mut())
                {
                    let selected = has_cut & ((p > value) | (!strict & (p == value)));
                    let eligible = ((o == NOBODY) & takes_unassigned) | ((o == SEVERAL) & selected);
                    let score = score(p);
                    let better = eligible & ((*winner == NONE) | (score > *top));
                    *top = if better { score } else { *top };
                    *winner = if better { class } else { *winner };
                }
            },
        )
    }
}

/// `sparse_winners` over every pixel of the chunk, branch-free and vectorised: the
/// pixels equal to a cut value with a tie list are left to `Cut::selects` after each
/// class's pass, so the class order of the updates is kept.
fn dense_winners<T: Prob>(candidates: &[Candidate<T>], start: usize, owner: &[u32], labels: &mut [i64]) {
    let n = owner.len();
    let mut top = [T::ZERO; PIXELS];
    let mut winner = [NONE; PIXELS];
    let (top, winner) = (&mut top[..n], &mut winner[..n]);
    for candidate in candidates {
        let row = &candidate.row[start..start + n];
        let class = candidate.class as u32;
        let class_pass = ClassPass {
            class,
            cut: candidate.cut.map(|cut| (cut.value, cut.ties.is_some())),
            takes_unassigned: candidate.takes_unassigned,
        };
        let (top, winner) = (&mut *top, &mut *winner);
        // One loop per form of the increment, the form rebuilt from its fields inside it,
        // so that each is specialised and vectorises (one loop over `increment.at(p)` keeps
        // the match inside: measured 3x slower on the blocky ADE20K map).
        match candidate.increment {
            Increment::Dice { centre, scale } => class_pass.run(row, owner, top, winner, move |p| {
                Increment::Dice { centre, scale }.at(p)
            }),
            Increment::DiceSmoothed {
                denom,
                mass,
                product,
                base,
            } => class_pass.run(row, owner, top, winner, move |p| {
                Increment::DiceSmoothed {
                    denom,
                    mass,
                    product,
                    base,
                }
                .at(p)
            }),
            Increment::Constant(value) => class_pass.run(row, owner, top, winner, move |_| value),
            Increment::Iou { base, denom } => class_pass.run(row, owner, top, winner, move |p| {
                Increment::Iou { base, denom }.at(p)
            }),
            Increment::IouScaled {
                denom,
                kept,
                offset,
                smooth,
            } => class_pass.run(row, owner, top, winner, move |p| {
                Increment::IouScaled {
                    denom,
                    kept,
                    offset,
                    smooth,
                }
                .at(p)
            }),
        }
        if let Some(ties) = candidate.cut.and_then(|cut| cut.ties.as_deref()) {
            let first = ties.partition_point(|&i| (i as usize) < start);
            let last = ties.partition_point(|&i| (i as usize) < start + n);
            for &i in &ties[first..last] {
                let j = i as usize - start;
                if owner[j] == SEVERAL {
                    let score = candidate.increment.at(row[j]);
                    if winner[j] == NONE || score > top[j] {
                        (top[j], winner[j]) = (score, class);
                    }
                }
            }
        }
    }
    for ((label, &o), &winner) in labels.iter_mut().zip(owner).zip(winner.iter()) {
        if o >= SEVERAL && winner != NONE {
            *label = i64::from(winner);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::predict::{Cut, Metric};

    /// The vectorised dense pass and the per-pixel sparse pass give the same winners, for
    /// every form of the increment, with and without tie lists and unassigned takers.
    #[test]
    fn dense_and_sparse_winners_agree() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 1000;
        let objectives = [
            (Metric::Dice, 0.0),
            (Metric::Dice, 1.0),
            (Metric::Dice, 1e7),
            (Metric::Iou, 0.0),
            (Metric::Iou, 1e7),
        ];
        for (metric, smooth) in objectives {
            let objective = RmaObjective { metric, smooth };
            // Coarse values, so that pixels equal a cut value.
            let rows: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..n).map(|_| rng.random_range(0..=16) as f32 / 16.0).collect())
                .collect();
            let owner: Vec<u32> = (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => NOBODY,
                    1 => 2,
                    _ => SEVERAL,
                })
                .collect();
            let cuts: Vec<Option<Cut<f32>>> = (0..5)
                .map(|c| {
                    let value = rng.random_range(4..=12) as f32 / 16.0;
                    let ties = (c % 2 == 1).then(|| {
                        let equal = (0..n as u32).filter(|&i| rows[c][i as usize] == value);
                        equal
                            .filter(|_| rng.random_bool(0.5))
                            .collect::<Vec<u32>>()
                            .into()
                    });
                    (c != 3).then_some(Cut { value, ties })
                })
                .collect();
            let candidates: Vec<Candidate<f32>> = (0..5)
                .map(|c| Candidate {
                    class: c,
                    row: &rows[c],
                    cut: cuts[c].as_ref(),
                    takes_unassigned: c != 1,
                    increment: objective.increment(c as f32 * 10.0, c as f32 * 4.0, 50.0 + c as f32),
                })
                .collect();
            let (mut dense, mut sparse) = (vec![-1i64; n], vec![-1i64; n]);
            dense_winners(&candidates, 0, &owner, &mut dense);
            sparse_winners(&candidates, 0, &owner, &mut sparse);
            assert_eq!(dense, sparse, "{metric:?} smooth {smooth}");
            assert!(dense.iter().zip(&owner).any(|(&l, &o)| o == SEVERAL && l > 0));
        }
    }
}
