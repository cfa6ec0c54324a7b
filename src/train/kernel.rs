//! What the CPU halves of our custom ops share: float32/float64 dispatch and contiguous
//! slices. Float64 is there for the finite-difference checks; training itself is float32.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, WithDType};

/// The element types our training kernels run on.
pub trait Real: WithDType + num_traits::Float + Send + Sync {}
impl Real for f32 {}
impl Real for f64 {}

/// `v` in `T` (sizes and constants; exact for the values we pass).
pub fn lit<T: Real>(v: f64) -> T {
    <T as WithDType>::from_f64(v)
}

/// The larger of two (`Float::max`, named apart from candle's `VecOps::max`).
pub fn fmax<T: Real>(a: T, b: T) -> T {
    num_traits::Float::max(a, b)
}

/// The smaller of two.
pub fn fmin<T: Real>(a: T, b: T) -> T {
    num_traits::Float::min(a, b)
}

/// `v` in float64, whatever `T` is.
pub fn wide<T: Real>(v: T) -> f64 {
    <T as WithDType>::to_f64(v)
}

/// The elements a contiguous layout covers; other layouts are refused (the public wrappers
/// make their inputs contiguous first, so this is a guard, not a path).
pub fn contiguous<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<T>()?[start..end]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// A one-input CPU kernel, generic over the element type.
pub trait Kernel1 {
    const NAME: &'static str;
    fn run<T: Real>(&self, x: &[T], shape: &Shape) -> Result<(Vec<T>, Shape)>;
}

/// A two-input CPU kernel (the backward halves: an input or result, and an upstream grad).
pub trait Kernel2 {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: &[T], a_shape: &Shape, b: &[T], b_shape: &Shape) -> Result<(Vec<T>, Shape)>;
}

pub fn cpu1<K: Kernel1>(k: &K, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    match s {
        CpuStorage::F32(_) => {
            let (v, shape) = k.run::<f32>(contiguous(s, l, K::NAME)?, l.shape())?;
            Ok((CpuStorage::F32(v), shape))
        }
        CpuStorage::F64(_) => {
            let (v, shape) = k.run::<f64>(contiguous(s, l, K::NAME)?, l.shape())?;
            Ok((CpuStorage::F64(v), shape))
        }
        other => bail!("{}: float32 or float64 only, got {:?}", K::NAME, other.dtype()),
    }
}

pub fn cpu2<K: Kernel2>(
    k: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => {
            let a = contiguous(s1, l1, K::NAME)?;
            let (v, shape) = k.run::<f32>(a, l1.shape(), contiguous(s2, l2, K::NAME)?, l2.shape())?;
            Ok((CpuStorage::F32(v), shape))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_)) => {
            let a = contiguous(s1, l1, K::NAME)?;
            let (v, shape) = k.run::<f64>(a, l1.shape(), contiguous(s2, l2, K::NAME)?, l2.shape())?;
            Ok((CpuStorage::F64(v), shape))
        }
        (a, b) => bail!(
            "{}: float32 or float64 pairs only, got {:?} and {:?}",
            K::NAME,
            a.dtype(),
            b.dtype()
        ),
    }
}

/// Implements `CustomOp1` for a `Kernel1`, with the backward `$bwd(op, arg, res,
/// contiguous grad)` where one is given (a backward half has none).
macro_rules! custom_op1 {
    ($ty:ty $(, $bwd:expr)?) => {
        impl candle_core::CustomOp1 for $ty {
            fn name(&self) -> &'static str {
                <$ty as $crate::train::kernel::Kernel1>::NAME
            }
            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::train::kernel::cpu1(self, s, l)
            }
            $(
            fn bwd(
                &self,
                arg: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<Option<candle_core::Tensor>> {
                let f: fn(
                    &Self,
                    &candle_core::Tensor,
                    &candle_core::Tensor,
                    &candle_core::Tensor,
                ) -> candle_core::Result<candle_core::Tensor> = $bwd;
                f(self, arg, res, &grad.contiguous()?).map(Some)
            }
            )?
        }
    };
}

/// Implements `CustomOp2` for a `Kernel2`, with the backward `$bwd(op, arg1, arg2, res,
/// contiguous grad)` giving both input grads where one is given.
macro_rules! custom_op2 {
    ($ty:ty $(, $bwd:expr)?) => {
        impl candle_core::CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                <$ty as $crate::train::kernel::Kernel2>::NAME
            }
            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::train::kernel::cpu2(self, s1, l1, s2, l2)
            }
            $(
            fn bwd(
                &self,
                arg1: &candle_core::Tensor,
                arg2: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)> {
                let f: fn(
                    &Self,
                    &candle_core::Tensor,
                    &candle_core::Tensor,
                    &candle_core::Tensor,
                    &candle_core::Tensor,
                ) -> candle_core::Result<(candle_core::Tensor, candle_core::Tensor)> = $bwd;
                let (g1, g2) = f(self, arg1, arg2, res, &grad.contiguous()?)?;
                Ok((Some(g1), Some(g2)))
            }
            )?
        }
    };
}

pub(crate) use {custom_op1, custom_op2};
