//! Benchmarks of tilpass; see `benches/`. Results and the Python comparison are recorded in
//! `docs/benchmarks.md`.

/// Tells mimalloc to keep freed memory for reuse instead of purging it back to the OS: large
/// tensors are freed and reallocated on every step, and re-faulting their zeroed pages cost
/// ~25% of a training step (docs/benchmarks.md).
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; 15 is `mi_option_purge_delay` in
    // mimalloc v2 and v3 (`include/mimalloc.h`), -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}
