//! The rate of gemm's own f32 microkernel, as the second roofline of the compute-bound
//! benchmarks: every thread of the Rayon pool at once runs the microkernel that gemm 0.19
//! dispatches for f32 products on this CPU (the kernel of every large product of Flex's
//! matmul and of tilpass's host products) over operands that are already packed and in
//! cache, with no packing, no blocking and no threading around it. No product computed
//! through gemm can be faster than this; the FMA ceiling ([`crate::fma`]) is what the cores
//! could do with no loads at all.

use std::sync::Mutex;
use std::time::Instant;

/// Inner size of one call: gemm's depth block for these shapes (a packed left panel of
/// `MR × 512` values is 128 KiB with MR = 64: it stays in L2 while the right columns pass).
const KC: usize = 512;
/// Panels of the left operand per thread (48 × 64 = 3,072 rows: a weight of the standard
/// model's width), each streamed from memory once and reused from L2.
const PANELS: usize = 48;
/// Right-operand columns (tokens), read in place from a row-major `[tokens, KC]` matrix, as
/// gemm reads activations.
const TOKENS: usize = 504;

/// The microkernel's signature in gemm-common 0.19 (`microkernel!`): `m, n, k, dst,
/// packed_lhs, rhs, dst_cs, dst_rs, lhs_cs, rhs_rs, rhs_cs, alpha, beta, alpha_status,
/// conj_dst, conj_lhs, conj_rhs, next_lhs`.
type MicroKernel = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    *const f32,
    *const f32,
    isize,
    isize,
    isize,
    isize,
    isize,
    f32,
    f32,
    u8,
    bool,
    bool,
    bool,
    *const f32,
);

/// What the microkernel was measured at.
pub struct KernelRate {
    /// GFLOP/s of the whole pool (a multiply-add is 2 FLOPs).
    pub gflops: f64,
    /// The microkernel: `"avx512f x4x6, tiles of 64 × 6"`, `"fma x2x6, tiles of 16 × 6"`.
    pub name: &'static str,
}

/// The kernel gemm uses for the bulk of an f32 product on this CPU, its rows (MR) and columns
/// (NR) per call and its name; `None` off x86-64 or without FMA.
#[cfg(target_arch = "x86_64")]
fn kernel() -> Option<(MicroKernel, usize, usize, &'static str)> {
    use gemm_f32::microkernel::{avx512f, fma};
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some((avx512f::f32::x4x6, 64, 6, "avx512f x4x6, tiles of 64 × 6"));
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some((fma::f32::x2x6, 16, 6, "fma x2x6, tiles of 16 × 6"));
    }
    None
}

/// No measured kernel off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn kernel() -> Option<(MicroKernel, usize, usize, &'static str)> {
    None
}

/// `dst [TOKENS, PANELS·MR] = x [TOKENS, KC] · wᵀ` with `w` packed as gemm packs a left
/// operand (`PANELS` panels of `[KC][MR]`), one microkernel call per `MR × NR` tile.
fn run(kernel: MicroKernel, mr: usize, nr: usize, packed: &[f32], x: &[f32], dst: &mut [f32]) {
    let n_out = PANELS * mr;
    assert!(packed.len() >= n_out * KC && x.len() >= TOKENS * KC && dst.len() >= TOKENS * n_out);
    for p in 0..PANELS {
        // SAFETY: panel `p` is `packed[p·MR·KC ..][.. MR·KC]`; tile (p, j) reads x rows
        // j·NR .. j·NR + NR (each KC values, rhs column stride KC) and writes dst rows
        // j·NR .. + NR, columns p·MR .. + MR (row stride n_out): all inside the slices checked
        // above. `next_lhs` is a prefetch hint (the next panel, or this one for the last).
        unsafe {
            let lhs = packed.as_ptr().add(p * mr * KC);
            let next = packed.as_ptr().add(p.min(PANELS - 2) * mr * KC + mr * KC);
            for j in 0..TOKENS / nr {
                kernel(
                    mr,
                    nr,
                    KC,
                    dst.as_mut_ptr().add(j * nr * n_out + p * mr),
                    lhs,
                    x.as_ptr().add(j * nr * KC),
                    n_out as isize,
                    1,
                    mr as isize,
                    1,
                    KC as isize,
                    0.0,
                    1.0,
                    0,
                    false,
                    false,
                    false,
                    next,
                );
            }
        }
    }
}

/// The best of 5 timed runs (after 1 untimed) with every pool thread running the microkernel
/// over its own panels at once; `None` where gemm has no FMA kernel to measure.
pub fn measure() -> Option<KernelRate> {
    let (kernel, mr, nr, name) = kernel()?;
    let threads = rayon::current_num_threads();
    let n_out = PANELS * mr;
    let x: Vec<f32> = (0..TOKENS * KC).map(|i| (i % 7) as f32 * 0.25).collect();
    // One operand pair per pool thread, each taken by its own thread (`broadcast` runs the
    // closure once on every thread at once; the lock is never contended).
    let bufs: Vec<Mutex<(Vec<f32>, Vec<f32>)>> = (0..threads)
        .map(|_| {
            let packed = (0..n_out * KC).map(|i| (i % 5) as f32 * 0.5).collect();
            Mutex::new((packed, vec![0.0; TOKENS * n_out]))
        })
        .collect();
    let mut best = f64::INFINITY;
    for i in 0..6 {
        let start = Instant::now();
        rayon::broadcast(|ctx| {
            let mut pair = bufs[ctx.index()].lock().unwrap_or_else(|e| e.into_inner());
            let (packed, dst) = &mut *pair;
            run(kernel, mr, nr, packed, &x, dst);
        });
        let t = start.elapsed().as_secs_f64();
        if i >= 1 {
            best = best.min(t);
        }
    }
    std::hint::black_box(&bufs);
    let flop = 2.0 * (threads * TOKENS / nr * nr * n_out * KC) as f64;
    Some(KernelRate {
        gflops: flop / best / 1e9,
        name,
    })
}

#[cfg(test)]
mod tests {
    /// The measured calls compute the product they are counted as: one tile of the
    /// microkernel against the sums written out.
    #[test]
    fn the_measured_calls_compute_the_product() {
        let Some((kernel, mr, nr, _)) = super::kernel() else {
            eprintln!("skipped: gemm has no FMA microkernel on this CPU");
            return;
        };
        let n_out = super::PANELS * mr;
        let packed: Vec<f32> = (0..n_out * super::KC)
            .map(|i| (i % 5) as f32 - 2.0)
            .collect();
        let x: Vec<f32> = (0..super::TOKENS * super::KC)
            .map(|i| (i % 7) as f32 - 3.0)
            .collect();
        let mut dst = vec![f32::NAN; super::TOKENS * n_out];
        super::run(kernel, mr, nr, &packed, &x, &mut dst);
        for (t, o) in [
            (0, 0),
            (nr + 1, mr + 3),
            (super::TOKENS / nr * nr - 1, n_out - 1),
        ] {
            let (p, r) = (o / mr, o % mr);
            let want: f64 = (0..super::KC)
                .map(|l| {
                    f64::from(packed[p * mr * super::KC + l * mr + r])
                        * f64::from(x[t * super::KC + l])
                })
                .sum();
            assert_eq!(f64::from(dst[t * n_out + o]), want, "dst[{t}, {o}]");
        }
    }
}
