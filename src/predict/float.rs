//! The working precision of the predictors.
//!
//! rankseg 0.0.8 scores volumes in the input's own dtype (float32 maps are scored in
//! float32). Near the optimum the scores of neighbouring volumes differ by less than a
//! float32 rounding step, so reproducing its masks means doing the same arithmetic in the
//! same precision. `Prob` is that precision: f32 or f64.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

pub trait Prob:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + radsort::Key
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// A relative bound on how far a score computed in this precision can stray from its
    /// exact value: the score chains about six roundings (about 4e-7 relative for f32),
    /// and two scores are compared, so this keeps a safety factor of over two.
    const SCORE_TOLERANCE: f64;
    /// Values per 32-byte SIMD vector: the lane count of torch's CPU sum.
    const LANES: usize;
    /// Machine epsilon (`torch.finfo(dtype).eps`).
    const EPSILON: Self;

    fn from_f64(value: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The largest value below this one.
    fn next_down(self) -> Self;

    /// `max(self, other)` as `torch.clamp(self, min=other)`.
    fn max_with(self, other: Self) -> Self {
        if self < other {
            other
        } else {
            self
        }
    }

    /// An integer count in this precision, as torch converts an int64 tensor.
    fn from_count(count: usize) -> Self {
        Self::from_f64(count as f64)
    }

    /// `other / self` the way torch evaluates `python_float / tensor`: as
    /// `tensor.reciprocal() * python_float`, two roundings rather than one.
    fn rdiv(self, other: Self) -> Self {
        (Self::ONE / self) * other
    }
}

macro_rules! impl_prob {
    ($t:ty, $tolerance:expr, $lanes:expr) => {
        impl Prob for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const SCORE_TOLERANCE: f64 = $tolerance;
            const LANES: usize = $lanes;
            const EPSILON: Self = <$t>::EPSILON;

            fn from_f64(value: f64) -> Self {
                value as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn next_down(self) -> Self {
                <$t>::next_down(self)
            }
        }
    };
}

impl_prob!(f32, 2e-6, 8);
impl_prob!(f64, 1e-12, 4);
