//! The RMA volume search without sorting the row.
//!
//! The optimal mask of a row is a threshold set {p > lambda}; only the pixels whose
//! probability is close to lambda decide where exactly the cut falls. So instead of
//! sorting the row, we bin it by value (one pass), evaluate the objective exactly at every
//! bin boundary, bound it inside every bin, and sort only the bins whose bound comes within
//! rounding distance of the best boundary (recursively re-binned while they are large).
//! The survivors are scored in the input's precision exactly as rankseg 0.0.8 scores them,
//! so the first argmax agrees with its full sort, ties included.

use rayon::prelude::*;

use super::float::Prob;
use super::objective::RmaObjective;
use super::torch_sort::torch_tie_order;

const BINS: usize = 1024;
/// Candidate sets at most this large are sorted rather than re-binned.
const SORT_LIMIT: usize = 4096;
const MAX_LEVELS: usize = 4;
/// Fixed chunking keeps f64 partial sums, and so the output, independent of thread count.
pub const CHUNK: usize = 1 << 15;

/// Values only (their order among ties cannot matter), largest first: a radix sort.
pub fn sorted_descending<T: Prob>(mut values: Vec<T>) -> Vec<T> {
    radsort::sort(&mut values);
    values.reverse();
    values
}

/// The pixels a row selects: every `p > value`, and of the pixels equal to `value` either
/// all or, when the cut runs through them, those listed in `ties` (sorted indices).
#[derive(Clone, Debug, PartialEq)]
pub struct Cut<T> {
    pub value: T,
    pub ties: Option<Box<[u32]>>,
}

impl<T: Prob> Cut<T> {
    /// The first `volume` pixels of `row` in torch's descending sort order, where the
    /// `volume`-th largest value is `value` and `split` says whether more pixels equal to
    /// it are left out: then which of them are kept is torch's unstable sort's choice.
    pub fn top(row: &[T], volume: usize, value: T, split: bool) -> Self {
        if !split {
            return Cut { value, ties: None };
        }
        // torch's order puts every larger value first, then the equal ones in its order.
        let larger = row.iter().filter(|&&p| p > value).count();
        let mut ties = torch_tie_order(row, value);
        ties.truncate(volume - larger);
        ties.sort_unstable();
        Cut {
            value,
            ties: Some(ties.into()),
        }
    }

    /// The first `volume` (> 0) pixels in torch's descending order, given the row's values
    /// in descending order (at least through position `volume`, where the row has it).
    pub fn top_of_sorted(row: &[T], sorted: &[T], volume: usize) -> Self {
        let value = sorted[volume - 1];
        Cut::top(row, volume, value, sorted.get(volume) == Some(&value))
    }

    /// The selection of `row` as 0/1 values.
    pub fn write_mask<M: From<bool>>(&self, row: &[T], out: &mut [M]) {
        for (i, (m, &p)) in out.iter_mut().zip(row).enumerate() {
            *m = M::from(self.selects(i, p));
        }
    }

    #[inline]
    pub fn selects(&self, index: usize, p: T) -> bool {
        (p > self.value)
            | (p == self.value
                && self
                    .ties
                    .as_ref()
                    .is_none_or(|t| t.binary_search(&(index as u32)).is_ok()))
    }
}

#[derive(Clone, Copy)]
struct Bin {
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
}

impl Bin {
    const EMPTY: Bin = Bin {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    fn merge(&mut self, other: &Bin) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// The value range a level of the search bins: equal-width bins over `[lo, hi]`,
/// largest values first, so that equal values share a bin and bin order is value order.
/// Values above `hi` are already counted in the prefix; values below `lo` are past the
/// candidates, except at the top level, where they share one last bin (`tail`). At the
/// top level the values above `head` (a hint: probably all selected) share one first
/// bin, so that only the pixels between `lo` and `head` pay for binning.
#[derive(Clone, Copy)]
struct Window {
    lo: f64,
    hi: f64,
    tail: bool,
    head: f64,
}

impl Window {
    /// The bounds in the input precision. They are data values, or at the top a hint
    /// rounded to the input precision, so comparing in either precision agrees.
    fn bounds<T: Prob>(&self) -> (T, T) {
        (T::from_f64(self.lo), T::from_f64(self.hi))
    }

    /// The row's values in the window with their indices, in index order. Blocks with
    /// no value in it are skipped after one vectorised test (values are in [0, 1], so
    /// with the tail the window is everything up to `hi`).
    fn members<T: Prob>(&self, row: &[T]) -> Vec<(T, u32)> {
        let (lo, hi) = self.bounds::<T>();
        let lo = if self.tail { T::ZERO } else { lo };
        let mut members = Vec::new();
        for (block, first) in row.chunks(SKIP_BLOCK).zip((0u32..).step_by(SKIP_BLOCK)) {
            if any_inside(block, lo, hi) {
                let inside = (first..).zip(block).filter(|&(_, &p)| p >= lo && p <= hi);
                members.extend(inside.map(|(i, &p)| (p, i)));
            }
        }
        members
    }

    /// One pass over the row; partial histograms of fixed chunks, merged in order. Only
    /// the pixels inside `[lo, min(hi, head)]` are binned (most pixels fall outside: they
    /// cost a vectorised test per block); those above `head` are counted into the first
    /// bin by a vectorised pass. The top level's tail, everything below `lo`, is the rest
    /// of the row: `len` pixels of mass `mu` in all, none above `hi`.
    fn histogram<T: Prob>(&self, row: &[T], mu: f64) -> Vec<Bin> {
        let top = self.hi.min(self.head);
        let scale = BINS as f64 / (top - self.lo);
        let (lo, hi) = (T::from_f64(self.lo), T::from_f64(top));
        let headed = self.head < self.hi;
        let partials: Vec<(Bin, Vec<Bin>)> = row
            .par_chunks(CHUNK)
            .map(|chunk| {
                let head = if headed { above(chunk, hi) } else { Bin::EMPTY };
                let mut bins = vec![Bin::EMPTY; BINS];
                for block in chunk.chunks(SKIP_BLOCK) {
                    if !any_inside(block, lo, hi) {
                        continue;
                    }
                    for &p in block {
                        if p > hi || p < lo {
                            continue;
                        }
                        let p = p.to_f64();
                        let j = (((top - p) * scale) as usize).min(BINS - 1);
                        let bin = &mut bins[j];
                        bin.count += 1;
                        bin.sum += p;
                        // Plain comparisons: the values are finite (checked), and
                        // `f64::min`'s NaN handling costs a third of this loop.
                        bin.min = if p < bin.min { p } else { bin.min };
                        bin.max = if p > bin.max { p } else { bin.max };
                    }
                }
                (head, bins)
            })
            .collect();
        let mut bins = vec![Bin::EMPTY; BINS + 2];
        for (head, partial) in &partials {
            bins[0].merge(head);
            for (bin, other) in bins[1..].iter_mut().zip(partial) {
                bin.merge(other);
            }
        }
        if self.tail {
            bins[BINS + 1] = self.tail_bin::<T>(&bins, row.len(), mu);
        }
        bins
    }

    /// The pixels below `lo`, from the row's totals: their count and mass exactly and
    /// approximately (the mass in another summation order, which only the screening sees),
    /// their values bounded by [0, the largest input-precision value below `lo`]: a bound
    /// is all the interior bound needs (and, being a value, it can bound the next level's
    /// window), and a cut after the tail selects the whole row, i.e. every `p >= 0`.
    fn tail_bin<T: Prob>(&self, bins: &[Bin], len: usize, mu: f64) -> Bin {
        let count = len - bins.iter().map(|b| b.count).sum::<usize>();
        if count == 0 {
            return Bin::EMPTY;
        }
        let sum = mu - bins.iter().map(|b| b.sum).sum::<f64>();
        Bin {
            count,
            sum: sum.max(0.0),
            min: 0.0,
            max: T::from_f64(self.lo).next_down().to_f64().max(0.0),
        }
    }
}

/// Values per block that the histogram skips whole when none of them is in the window
/// (most blocks of a row lie below it).
const SKIP_BLOCK: usize = 64;

/// The values of `chunk` above `head` as one bin: sixteen lanes, merged in a fixed order,
/// vectorised.
fn above<T: Prob>(chunk: &[T], head: T) -> Bin {
    #[inline(always)]
    fn lanes<T: Prob>(chunk: &[T], head: T) -> Bin {
        const LANES: usize = 16;
        let (mut count, mut sum) = ([0u32; LANES], [0.0f64; LANES]);
        let (mut min, mut max) = ([T::ONE; LANES], [T::ZERO; LANES]);
        let body = chunk.chunks_exact(LANES);
        let rest = body.remainder();
        let mut add = |j: usize, p: T| {
            let inside = p > head;
            count[j] += inside as u32;
            min[j] = if inside & (p < min[j]) { p } else { min[j] };
            max[j] = if inside & (p > max[j]) { p } else { max[j] };
        };
        for values in body.clone() {
            for (j, &p) in values.iter().enumerate() {
                add(j, p);
            }
        }
        for (j, &p) in rest.iter().enumerate() {
            add(j, p);
        }
        // The f64 sums in a loop of their own: mixed with the input-precision lanes, the
        // compiler does not vectorise them (p or +0.0 by masking its bits: no branch).
        let mut add_mass = |j: usize, p: T| {
            let keep = u64::from(p > head).wrapping_neg();
            sum[j] += f64::from_bits(p.to_f64().to_bits() & keep);
        };
        for values in body {
            for (j, &p) in values.iter().enumerate() {
                add_mass(j, p);
            }
        }
        for (j, &p) in rest.iter().enumerate() {
            add_mass(j, p);
        }
        let mut bin = Bin::EMPTY;
        for j in 0..LANES {
            if count[j] > 0 {
                bin.merge(&Bin {
                    count: count[j] as usize,
                    sum: sum[j],
                    min: min[j].to_f64(),
                    max: max[j].to_f64(),
                });
            }
        }
        bin
    }
    crate::simd::vectorized(
        #[inline(always)]
        move || lanes(chunk, head),
    )
}

/// Whether any value of `block` lies in `[lo, hi]`: branch-free, vectorised.
#[inline]
fn any_inside<T: Prob>(block: &[T], lo: T, hi: T) -> bool {
    crate::simd::vectorized(
        #[inline(always)]
        move || block.iter().fold(false, |any, &p| any | ((p >= lo) & (p <= hi))),
    )
}

/// A volume the search scores: `t` pixels of prefix mass `s`, ending at `end`.
#[derive(Clone, Copy)]
struct Point<T> {
    t: usize,
    s: f64,
    end: End<T>,
}

#[derive(Clone, Copy)]
enum End<T> {
    Empty,
    /// After a whole bin: everything at least this value.
    Bin(T),
    /// After position `k` of the sorted candidates.
    Sorted(usize),
}

/// The best cut of one row (`None`: select nothing). `mu` is the row's mass in f64 and
/// `mu_t` the same mass as torch sums it (see `torch_sum`); below `floor` pixels are
/// probably never selected: the top level bins them together and looks into them only if
/// their bound says they might matter.
pub fn optimal_cut<T: Prob>(
    row: &[T],
    max: T,
    (mu, mu_t): (f64, T),
    floor: f64,
    objective: &RmaObjective,
) -> Option<Cut<T>> {
    let mut points = vec![Point {
        t: 0,
        s: 0.0,
        end: End::Empty,
    }];
    let mut best = objective.exact(0.0, 0.0, mu);
    let (mut t0, mut s0) = (0usize, 0.0f64);
    let mut in_window = row.len();
    let mut window = if in_window <= SORT_LIMIT {
        Window {
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
            tail: false,
            head: f64::INFINITY,
        }
    } else {
        let hi = max.to_f64();
        // The hint rounded to the input precision (still a hint), so that the histogram's
        // comparisons in that precision split the row exactly where the f64 bound does.
        let lo = if (0.0..hi).contains(&floor) {
            T::from_f64(floor).to_f64().min(hi)
        } else {
            0.0
        };
        // Rounded like `lo`, and never below it.
        let head = objective
            .likely_selected_above()
            .map_or(f64::INFINITY, |head| T::from_f64(head).to_f64().max(lo));
        Window {
            lo,
            hi,
            tail: true,
            head,
        }
    };
    for _level in 0..MAX_LEVELS {
        if in_window <= SORT_LIMIT || window.hi <= window.lo {
            break;
        }
        let bins = window.histogram(row, mu);

        // Every bin boundary is an exactly known volume.
        let mut spans = Vec::new();
        let (mut t, mut s) = (t0, s0);
        for (j, bin) in bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
            spans.push((j, t, s));
            t += bin.count;
            s += bin.sum;
            points.push(Point {
                t,
                s,
                end: End::Bin(T::from_f64(bin.min)),
            });
            best = best.max(objective.exact(t as f64, s, mu));
        }
        let worth = best - objective.margin::<T>(best);
        let candidates: Vec<&(usize, usize, f64)> = spans
            .iter()
            .filter(|(j, t, s)| {
                bins[*j].count > 1 && interior_bound(objective, mu, *t, *s, &bins[*j]) >= worth
            })
            .collect();
        let (Some(first), Some(last)) = (candidates.first(), candidates.last()) else {
            return best_cut(row, points, &[], objective, mu_t);
        };
        (t0, s0) = (first.1, first.2);
        window = Window {
            lo: bins[last.0].min,
            hi: bins[first.0].max,
            tail: false,
            head: f64::INFINITY,
        };
        in_window = bins[first.0..=last.0].iter().map(|b| b.count).sum();
    }

    // Sort the candidates and score every volume among them.
    let mut sorted = window.members(row);
    sorted.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    let mut s = s0;
    for (k, (p, _)) in sorted.iter().enumerate() {
        s += p.to_f64();
        points.push(Point {
            t: t0 + k + 1,
            s,
            end: End::Sorted(k),
        });
    }
    best_cut(row, points, &sorted, objective, mu_t)
}

/// An upper bound of the objective at the volumes strictly inside a bin that starts at
/// volume `t` with prefix mass `s`. Inside the bin the prefix mass lies below both
/// `s + k max` and `s_end - (n - k) min`; on each of these lines the objective is a ratio
/// of linear functions of `k`, monotone, so its maximum sits at an end of the line.
fn interior_bound(objective: &RmaObjective, mu: f64, t: usize, s: f64, bin: &Bin) -> f64 {
    let n = bin.count as f64;
    let s_end = s + bin.sum;
    let cross = if bin.max > bin.min {
        ((s_end - s - n * bin.min) / (bin.max - bin.min)).clamp(1.0, n - 1.0)
    } else {
        1.0
    };
    let t = t as f64;
    [1.0, cross.floor().max(1.0), cross.ceil().min(n - 1.0), n - 1.0]
        .iter()
        .map(|&k| objective.exact(t + k, (s + k * bin.max).min(s_end - (n - k) * bin.min), mu))
        .fold(f64::NEG_INFINITY, f64::max)
        + objective.volume_slack(t + 1.0, t + n - 1.0, mu)
}

/// The first volume (smallest `t`) whose score in the input's precision is the largest.
fn best_cut<T: Prob>(
    row: &[T],
    mut points: Vec<Point<T>>,
    sorted: &[(T, u32)],
    objective: &RmaObjective,
    mu_t: T,
) -> Option<Cut<T>> {
    points.sort_by_key(|point| point.t);
    let mut winner = points[0];
    let mut winning = objective.in_precision(0, T::ZERO, mu_t);
    for point in &points[1..] {
        let score = objective.in_precision(point.t, T::from_f64(point.s), mu_t);
        if score > winning {
            winning = score;
            winner = *point;
        }
    }
    match winner.end {
        End::Empty => None,
        End::Bin(value) => Some(Cut { value, ties: None }),
        End::Sorted(k) => {
            let value = sorted[k].0;
            let split = sorted.get(k + 1).is_some_and(|&(next, _)| next == value);
            Some(Cut::top(row, winner.t, value, split))
        }
    }
}
