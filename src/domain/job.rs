//! Jobs: their lifecycle, priority, the training settings a user may choose, and what a job records as
//! it runs (progress, epoch metrics, step metrics).

use serde::{Deserialize, Serialize};

use super::{DatasetKind, FieldError, TrainingSettings};

/// Where a job is in its life. Transitions are checked by [`JobStatus::can_become`]; the store refuses a
/// write that is not a legal transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| FieldError::new("status", format!("unknown job status {raw:?}")))
    }

    /// A terminal job has ended: nothing runs it any more. Only `retryJob` takes a `FAILED` or
    /// `CANCELLED` one back to the queue; a `COMPLETED` job never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The legal transitions. `Running → Running` is a worker taking over a job whose previous worker's
    /// lease expired; `Running → Queued` puts a job back (shutdown, an automatic retry);
    /// `Queued → Paused` holds a queued job; `Failed | Cancelled → Queued` is `retryJob`.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Paused | Cancelled)
                | (
                    Running,
                    Running | Queued | Paused | Completed | Failed | Cancelled
                )
                | (Paused, Queued | Cancelled)
                | (Failed | Cancelled, Queued)
        )
    }

    /// The statuses from which `next` may be reached: what a conditional `UPDATE … WHERE status IN (…)`
    /// needs.
    pub fn sources_of(next: JobStatus) -> Vec<JobStatus> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_become(next))
            .collect()
    }
}

/// Queue priority: higher runs first; within one priority, older runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    /// The integer stored in the database, so that `ORDER BY priority DESC` is the queue order.
    pub fn rank(self) -> i32 {
        match self {
            Self::Low => 0,
            Self::Normal => 1,
            Self::High => 2,
            Self::Urgent => 3,
        }
    }

    pub fn from_rank(rank: i32) -> Self {
        match rank {
            i32::MIN..=0 => Self::Low,
            1 => Self::Normal,
            2 => Self::High,
            _ => Self::Urgent,
        }
    }
}

/// What a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskKind {
    TextClassification,
    TabularClassification,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TextClassification => "TEXT_CLASSIFICATION",
            Self::TabularClassification => "TABULAR_CLASSIFICATION",
        }
    }

    /// The kind of dataset this task trains on.
    pub fn dataset_kind(self) -> DatasetKind {
        match self {
            Self::TextClassification => DatasetKind::Text,
            Self::TabularClassification => DatasetKind::Tabular,
        }
    }

    /// The task a dataset of `kind` trains.
    pub fn for_dataset(kind: DatasetKind) -> Self {
        match kind {
            DatasetKind::Text => Self::TextClassification,
            DatasetKind::Tabular => Self::TabularClassification,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "TEXT_CLASSIFICATION" => Ok(Self::TextClassification),
            "TABULAR_CLASSIFICATION" => Ok(Self::TabularClassification),
            other => Err(FieldError::new("task", format!("unknown task {other:?}"))),
        }
    }
}

/// Hyperparameters as a user sends them: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperparamsInput {
    pub epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub learning_rate: Option<f64>,
    pub validation_split: Option<f64>,
    pub seed: Option<i64>,
    pub max_seq_length: Option<i64>,
    pub checkpoint_every_steps: Option<i64>,
    pub keep_checkpoints: Option<i64>,
}

/// Checked hyperparameters with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparams {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub validation_split: f64,
    pub seed: u64,
    pub max_seq_length: u32,
    /// A checkpoint every this many steps besides the one after each epoch (`None`: epochs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_steps: Option<u32>,
    /// How many of a job's newest checkpoints are kept.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: u32,
}

fn default_keep_checkpoints() -> u32 {
    Hyperparams::DEFAULT_KEEP_CHECKPOINTS
}

impl Hyperparams {
    pub const DEFAULT_EPOCHS: u32 = 3;
    pub const MAX_EPOCHS: i64 = 1000;
    pub const DEFAULT_BATCH_SIZE: u32 = 16;
    pub const MAX_BATCH_SIZE: i64 = 4096;
    /// Learning rate when fine-tuning pretrained weights.
    pub const DEFAULT_FINE_TUNE_LR: f64 = 5e-5;
    /// Learning rate when training from random weights (small BERT, MLP).
    pub const DEFAULT_FROM_SCRATCH_LR: f64 = 1e-3;
    pub const DEFAULT_VALIDATION_SPLIT: f64 = 0.2;
    pub const DEFAULT_SEED: u64 = 42;
    pub const DEFAULT_MAX_SEQ_LENGTH: u32 = 128;
    pub const MAX_SEQ_LENGTH: i64 = 512;
    pub const DEFAULT_KEEP_CHECKPOINTS: u32 = 2;
    pub const MAX_KEEP_CHECKPOINTS: i64 = 100;
    pub const MAX_CHECKPOINT_EVERY_STEPS: i64 = 1_000_000;

    /// Parses user input; `pretrained` selects the default learning rate. Field paths are reported under
    /// `prefix` (`hyperparameters`).
    pub fn parse(
        prefix: &str,
        input: &HyperparamsInput,
        pretrained: bool,
    ) -> Result<Self, FieldError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let int_in = |name: &str, value: Option<i64>, default: i64, lo: i64, hi: i64| {
            let v = value.unwrap_or(default);
            if v < lo || v > hi {
                Err(FieldError::new(
                    field(name),
                    format!("must be between {lo} and {hi} (got {v})"),
                ))
            } else {
                Ok(v)
            }
        };
        let epochs = int_in(
            "epochs",
            input.epochs,
            Self::DEFAULT_EPOCHS as i64,
            1,
            Self::MAX_EPOCHS,
        )?;
        let batch_size = int_in(
            "batchSize",
            input.batch_size,
            Self::DEFAULT_BATCH_SIZE as i64,
            1,
            Self::MAX_BATCH_SIZE,
        )?;
        let default_lr = if pretrained {
            Self::DEFAULT_FINE_TUNE_LR
        } else {
            Self::DEFAULT_FROM_SCRATCH_LR
        };
        let learning_rate = input.learning_rate.unwrap_or(default_lr);
        if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 1.0) {
            return Err(FieldError::new(
                field("learningRate"),
                format!("must be greater than 0 and at most 1 (got {learning_rate})"),
            ));
        }
        let validation_split = input
            .validation_split
            .unwrap_or(Self::DEFAULT_VALIDATION_SPLIT);
        if !(validation_split.is_finite() && validation_split > 0.0 && validation_split < 1.0) {
            return Err(FieldError::new(
                field("validationSplit"),
                format!("must be strictly between 0 and 1 (got {validation_split})"),
            ));
        }
        let seed = int_in("seed", input.seed, Self::DEFAULT_SEED as i64, 0, i64::MAX)?;
        let max_seq_length = int_in(
            "maxSeqLength",
            input.max_seq_length,
            Self::DEFAULT_MAX_SEQ_LENGTH as i64,
            8,
            Self::MAX_SEQ_LENGTH,
        )?;
        let checkpoint_every_steps = match input.checkpoint_every_steps {
            Some(v) => Some(int_in(
                "checkpointEverySteps",
                Some(v),
                1,
                1,
                Self::MAX_CHECKPOINT_EVERY_STEPS,
            )? as u32),
            None => None,
        };
        let keep_checkpoints = int_in(
            "keepCheckpoints",
            input.keep_checkpoints,
            Self::DEFAULT_KEEP_CHECKPOINTS as i64,
            1,
            Self::MAX_KEEP_CHECKPOINTS,
        )?;
        Ok(Self {
            epochs: epochs as u32,
            batch_size: batch_size as u32,
            learning_rate,
            validation_split,
            seed: seed as u64,
            max_seq_length: max_seq_length as u32,
            checkpoint_every_steps,
            keep_checkpoints: keep_checkpoints as u32,
        })
    }
}

/// Size of a small random-initialised BERT, as a user sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfigInput {
    pub hidden_size: Option<i64>,
    pub num_layers: Option<i64>,
    pub num_heads: Option<i64>,
    pub intermediate_size: Option<i64>,
}

/// Checked size of a small random-initialised BERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    pub hidden_size: u32,
    pub num_layers: u32,
    pub num_heads: u32,
    pub intermediate_size: u32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_layers: 2,
            num_heads: 2,
            intermediate_size: 128,
        }
    }
}

impl ModelConfig {
    pub fn parse(prefix: &str, input: &ModelConfigInput) -> Result<Self, FieldError> {
        let d = Self::default();
        let int_in = |name: &str, value: Option<i64>, default: u32, lo: i64, hi: i64| {
            let v = value.unwrap_or(default as i64);
            if v < lo || v > hi {
                Err(FieldError::new(
                    format!("{prefix}.{name}"),
                    format!("must be between {lo} and {hi} (got {v})"),
                ))
            } else {
                Ok(v as u32)
            }
        };
        let hidden_size = int_in("hiddenSize", input.hidden_size, d.hidden_size, 8, 1024)?;
        let num_layers = int_in("numLayers", input.num_layers, d.num_layers, 1, 24)?;
        let num_heads = int_in("numHeads", input.num_heads, d.num_heads, 1, 32)?;
        let intermediate_size = int_in(
            "intermediateSize",
            input.intermediate_size,
            d.intermediate_size,
            8,
            4096,
        )?;
        if hidden_size % num_heads != 0 {
            return Err(FieldError::new(
                format!("{prefix}.numHeads"),
                format!("must divide hiddenSize ({hidden_size} is not a multiple of {num_heads})"),
            ));
        }
        Ok(Self {
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size,
        })
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub model_name: String,
    pub dataset_id: String,
    /// Task, base model, model size and hyperparameters, checked at submit.
    pub settings: TrainingSettings,
    pub priority: Priority,
    pub status: JobStatus,
    /// For a failed job: what failed and what to do, written for the user, with the reference under which
    /// the server log holds the details.
    pub error: Option<String>,
    pub progress: Option<JobProgress>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub cancel_requested: bool,
    /// A user asked a running job to pause: it checkpoints at its next step and becomes `PAUSED`.
    pub pause_requested: bool,
    /// A queued job is not claimed before this time (epoch ms): an automatic retry's backoff.
    pub next_attempt_at: Option<i64>,
    /// The longest the job may run, over all its attempts, in milliseconds.
    pub max_duration_ms: Option<i64>,
    /// Running time of the attempts before the current one, in milliseconds.
    pub run_ms: i64,
    /// When the current attempt was claimed (epoch ms).
    pub attempt_started_at: Option<i64>,
    pub model_version_id: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Where a running job is, as last written by its worker (`Job.progress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub epoch: u32,
    pub total_epochs: u32,
    pub step: u64,
    pub total_steps: u64,
    pub percent: f64,
    pub elapsed_seconds: f64,
    pub eta_seconds: Option<f64>,
    /// Set when the job's progress has not moved for `KILN_STALL_SECONDS` while its lease is held:
    /// since when (epoch ms). Cleared by the next progress written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_since: Option<i64>,
}

impl JobProgress {
    /// Progress after `step` of `total_steps`, `elapsed_seconds` into the run; the ETA assumes the
    /// remaining steps take as long as the finished ones did.
    pub fn at(
        epoch: u32,
        total_epochs: u32,
        step: u64,
        total_steps: u64,
        elapsed_seconds: f64,
    ) -> Self {
        let done = step as f64 / total_steps.max(1) as f64;
        Self {
            epoch,
            total_epochs,
            step,
            total_steps,
            percent: (done * 100.0 * 100.0).round() / 100.0,
            elapsed_seconds,
            eta_seconds: (done > 0.0).then(|| elapsed_seconds * (1.0 - done) / done),
            stalled_since: None,
        }
    }
}

/// One epoch's results on the validation split. Precision, recall and F1 are macro averages over the
/// labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    pub val_loss: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// A stored checkpoint of a job (`Job.checkpoints`): its files are in the object store under
/// `object_prefix`, the manifest written last.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub job_id: String,
    /// Optimizer steps done when it was written.
    pub step: u64,
    /// Epochs finished when it was written.
    pub epoch: u32,
    pub size_bytes: u64,
    pub object_prefix: String,
    pub created_at: i64,
}

/// One recorded value of a named step metric (`train_loss`, `learning_rate`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub name: String,
    pub step: i64,
    pub epoch: i64,
    pub value: f64,
    pub created_at: i64,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub model_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_jobs_change_only_by_a_retry() {
        for to in JobStatus::ALL {
            assert!(!JobStatus::Completed.can_become(to), "COMPLETED -> {to:?}");
            for from in [JobStatus::Failed, JobStatus::Cancelled] {
                assert_eq!(
                    from.can_become(to),
                    to == JobStatus::Queued,
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(JobStatus::Queued.can_become(JobStatus::Running));
        assert!(!JobStatus::Queued.can_become(JobStatus::Completed));
    }

    #[test]
    fn hyperparameters_get_documented_defaults() {
        let h = Hyperparams::parse("hyperparameters", &HyperparamsInput::default(), true).unwrap();
        assert_eq!(h.epochs, 3);
        assert_eq!(h.batch_size, 16);
        assert_eq!(h.learning_rate, 5e-5);
        assert_eq!(h.validation_split, 0.2);
        let h = Hyperparams::parse("hyperparameters", &HyperparamsInput::default(), false).unwrap();
        assert_eq!(h.learning_rate, 1e-3);
    }

    #[test]
    fn bad_hyperparameters_name_their_field() {
        let bad = |input: HyperparamsInput| {
            Hyperparams::parse("hyperparameters", &input, false)
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad(HyperparamsInput {
                epochs: Some(0),
                ..Default::default()
            }),
            "hyperparameters.epochs"
        );
        assert_eq!(
            bad(HyperparamsInput {
                learning_rate: Some(0.0),
                ..Default::default()
            }),
            "hyperparameters.learningRate"
        );
        assert_eq!(
            bad(HyperparamsInput {
                validation_split: Some(1.0),
                ..Default::default()
            }),
            "hyperparameters.validationSplit"
        );
        assert_eq!(
            bad(HyperparamsInput {
                batch_size: Some(0),
                ..Default::default()
            }),
            "hyperparameters.batchSize"
        );
    }

    #[test]
    fn heads_must_divide_the_hidden_size() {
        let input = ModelConfigInput {
            hidden_size: Some(64),
            num_heads: Some(3),
            ..Default::default()
        };
        assert_eq!(
            ModelConfig::parse("modelConfig", &input).unwrap_err().field,
            "modelConfig.numHeads"
        );
    }
}
