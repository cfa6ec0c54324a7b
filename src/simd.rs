//! The widest vector unit for our own loops (the models' kernels, the predictors' scans): a
//! leaf module that imports nothing. candle and our crate are compiled for baseline
//! x86-64 (SSE2), so loops the compiler vectorises use 4 lanes; `vectorized` runs a piece of
//! work compiled again for AVX-512F or AVX2 when the CPU has it. The arithmetic is the same
//! in every version (no fused multiply-add, no reordering), so results do not depend on the
//! CPU.

/// Runs `work`, compiled for the best of AVX-512F, AVX2 and the baseline this CPU offers.
/// Call it inside a parallel loop's body (each worker decides for its own piece); `work`
/// should be a closure whose loops are plain slice iterations, marked
/// `#[inline(always)]`: it is called from three versions, and a large closure would
/// otherwise stay one baseline function that they all call.
#[inline(always)]
pub fn vectorized<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // Safety: the CPU has AVX-512F.
            return unsafe { avx512(work) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // Safety: the CPU has AVX2.
            return unsafe { avx2(work) };
        }
    }
    work()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(work: impl FnOnce() -> R) -> R {
    work()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(work: impl FnOnce() -> R) -> R {
    work()
}
