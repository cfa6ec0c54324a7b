//! torch's CPU sum of a contiguous row, reproduced operation for operation.
//!
//! rankseg 0.0.8 divides by `probs.sum(-1)` in the input's precision, and torch's sum is
//! not correctly rounded: it accumulates 32-byte SIMD lanes, four vectors at a time, in a
//! four-level cascade (ATen's `cascade_sum`, inner-contiguous path). Near the optimum the
//! RMA scores of neighbouring volumes differ by less than the last bit of that sum, so the
//! same rounding is needed to pick the same volume. Checked against torch 2.5 on x86-64
//! for float32 and float64 rows (the oracle fixtures exercise it through rankseg). A row
//! that torch splits across threads (one long row alone) may still differ.

use super::float::Prob;

const ILP: usize = 4;
const LEVELS: usize = 4;
const MAX_LANES: usize = 8;
/// The longest group of any precision (`TorchSum::group_len`).
pub const MAX_GROUP_LEN: usize = ILP * MAX_LANES;

type Vectors<T> = [[T; MAX_LANES]; ILP];

/// ATen's `CeilLog2`: 1 for x <= 2.
fn ceil_log2(x: usize) -> usize {
    if x <= 2 {
        1
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

/// The state of one torch sum over a row of `n` values, fed group by group (a group is
/// `ILP` vectors of `T::LANES` values: `group_len()` consecutive values).
#[derive(Clone)]
pub struct TorchSum<T> {
    acc: [Vectors<T>; LEVELS],
    level_power: usize,
    /// Groups fed so far, and how many of them cascade (whole blocks of `2^level_power`).
    fed: usize,
    cascading: usize,
}

impl<T: Prob> TorchSum<T> {
    pub fn new(n: usize) -> Self {
        let groups = n / T::LANES / ILP;
        let level_power = 4.max(ceil_log2(groups) / LEVELS);
        let step = 1usize << level_power;
        TorchSum {
            acc: [[[T::ZERO; MAX_LANES]; ILP]; LEVELS],
            level_power,
            fed: 0,
            cascading: groups / step * step,
        }
    }

    pub const fn group_len() -> usize {
        ILP * T::LANES
    }

    /// Whole groups in a row of `n` values; the rest goes to `finish`.
    pub fn groups(n: usize) -> usize {
        n / Self::group_len()
    }

    /// Adds `value` at position `offset` (< `group_len()`) of the current group.
    #[inline]
    pub fn add(&mut self, offset: usize, value: T) {
        let a = &mut self.acc[0][offset / T::LANES][offset % T::LANES];
        *a = *a + value;
    }

    /// Adds one whole group.
    #[inline]
    pub fn add_group(&mut self, values: &[T]) {
        for (vector, chunk) in self.acc[0].iter_mut().zip(values.chunks_exact(T::LANES)) {
            for (a, &v) in vector.iter_mut().zip(chunk) {
                *a = *a + v;
            }
        }
    }

    /// Marks the current group done: every `2^level_power` groups the levels cascade.
    #[inline]
    pub fn end_group(&mut self) {
        self.fed += 1;
        let mask = (1usize << self.level_power) - 1;
        if self.fed <= self.cascading && self.fed & mask == 0 {
            for j in 1..LEVELS {
                let (lower, upper) = self.acc.split_at_mut(j);
                accumulate(&mut upper[0], &lower[j - 1]);
                lower[j - 1] = [[T::ZERO; MAX_LANES]; ILP];
                if self.fed & (mask << (j * self.level_power)) != 0 {
                    break;
                }
            }
        }
    }

    /// The total, given the values after the whole groups: `rest` (fewer than a group).
    pub fn finish(mut self, rest: &[T]) -> T {
        for j in 1..LEVELS {
            let (lower, upper) = self.acc.split_at_mut(j);
            accumulate(&mut lower[0], &upper[0]);
        }
        let [mut first, others @ ..] = self.acc[0];
        let whole_vectors = rest.len() / T::LANES * T::LANES;
        for chunk in rest[..whole_vectors].chunks_exact(T::LANES) {
            for (a, &v) in first.iter_mut().zip(chunk) {
                *a = *a + v;
            }
        }
        for other in &others {
            for (a, b) in first[..T::LANES].iter_mut().zip(&other[..T::LANES]) {
                *a = *a + *b;
            }
        }
        let mut total = T::ZERO;
        for &v in &rest[whole_vectors..] {
            total = total + v;
        }
        for &lane in &first[..T::LANES] {
            total = total + lane;
        }
        total
    }
}

/// Torch's sum split into blocks that can be summed independently (in parallel, fused
/// into another pass) and combined in order, with the same result bit for bit. A block is
/// `2^(2 level_power)` groups at a multiple of its length: the cascade's two lowest levels
/// start it empty and hand it on whole to the third, so its partial (the second level at
/// its end) depends on its own values only.
#[derive(Clone, Copy, Debug)]
pub struct TorchBlocks {
    n: usize,
    level_power: usize,
}

/// One block's contribution to the third level of the cascade.
pub type BlockPartial<T> = [[T; MAX_LANES]; ILP];

impl TorchBlocks {
    pub fn new<T: Prob>(n: usize) -> Self {
        TorchBlocks {
            n,
            level_power: TorchSum::<T>::new(n).level_power,
        }
    }

    /// Values per block.
    pub fn block_len<T: Prob>(&self) -> usize {
        TorchSum::<T>::group_len() << (2 * self.level_power)
    }

    /// Whole blocks in the row.
    pub fn blocks<T: Prob>(&self) -> usize {
        self.n / self.block_len::<T>()
    }

    /// The partial of one whole block (`block_len` values).
    #[inline(always)]
    pub fn partial<T: Prob>(&self, block: &[T]) -> BlockPartial<T> {
        let zero = [[T::ZERO; MAX_LANES]; ILP];
        let (mut first, mut second) = (zero, zero);
        let run = TorchSum::<T>::group_len() << self.level_power;
        for part in block.chunks_exact(run) {
            for group in part.chunks_exact(TorchSum::<T>::group_len()) {
                for (vector, chunk) in first.iter_mut().zip(group.chunks_exact(T::LANES)) {
                    for (a, &v) in vector.iter_mut().zip(chunk) {
                        *a = *a + v;
                    }
                }
            }
            accumulate(&mut second, &first);
            first = zero;
        }
        second
    }

    /// The row's torch sum from the partials of its whole blocks, in order, and the
    /// values after them.
    pub fn finish<T: Prob>(&self, partials: impl IntoIterator<Item = BlockPartial<T>>, rest: &[T]) -> T {
        let mut sum = TorchSum::<T>::new(self.n);
        let per_block = 1usize << (2 * self.level_power);
        for partial in partials {
            accumulate(&mut sum.acc[2], &partial);
            sum.fed += per_block;
            let mask = (1usize << self.level_power) - 1;
            if sum.fed & (mask << (2 * self.level_power)) == 0 {
                let (lower, upper) = sum.acc.split_at_mut(3);
                accumulate(&mut upper[0], &lower[2]);
                lower[2] = [[T::ZERO; MAX_LANES]; ILP];
            }
        }
        let group = TorchSum::<T>::group_len();
        let whole = rest.len() / group * group;
        for values in rest[..whole].chunks_exact(group) {
            sum.add_group(values);
            sum.end_group();
        }
        sum.finish(&rest[whole..])
    }
}

/// `into += from`, lane by lane (unused lanes stay zero).
fn accumulate<T: Prob>(into: &mut Vectors<T>, from: &Vectors<T>) {
    for (dst, src) in into.iter_mut().zip(from) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *d + *s;
        }
    }
}

/// A row's sum in torch's order and precision. Inlined, so that a caller's
/// `simd::vectorized` compiles it for the wider unit (the lanes are torch's, whatever the
/// unit).
#[inline(always)]
pub fn torch_sum<T: Prob>(row: &[T]) -> T {
    let mut sum = TorchSum::new(row.len());
    let whole = TorchSum::<T>::groups(row.len()) * TorchSum::<T>::group_len();
    for group in row[..whole].chunks_exact(TorchSum::<T>::group_len()) {
        sum.add_group(group);
        sum.end_group();
    }
    sum.finish(&row[whole..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks summed apart and combined give torch's sum bit for bit, at lengths around
    /// the block and cascade boundaries, in both precisions.
    #[test]
    fn blocks_combine_to_the_sequential_sum() {
        fn check<T: Prob>(n: usize) {
            let row: Vec<T> = (0..n)
                .map(|i| T::from_f64(((i as u64 * 2654435761) % 1000) as f64 / 997.0))
                .collect();
            let blocks = TorchBlocks::new::<T>(n);
            let len = blocks.block_len::<T>();
            let whole = blocks.blocks::<T>() * len;
            let partials = row[..whole].chunks_exact(len).map(|b| blocks.partial(b));
            let split = blocks.finish(partials, &row[whole..]);
            assert_eq!(
                split.to_f64().to_bits(),
                torch_sum(&row).to_f64().to_bits(),
                "n = {n}"
            );
        }
        for n in [
            0,
            1,
            31,
            32,
            8191,
            8192,
            8193,
            16384 + 77,
            262_144,
            262_144 + 5,
            2_097_152,
            3 * 1_048_576 + 13,
        ] {
            check::<f32>(n);
            check::<f64>(n);
        }
    }
}
