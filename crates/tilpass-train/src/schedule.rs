//! Learning-rate schedules with HF transformers' semantics (`get_*_schedule_with_warmup`): the
//! rate used by optimiser step `k` (0-based) is `base · λ(k)`.

use serde::{Deserialize, Serialize};

/// The shape of the schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Constant after warmup (`constant_with_warmup`).
    Constant,
    /// Linear decay to 0 at `total_steps` (`linear`, HF's default).
    #[default]
    Linear,
    /// Half a cosine down to 0 at `total_steps` (`cosine`).
    Cosine,
}

/// A learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Shape after warmup.
    pub kind: ScheduleKind,
    /// Steps of linear warmup from 0.
    pub warmup_steps: usize,
    /// Total optimiser steps (for the decay).
    pub total_steps: usize,
}

impl LrSchedule {
    /// The multiplier λ(step).
    pub fn factor(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of optimiser step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warmup_then_decay_as_hf() {
        let s = LrSchedule {
            base_lr: 1e-2,
            kind: ScheduleKind::Linear,
            warmup_steps: 2,
            total_steps: 6,
        };
        let lrs: Vec<f64> = (0..6).map(|k| s.lr(k)).collect();
        assert_eq!(lrs, [0.0, 0.005, 0.01, 0.0075, 0.005, 0.0025]);
        let c = LrSchedule {
            kind: ScheduleKind::Cosine,
            ..s
        };
        assert!((c.lr(4) - 0.005).abs() < 1e-12, "half way down the cosine");
        assert_eq!(c.lr(6), 0.0);
    }
}
