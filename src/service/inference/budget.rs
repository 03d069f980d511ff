//! The memory `predict` may use for its forward passes, shared by every prediction of this process
//! (`KILN_PREDICT_MEMORY`), and how a request's inputs are cut into micro-batches that fit it.
//!
//! A request's inputs run in consecutive micro-batches, each at most a quarter of the budget (so that
//! several requests take turns rather than one holding it all) and at most [`MAX_MICRO_BATCH`] inputs.
//! Each micro-batch takes its estimated memory from the budget before it runs and gives it back after;
//! when the budget is taken, it waits its turn (first come, first served), at most the predict wait,
//! and then the request fails with `RESOURCE_EXHAUSTED`. Memory is estimated on the high side from the
//! model's sizes and each text's length (`train::memory`), never from what a client declares.

use std::ops::Range;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::domain::FieldError;
use crate::service::{ServiceError, ServiceResult};
use crate::train::memory::human;

/// The most inputs one forward pass reads: beyond it, a larger batch is not faster on a CPU.
pub const MAX_MICRO_BATCH: usize = 32;

/// The budget is counted in units of this many bytes.
const UNIT: u64 = 64 * 1024;

pub struct PredictBudget {
    bytes: u64,
    units: Semaphore,
    wait: Duration,
}

impl PredictBudget {
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let units = (bytes / UNIT).clamp(1, u32::MAX as u64);
        Self {
            bytes: units * UNIT,
            units: Semaphore::new(units as usize),
            wait,
        }
    }

    /// How long a prediction waits for memory (or for room in the model cache).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The most one micro-batch may take.
    fn batch_limit(&self) -> u64 {
        (self.bytes / 4).max(UNIT)
    }

    /// Cuts `count` inputs into consecutive micro-batches; `memory(range)` is what a batch of those
    /// inputs needs. An input that alone needs more than the whole budget is refused on
    /// `field[i]`.
    pub fn plan(
        &self,
        count: usize,
        field: &str,
        memory: impl Fn(Range<usize>) -> u64,
    ) -> ServiceResult<Vec<(Range<usize>, u64)>> {
        let mut batches = Vec::new();
        let mut start = 0;
        while start < count {
            let alone = memory(start..start + 1);
            if alone > self.bytes {
                return Err(FieldError::new(
                    format!("{field}[{start}]"),
                    format!(
                        "needs about {} to predict, more than this server's memory for \
                         predictions (KILN_PREDICT_MEMORY, {}); send a shorter input",
                        human(alone),
                        human(self.bytes)
                    ),
                )
                .into());
            }
            let (mut end, mut bytes) = (start + 1, alone);
            while end < count && end - start < MAX_MICRO_BATCH {
                let more = memory(start..end + 1);
                if more > self.batch_limit() {
                    break;
                }
                (end, bytes) = (end + 1, more);
            }
            batches.push((start..end, bytes));
            start = end;
        }
        Ok(batches)
    }

    /// Takes `bytes` of the budget, waiting for them at most the predict wait.
    #[tracing::instrument(skip_all)]
    pub async fn take(&self, bytes: u64) -> ServiceResult<SemaphorePermit<'_>> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.bytes / UNIT) as u32;
        match tokio::time::timeout(self.wait, self.units.acquire_many(units)).await {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(ServiceError::Busy(format!(
                "this server's memory for predictions (KILN_PREDICT_MEMORY, {}) stayed in use for \
                 {} s; try again, or send fewer inputs at once",
                human(self.bytes),
                self.wait.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_cut_into_batches_within_a_quarter_of_the_budget() {
        let budget = PredictBudget::new(400 * UNIT, Duration::from_secs(1));
        // Each input needs 30 units: three fit in a quarter (100 units).
        let plan = budget
            .plan(8, "inputs", |r| r.len() as u64 * 30 * UNIT)
            .unwrap();
        let ranges: Vec<_> = plan.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..8]);
        assert_eq!(plan[0].1, 90 * UNIT);
        // Tiny inputs: at most MAX_MICRO_BATCH a batch.
        let plan = budget.plan(70, "rows", |r| r.len() as u64).unwrap();
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0].0, 0..MAX_MICRO_BATCH);
    }

    #[test]
    fn an_input_bigger_than_the_whole_budget_is_refused_by_its_place() {
        let budget = PredictBudget::new(400 * UNIT, Duration::from_secs(1));
        let error = budget
            .plan(
                3,
                "inputs",
                |r| if r.contains(&1) { 500 * UNIT } else { UNIT },
            )
            .unwrap_err();
        match error {
            ServiceError::BadInput(e) => {
                assert_eq!(e.field, "inputs[1]");
                assert!(e.message.contains("KILN_PREDICT_MEMORY"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        // One that needs more than a quarter but fits the budget runs alone.
        let plan = budget
            .plan(3, "inputs", |r| r.len() as u64 * 150 * UNIT)
            .unwrap();
        assert_eq!(plan.len(), 3);
    }

    #[tokio::test]
    async fn a_taken_budget_makes_others_wait_then_fail_plainly() {
        let budget = PredictBudget::new(4 * UNIT, Duration::from_millis(100));
        let held = budget.take(3 * UNIT).await.unwrap();
        let error = budget.take(2 * UNIT).await.unwrap_err();
        assert!(matches!(error, ServiceError::Busy(m) if m.contains("KILN_PREDICT_MEMORY")));
        drop(held);
        let _ = budget.take(2 * UNIT).await.unwrap();
        // More than the whole budget takes the whole budget.
        let _ = budget.take(100 * UNIT).await.unwrap();
    }
}
