//! Running a model's forward on the Rayon pool.
//!
//! The host kernels ([`crate::matvec`], [`crate::decoder_kernels`], [`crate::encoder_kernels`])
//! and burn's Flex backend split their work over Rayon's global pool. Called from a thread
//! outside the pool (a program's main thread), every such split hands the work to the pool and
//! puts the caller to sleep until it is done — a futex wake-up and wait per kernel call, ~60
//! per decode step of an 8-layer model, while the caller's core sits idle. [`on_pool`] runs a
//! whole forward on a pool thread instead: the kernels' splits then become Rayon joins that the
//! running thread takes part in, and the hand-over happens once per forward.
//!
//! For few-row forwards (decode steps, [`on_pool_polled`]) the pool's other threads poll for
//! work while the forward runs instead of going to sleep between kernels ([`set_polling`]): a
//! Rayon worker that finds nothing to do spins briefly, then sleeps on a futex, and waking it
//! for the next kernel's split costs tens of microseconds (more in a virtual machine) — paid
//! ~60 times per decode step, whose kernels are ~100 µs each. Polling is the active wait
//! OpenMP runtimes (and so PyTorch) use inside a parallel region; it ends with the forward, or
//! after a millisecond with no work. Forwards of many rows (prefill, embeddings, training)
//! do not poll: there a polling thread steals every split and contends for the deques, and
//! measured 5-15% slower (docs/benchmarks.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::Device;

static POLLING: AtomicBool = AtomicBool::new(true);

/// Turns the polling of idle pool threads during [`on_pool`]'s work on or off for the whole
/// process (on by default). For A/B measurements (`tilpass-compare`'s `_sleeping` benchmarks).
pub fn set_polling(on: bool) {
    POLLING.store(on, Ordering::Relaxed);
}

/// How long a polling thread goes on without finding work before it returns to Rayon (and
/// sleeps): bounds the CPU a stalled forward burns, and any wait between two forwards that
/// each poll on the other's thread.
const MAX_IDLE: Duration = Duration::from_millis(1);

/// Keeps the pool's other threads polling for work while alive (see the module docs).
struct Polling(Arc<AtomicBool>);

impl Polling {
    /// Starts polling on every pool thread but the current one; `None` outside the pool, with
    /// one thread, with more threads than the machine has cores (a polling thread would take
    /// a core from a working one) or when [`set_polling`] turned it off.
    fn start() -> Option<Self> {
        let me = rayon::current_thread_index()?;
        let threads = rayon::current_num_threads();
        // Read once: `available_parallelism` reads the cgroup's CPU quota from files.
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cores =
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads < 2 || threads > cores || !POLLING.load(Ordering::Relaxed) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        rayon::spawn_broadcast(move |ctx| {
            if ctx.index() != me {
                poll(&flag);
            }
        });
        Some(Self(stop))
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs pending pool work as it appears until `stop` is set or [`MAX_IDLE`] passes with none.
fn poll(stop: &AtomicBool) {
    let mut idle_since: Option<Instant> = None;
    let mut spins = 0u32;
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
            spins = 0;
            continue;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            let now = Instant::now();
            match idle_since {
                None => idle_since = Some(now),
                Some(t) if now.duration_since(t) > MAX_IDLE => return,
                Some(_) => {}
            }
        }
    }
}

/// Runs `work` on a thread of Rayon's global pool and returns its result when `device` is Flex
/// (the CPU backend, with or without autodiff) and the calling thread is outside the pool;
/// otherwise runs it in place (GPU backends keep their work on the caller's stream).
pub fn on_pool<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    on_pool_if(on_flex(device), false, work)
}

/// [`on_pool`], with the pool's other threads polling for work while `work` runs when `polled`
/// (few-row forwards: decode steps; see the module docs). Only a call that moves onto the pool
/// starts polling: nested calls, and calls already on a pool thread, run as [`on_pool`]'s do.
pub fn on_pool_polled<R: Send>(
    device: &Device,
    polled: bool,
    work: impl FnOnce() -> R + Send,
) -> R {
    on_pool_if(on_flex(device), polled, work)
}

/// True when `device` is burn's Flex CPU backend, with or without autodiff.
pub fn on_flex(device: &Device) -> bool {
    format!("{device:?}").contains("Flex(")
}

/// [`on_pool`] with the device's verdict made: `pool` false runs `work` in place; `polled`
/// starts [`Polling`] for the work when it moves onto the pool.
fn on_pool_if<R: Send>(pool: bool, polled: bool, work: impl FnOnce() -> R + Send) -> R {
    if !pool || rayon::current_thread_index().is_some() {
        work()
    } else {
        rayon::scope(|_| {
            let _polling = if polled { Polling::start() } else { None };
            work()
        })
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
        let (outer, inner, sum) = on_pool_if(true, false, || {
            let outer = rayon::current_thread_index();
            let inner = on_pool_if(true, false, rayon::current_thread_index);
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
            on_pool_if(false, false, rayon::current_thread_index),
            None,
            "work for another device moved to the pool"
        );
    }

    #[test]
    fn polled_work_is_right_and_concurrent_polled_work_from_two_threads_finishes() {
        use rayon::prelude::*;
        let device = burn::tensor::Device::default();
        let run = |n: u64| {
            on_pool_if(true, true, || {
                assert!(rayon::current_thread_index().is_some());
                (0..n).into_par_iter().map(|v| v * 2).sum::<u64>()
            })
        };
        assert_eq!(run(1000), 999_000);
        // Two callers whose polling threads may each end up waiting inside the other's
        // forward: both finish (a polling thread gives up after MAX_IDLE without work).
        let callers: Vec<_> = (0..2)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..50u64)
                        .map(|i| run(10_000 + i + t))
                        .fold(0u64, u64::wrapping_add)
                })
            })
            .collect();
        for c in callers {
            assert!(c.join().expect("caller thread") > 0);
        }
        // The public entry point, polling on and off.
        assert_eq!(on_pool_polled(&device, true, || 7), 7);
        set_polling(false);
        assert_eq!(on_pool_polled(&device, true, || 8), 8);
        set_polling(true);
    }
}
