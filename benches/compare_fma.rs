//! The machine's f32 arithmetic ceiling, as the roofline of the compute-bound benchmarks: every
//! thread of the Rayon pool at once runs a loop of independent fused multiply-adds in the
//! widest vectors the CPU has (AVX-512F, else AVX2 + FMA), so the rate is what the cores'
//! FMA units can do, with no memory traffic. A matrix product cannot run faster than this;
//! the benchmarks' model GFLOP/s (both sides') are reported against it by
//! `scripts/compare/run.py`, next to the matmul peak that the MFU uses.

use std::time::Instant;

/// Independent accumulators per thread: more than the FMA latency (4 cycles) times the FMA
/// units (2) so that the units never wait.
const CHAINS: usize = 12;
/// Iterations per timed run (each `CHAINS` FMAs of one vector).
const ITERS: usize = 4_000_000;

/// A per-thread FMA loop (`iters` steps), its vector lanes and its instruction set's name.
type Kernel = (fn(usize) -> f32, usize, &'static str);

/// What the peak was measured with.
pub struct FmaPeak {
    /// GFLOP/s of the whole pool (an FMA is 2 FLOPs per lane).
    pub gflops: f64,
    /// The instruction set: `"avx512f"`, `"avx2+fma"`.
    pub isa: &'static str,
}

/// The best of 5 timed runs (after 1 untimed) of [`ITERS`] × [`CHAINS`] vector FMAs on every
/// pool thread at once; `None` where no FMA vector instructions are detected (not x86-64, or
/// an x86-64 without FMA).
pub fn measure() -> Option<FmaPeak> {
    let (kernel, lanes, isa) = kernel()?;
    let threads = rayon::current_num_threads();
    let mut best = f64::INFINITY;
    for i in 0..6 {
        let start = Instant::now();
        let sinks = rayon::broadcast(|_| kernel(ITERS));
        std::hint::black_box(sinks);
        let t = start.elapsed().as_secs_f64();
        if i >= 1 {
            best = best.min(t);
        }
    }
    let flop = (threads * ITERS * CHAINS * lanes * 2) as f64;
    Some(FmaPeak {
        gflops: flop / best / 1e9,
        isa,
    })
}

/// The kernel for this CPU, its vector lanes and the instruction set's name.
#[cfg(target_arch = "x86_64")]
fn kernel() -> Option<Kernel> {
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some((fma_avx512, 16, "avx512f"));
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some((fma_avx2, 8, "avx2+fma"));
    }
    None
}

/// No measured ceiling off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn kernel() -> Option<Kernel> {
    None
}

/// [`fma_loop_avx2`] behind the detection of [`kernel`].
#[cfg(target_arch = "x86_64")]
fn fma_avx2(iters: usize) -> f32 {
    // SAFETY: chosen by `kernel` only when the CPU has AVX2 and FMA.
    unsafe { fma_loop_avx2(iters) }
}

/// [`fma_loop_avx512`] behind the detection of [`kernel`].
#[cfg(target_arch = "x86_64")]
fn fma_avx512(iters: usize) -> f32 {
    // SAFETY: chosen by `kernel` only when the CPU has AVX-512F.
    unsafe { fma_loop_avx512(iters) }
}

/// Defines `$name(iters)`: `CHAINS` chains of `a = a·b + c` on one vector type, `iters` steps
/// each, compiled for `$feature`; it returns the first lane of their sum so that nothing is
/// optimised away.
macro_rules! fma_loop {
    ($name:ident, $feature:literal, $set1:ident, $fmadd:ident, $add:ident, $first:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        fn $name(iters: usize) -> f32 {
            use std::arch::x86_64::*;
            let (b, c) = ($set1(0.999_999), $set1(1e-7));
            let mut a: [_; CHAINS] = std::array::from_fn(|i| $set1(i as f32));
            for _ in 0..iters {
                for a in a.iter_mut() {
                    *a = $fmadd(*a, b, c);
                }
            }
            let s = a[1..].iter().fold(a[0], |s, a| $add(s, *a));
            $first(s)
        }
    };
}

fma_loop!(
    fma_loop_avx2,
    "avx2,fma",
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_cvtss_f32
);
fma_loop!(
    fma_loop_avx512,
    "avx512f",
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_cvtss_f32
);
