//! The learning rate at each optimizer step: a linear warm-up from 0 over `warmupRatio` of the steps,
//! then constant, linear decay or cosine decay towards 0 at the last step.

use crate::domain::{Hyperparams, LrSchedule};

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    peak: f64,
    kind: LrSchedule,
    warmup: u64,
    total: u64,
}

impl Schedule {
    pub fn new(hyper: &Hyperparams, total_steps: u64) -> Self {
        let warmup = if hyper.warmup_ratio > 0.0 {
            ((total_steps as f64 * hyper.warmup_ratio).round() as u64).max(1)
        } else {
            0
        };
        Self {
            peak: hyper.learning_rate,
            kind: hyper.lr_schedule,
            warmup,
            total: total_steps,
        }
    }

    /// The rate of 1-based `step`.
    pub fn at(&self, step: u64) -> f64 {
        if step <= self.warmup {
            return self.peak * step as f64 / self.warmup as f64;
        }
        // Share of the decay still to come: 1 at the first step after the warm-up, 1/(n+1) at the last.
        let span = (self.total.saturating_sub(self.warmup) + 1) as f64;
        let remaining = (self.total.saturating_sub(step) + 1) as f64 / span;
        match self.kind {
            LrSchedule::Constant => self.peak,
            LrSchedule::Linear => self.peak * remaining,
            LrSchedule::Cosine => {
                self.peak * 0.5 * (1.0 + (std::f64::consts::PI * (1.0 - remaining)).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HyperparamsInput;

    fn schedule(kind: LrSchedule, warmup_ratio: f64, total: u64) -> Schedule {
        let input = HyperparamsInput {
            learning_rate: Some(1.0),
            lr_schedule: Some(kind),
            warmup_ratio: Some(warmup_ratio),
            ..Default::default()
        };
        Schedule::new(
            &Hyperparams::parse("hyperparameters", &input, 1.0).unwrap(),
            total,
        )
    }

    #[test]
    fn each_schedule_warms_up_then_has_its_shape() {
        let constant = schedule(LrSchedule::Constant, 0.2, 10);
        assert_eq!(constant.at(1), 0.5);
        assert_eq!(constant.at(2), 1.0);
        assert_eq!(constant.at(10), 1.0);
        let linear = schedule(LrSchedule::Linear, 0.2, 10);
        assert_eq!(linear.at(2), 1.0);
        assert!((linear.at(3) - 8.0 / 9.0).abs() < 1e-12);
        assert!((linear.at(10) - 1.0 / 9.0).abs() < 1e-12);
        let cosine = schedule(LrSchedule::Cosine, 0.0, 10);
        assert!(cosine.at(1) > 0.97 && cosine.at(1) < 1.0);
        let mid = cosine.at(6);
        assert!(mid < 0.75 && mid > 0.25, "{mid}");
        assert!(cosine.at(10) < 0.05 && cosine.at(10) > 0.0);
        let rates: Vec<f64> = (1..=10).map(|s| cosine.at(s)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    }
}
