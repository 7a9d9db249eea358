//! Distances of a tilpass training run from TRL's float32 run and from the same TRL run in
//! float64, shared by the preference-trainer parity tests.
//!
//! A float32 run cannot be closer to the exact (float64) answer than its own rounding allows,
//! and TRL's float32 run is itself some distance from it. So each check accepts `tol` or twice
//! TRL's own float32 distance from float64, whichever is larger: on lavapipe (wgpu on CPU),
//! whose `exp`/`log` round differently from PyTorch's, a SimPO log-probability was measured
//! 1.68e-5 from float64 while TRL's float32 was 1.11e-5 from it (and ours 5.7e-6 from TRL's).

/// Differences between tilpass, TRL's float32 run and the same run in float64.
#[derive(Debug, Default, Clone, Copy)]
pub struct Diffs {
    /// tilpass vs TRL float32.
    pub trl32: f64,
    /// tilpass vs float64.
    pub exact: f64,
    /// TRL float32 vs float64: TRL's own rounding.
    pub torch: f64,
}

impl Diffs {
    /// The three distances under `diff` (relative or absolute).
    pub fn of(ours: &[f64], trl32: &[f64], exact: &[f64], diff: fn(&[f64], &[f64]) -> f64) -> Self {
        Self {
            trl32: diff(ours, trl32),
            exact: diff(ours, exact),
            torch: diff(trl32, exact),
        }
    }

    /// The larger of each distance.
    pub fn max(self, o: Self) -> Self {
        Self {
            trl32: self.trl32.max(o.trl32),
            exact: self.exact.max(o.exact),
            torch: self.torch.max(o.torch),
        }
    }

    /// Within `tol` or twice TRL's own distance from the float64 run, whichever is larger, of
    /// the float64 run; and within that bound plus TRL's own distance of TRL's float32 run
    /// (the triangle inequality: a result that far from the exact one can be that much
    /// further from a float32 run on the other side of it: the encoder-decoder SimPO case's
    /// step-2 `logps/chosen` ~ -23.29 lies 7.3e-6 above float64 on Flex and TRL's 3.2e-6
    /// below it, a few float32 steps of 1.9e-6 each way, 1.05e-5 apart). Fails on NaN (every
    /// comparison with NaN is false).
    pub fn check(&self, case: &str, what: &str, tol: f64) {
        let bound = tol.max(2.0 * self.torch);
        assert!(self.exact <= bound, "{case} {what} vs float64: {self}");
        assert!(
            self.trl32 <= bound + self.torch,
            "{case} {what} vs TRL float32: {self}"
        );
    }

    /// [`Diffs::check`] for the final adapter or weights.
    pub fn check_weights(&self, case: &str, tol: f64) {
        self.check(case, "final adapter", tol)
    }
}

impl std::fmt::Display for Diffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max difference {:.2e} vs TRL f32, {:.2e} vs float64 (TRL f32 vs float64: {:.2e})",
            self.trl32, self.exact, self.torch
        )
    }
}
