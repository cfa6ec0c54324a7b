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

const BINS: usize = 1024;
/// Candidate sets at most this large are sorted rather than re-binned.
const SORT_LIMIT: usize = 4096;
const MAX_LEVELS: usize = 4;
/// Fixed chunking keeps f64 partial sums, and so the output, independent of thread count.
pub const CHUNK: usize = 1 << 15;

/// The pixels a row selects: every `p > value`, plus the pixels equal to `value` whose
/// index is below `tie_end` (a cut through a run of ties keeps the lowest indices).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut<T> {
    pub value: T,
    pub tie_end: usize,
}

impl<T: Prob> Cut<T> {
    #[inline]
    pub fn selects(&self, index: usize, p: T) -> bool {
        p > self.value || (p == self.value && index < self.tie_end)
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

/// Bins of equal width over `[hi - BINS / scale, hi]`, largest values first, so that equal
/// values always share a bin and bin order is value order.
#[derive(Clone, Copy)]
struct Binning {
    hi: f64,
    scale: f64,
}

impl Binning {
    #[inline]
    fn of(&self, p: f64) -> usize {
        (((self.hi - p) * self.scale) as usize).min(BINS - 1)
    }

    fn histogram<T: Prob>(&self, values: &[T]) -> Vec<Bin> {
        let partials: Vec<Vec<Bin>> = values
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut bins = vec![Bin::EMPTY; BINS];
                for &p in chunk {
                    let p = p.to_f64();
                    let bin = &mut bins[self.of(p)];
                    bin.count += 1;
                    bin.sum += p;
                    bin.min = bin.min.min(p);
                    bin.max = bin.max.max(p);
                }
                bins
            })
            .collect();
        let mut bins = vec![Bin::EMPTY; BINS];
        for partial in &partials {
            for (bin, other) in bins.iter_mut().zip(partial) {
                bin.merge(other);
            }
        }
        bins
    }
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
    /// After position `k` of the sorted survivors.
    Sorted(usize),
}

/// The best cut of one row (`None`: select nothing). `mu` is the row's mass in f64.
pub fn optimal_cut<T: Prob>(row: &[T], max: T, mu: f64, objective: &RmaObjective) -> Option<Cut<T>> {
    let mut points = vec![Point {
        t: 0,
        s: 0.0,
        end: End::Empty,
    }];
    let mut best = objective.exact(0.0, 0.0, mu);

    // The survivors: at first the whole row, later the pixels of the candidate bins.
    let mut survivors: Option<(Vec<T>, Vec<u32>)> = None;
    let (mut t0, mut s0) = (0usize, 0.0f64);
    let (mut lo, mut hi) = (0.0f64, max.to_f64());
    for _level in 0..MAX_LEVELS {
        let values: &[T] = survivors.as_ref().map_or(row, |(v, _)| v.as_slice());
        if values.len() <= SORT_LIMIT || hi <= lo {
            break;
        }
        let binning = Binning {
            hi,
            scale: BINS as f64 / (hi - lo),
        };
        let bins = binning.histogram(values);

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
        let floor = best - objective.margin::<T>(best);
        let candidates: Vec<&(usize, usize, f64)> = spans
            .iter()
            .filter(|(j, t, s)| {
                bins[*j].count > 1 && interior_bound(objective, mu, *t, *s, &bins[*j]) >= floor
            })
            .collect();
        let (Some(first), Some(last)) = (candidates.first(), candidates.last()) else {
            return best_cut(points, survivors, objective, mu);
        };
        (t0, s0) = (first.1, first.2);
        hi = bins[first.0].max;
        lo = bins[last.0].min;
        let keep = first.0..=last.0;
        survivors = Some(match &survivors {
            None => gather(row.iter().copied().zip(0u32..), |p| keep.contains(&binning.of(p))),
            Some((v, i)) => gather(v.iter().copied().zip(i.iter().copied()), |p| {
                keep.contains(&binning.of(p))
            }),
        });
    }

    // Sort the survivors and score every volume among them.
    let (values, indices) = survivors.get_or_insert_with(|| (row.to_vec(), (0..row.len() as u32).collect()));
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (pa, pb) = (values[a as usize], values[b as usize]);
        pb.partial_cmp(&pa)
            .unwrap()
            .then(indices[a as usize].cmp(&indices[b as usize]))
    });
    let sorted_values: Vec<T> = order.iter().map(|&k| values[k as usize]).collect();
    let sorted_indices: Vec<u32> = order.iter().map(|&k| indices[k as usize]).collect();
    let mut s = s0;
    for (k, p) in sorted_values.iter().enumerate() {
        s += p.to_f64();
        points.push(Point {
            t: t0 + k + 1,
            s,
            end: End::Sorted(k),
        });
    }
    *values = sorted_values;
    *indices = sorted_indices;
    best_cut(points, survivors, objective, mu)
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

fn gather<T: Prob>(items: impl Iterator<Item = (T, u32)>, keep: impl Fn(f64) -> bool) -> (Vec<T>, Vec<u32>) {
    items.filter(|(p, _)| keep(p.to_f64())).unzip()
}

/// The first volume (smallest `t`) whose score in the input's precision is the largest.
fn best_cut<T: Prob>(
    mut points: Vec<Point<T>>,
    sorted: Option<(Vec<T>, Vec<u32>)>,
    objective: &RmaObjective,
    mu: f64,
) -> Option<Cut<T>> {
    let mu_t = T::from_f64(mu);
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
        End::Bin(value) => Some(Cut {
            value,
            tie_end: usize::MAX,
        }),
        End::Sorted(k) => {
            let (values, indices) = sorted.expect("sorted survivors exist for a sorted end");
            let value = values[k];
            let cuts_through_ties = values.get(k + 1) == Some(&value);
            let tie_end = if cuts_through_ties {
                indices[k] as usize + 1
            } else {
                usize::MAX
            };
            Some(Cut { value, tie_end })
        }
    }
}
