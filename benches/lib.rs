//! Benchmarks of tilpass; see `benches/`. Results and the Python comparison are recorded in
//! `docs/benchmarks.md`.
