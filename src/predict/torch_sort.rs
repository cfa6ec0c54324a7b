//! torch's CPU sort, reproduced: libstdc++'s `std::sort` (introsort) of (value, index)
//! pairs, descending by value, as `torch.sort(descending=True)` runs it.
//!
//! The sort is not stable, so when rankseg's float32 argmax cuts through a run of equal
//! probabilities, which of them it keeps is decided by this algorithm's swaps. Only that
//! rare case calls it (one row, once).

use super::float::Prob;

const THRESHOLD: usize = 16;

type Item<T> = (T, u32);

#[inline]
fn before<T: Prob>(a: &Item<T>, b: &Item<T>) -> bool {
    a.0 > b.0
}

/// The indices of `row` in the order `torch.sort(row, descending=True)` returns them.
pub fn torch_sort_order<T: Prob>(row: &[T]) -> Vec<u32> {
    let mut items: Vec<Item<T>> = row.iter().copied().zip(0u32..).collect();
    let n = items.len();
    if n > 0 {
        let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop(&mut items, depth);
        final_insertion_sort(&mut items);
    }
    items.into_iter().map(|(_, i)| i).collect()
}

/// The indices of the elements of `row` equal to `value`, in the order
/// `torch.sort(row, descending=True)` returns them, without sorting all of the row.
///
/// Two facts make the shortcut exact: the final insertion sort is stable, so it keeps the
/// order equal values have after the partitioning phase; and a part of the array that
/// holds no element equal to `value` only permutes within itself, so leaving it unsorted
/// moves no equal element. Only the parts holding `value` are partitioned (about 2n steps
/// instead of n log n).
pub fn torch_tie_order<T: Prob>(row: &[T], value: T) -> Vec<u32> {
    let mut items: Vec<Item<T>> = row.iter().copied().zip(0u32..).collect();
    let n = items.len();
    if n > 0 {
        let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
        introsort_loop_holding(&mut items, depth, value);
    }
    items
        .into_iter()
        .filter(|item| item.0 == value)
        .map(|(_, i)| i)
        .collect()
}

/// `introsort_loop`, skipping the parts that hold no element equal to `value`.
fn introsort_loop_holding<T: Prob>(mut a: &mut [Item<T>], mut depth: usize, value: T) {
    while a.len() > THRESHOLD && a.iter().any(|item| item.0 == value) {
        if depth == 0 {
            heap_sort(a);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(a);
        let (left, right) = a.split_at_mut(cut);
        introsort_loop_holding(right, depth, value);
        a = left;
    }
}

fn introsort_loop<T: Prob>(mut a: &mut [Item<T>], mut depth: usize) {
    while a.len() > THRESHOLD {
        if depth == 0 {
            heap_sort(a);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(a);
        let (left, right) = a.split_at_mut(cut);
        introsort_loop(right, depth);
        a = left;
    }
}

fn move_median_to_first<T: Prob>(a: &mut [Item<T>], x: usize, y: usize, z: usize) {
    let pick = if before(&a[x], &a[y]) {
        if before(&a[y], &a[z]) {
            y
        } else if before(&a[x], &a[z]) {
            z
        } else {
            x
        }
    } else if before(&a[x], &a[z]) {
        x
    } else if before(&a[y], &a[z]) {
        z
    } else {
        y
    };
    a.swap(0, pick);
}

fn partition_pivot<T: Prob>(a: &mut [Item<T>]) -> usize {
    let n = a.len();
    move_median_to_first(a, 1, n / 2, n - 1);
    let (mut first, mut last) = (1, n);
    loop {
        while before(&a[first], &a[0]) {
            first += 1;
        }
        last -= 1;
        while before(&a[0], &a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

fn unguarded_linear_insert<T: Prob>(a: &mut [Item<T>], mut last: usize) {
    let value = a[last];
    while before(&value, &a[last - 1]) {
        a[last] = a[last - 1];
        last -= 1;
    }
    a[last] = value;
}

fn insertion_sort<T: Prob>(a: &mut [Item<T>]) {
    for i in 1..a.len() {
        if before(&a[i], &a[0]) {
            a[..=i].rotate_right(1);
        } else {
            unguarded_linear_insert(a, i);
        }
    }
}

fn final_insertion_sort<T: Prob>(a: &mut [Item<T>]) {
    if a.len() > THRESHOLD {
        insertion_sort(&mut a[..THRESHOLD]);
        for i in THRESHOLD..a.len() {
            unguarded_linear_insert(a, i);
        }
    } else {
        insertion_sort(a);
    }
}

/// libstdc++'s `__partial_sort(first, last, last)`: make_heap, then sort_heap.
fn heap_sort<T: Prob>(a: &mut [Item<T>]) {
    let len = a.len();
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let value = a[parent];
            adjust_heap(a, parent, len, value);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = a[last];
        a[last] = a[0];
        adjust_heap(a, 0, last, value);
    }
}

fn adjust_heap<T: Prob>(a: &mut [Item<T>], mut hole: usize, len: usize, value: Item<T>) {
    let top = hole;
    let mut child = hole;
    while len >= 2 && child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if before(&a[child], &a[child - 1]) {
            child -= 1;
        }
        a[hole] = a[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        a[hole] = a[child - 1];
        hole = child - 1;
    }
    // push_heap
    let mut parent = hole.saturating_sub(1) / 2;
    while hole > top && before(&a[parent], &value) {
        a[hole] = a[parent];
        hole = parent;
        parent = hole.saturating_sub(1) / 2;
    }
    a[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut agrees with the full sort on rows of many ties, among them rows long
    /// enough to partition many times and rows of one value (every part holds it).
    #[test]
    fn tie_order_matches_full_sort() {
        let mut state = 12345u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        for (n, distinct) in [
            (1, 1),
            (15, 3),
            (17, 2),
            (100, 7),
            (5000, 40),
            (70000, 300),
            (3000, 1),
        ] {
            let row: Vec<f32> = (0..n).map(|_| next(distinct) as f32 / distinct as f32).collect();
            let full = torch_sort_order(&row);
            for value in [row[0], row[n / 2], row[n - 1]] {
                let expected: Vec<u32> = full
                    .iter()
                    .copied()
                    .filter(|&i| row[i as usize] == value)
                    .collect();
                assert_eq!(torch_tie_order(&row, value), expected, "n = {n}, value = {value}");
            }
        }
    }

    /// The heap-sort fallback (introsort's depth limit) is rarely reached by real data;
    /// check it sorts on its own.
    #[test]
    fn heap_sort_sorts_descending() {
        for n in [1usize, 2, 3, 10, 17, 100, 1001] {
            let mut items: Vec<Item<f32>> = (0..n as u32)
                .map(|i| (((i * 7919) % 13) as f32 / 13.0, i))
                .collect();
            heap_sort(&mut items);
            assert!(items.windows(2).all(|w| w[0].0 >= w[1].0), "n = {n}");
            let mut seen: Vec<u32> = items.iter().map(|x| x.1).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>());
        }
    }
}
