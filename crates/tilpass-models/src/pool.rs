//! Running a model's forward on the Rayon pool.
//!
//! The host kernels ([`crate::matvec`], [`crate::decoder_kernels`], [`crate::encoder_kernels`])
//! and burn's Flex backend split their work over Rayon's global pool. Called from a thread
//! outside the pool (a program's main thread), every such split hands the work to the pool and
//! puts the caller to sleep until it is done — a futex wake-up and wait per kernel call, ~60
//! per decode step of an 8-layer model, while the caller's core sits idle. [`on_pool`] runs a
//! whole forward on a pool thread instead: the kernels' splits then become Rayon joins that the
//! running thread takes part in, and the hand-over happens once per forward.

use burn::tensor::Device;

/// Runs `work` on a thread of Rayon's global pool and returns its result when `device` is Flex
/// (the CPU backend, with or without autodiff) and the calling thread is outside the pool;
/// otherwise runs it in place (GPU backends keep their work on the caller's stream).
pub fn on_pool<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    on_pool_if(on_flex(device), work)
}

/// True when `device` is burn's Flex CPU backend, with or without autodiff.
pub fn on_flex(device: &Device) -> bool {
    format!("{device:?}").contains("Flex(")
}

/// [`on_pool`] with the device's verdict made: `pool` false runs `work` in place.
fn on_pool_if<R: Send>(pool: bool, work: impl FnOnce() -> R + Send) -> R {
    if !pool || rayon::current_thread_index().is_some() {
        work()
    } else {
        rayon::scope(|_| work())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_from_outside_runs_on_a_pool_thread_and_nested_work_stays_in_place() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "a test thread is not a pool thread"
        );
        let (outer, inner, sum) = on_pool_if(true, || {
            let outer = rayon::current_thread_index();
            let inner = on_pool_if(true, rayon::current_thread_index);
            // A parallel split inside still works (and may use the other pool threads).
            use rayon::prelude::*;
            let sum: u64 = (0..10_000u64).into_par_iter().sum();
            (outer, inner, sum)
        });
        assert!(
            outer.is_some(),
            "on_pool ran the work on the calling thread"
        );
        assert_eq!(inner, outer, "nested on_pool moved the work");
        assert_eq!(sum, 10_000 * 9_999 / 2);
        assert_eq!(
            on_pool_if(false, rayon::current_thread_index),
            None,
            "work for another device moved to the pool"
        );
    }
}
