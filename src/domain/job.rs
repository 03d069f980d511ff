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

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Normal => "NORMAL",
            Self::High => "HIGH",
            Self::Urgent => "URGENT",
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

/// How `Job.error` ends while a failed attempt waits for its automatic retry, and what replaces it
/// when the job is cancelled before that retry.
pub const RETRY_PROMISE: &str = "; it is retried automatically";
pub const RETRY_CANCELLED: &str = "; the job was cancelled before its retry";

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
    /// The alias to move to the version this job trains, if that version passes the alias's policy.
    pub auto_promote: Option<String>,
    /// Why the job was submitted, as its submitter said.
    pub reason: Option<String>,
    /// Where its latest attempt trained (`cpu`, `cuda:N`); `None` before one starts.
    pub device: Option<String>,
    /// What it asked of the machine it runs on.
    pub resources: super::Resources,
    /// The fields it reads from its dataset, chosen at submit; `None` for a job from before kiln kept
    /// them: the dataset's own.
    pub fields: Option<super::FieldNames>,
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
    /// Set once the model is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_count: Option<ParameterCount>,
    /// Training throughput at the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_second: Option<f64>,
    /// When this progress was measured (epoch ms): `eta_seconds` counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<i64>,
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
            parameter_count: None,
            samples_per_second: None,
            measured_at: Some(super::now_ms()),
        }
    }

    /// When the job should end, by its ETA.
    pub fn estimated_end_at(&self) -> Option<i64> {
        Some(self.measured_at? + (self.eta_seconds? * 1000.0) as i64)
    }
}

/// One epoch's results on the validation split. Precision, recall and F1 are macro averages over the
/// labels; `per_label` and `confusion_matrix` break them down (empty in epochs stored before kiln
/// recorded them).
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
    /// One entry per label, in the model's label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_label: Vec<LabelMetrics>,
    /// `confusion_matrix[actual][predicted]`: validation examples of label `actual` predicted as
    /// `predicted`, in the model's label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// One label's results on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelMetrics {
    pub label: String,
    /// Of the examples predicted as this label, the share that are (0 when none is).
    pub precision: f64,
    /// Of the examples of this label, the share predicted as it (0 when there are none).
    pub recall: f64,
    pub f1: f64,
    /// Validation examples of this label.
    pub support: u64,
}

/// How many parameters a run trains, of how many the model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterCount {
    pub trainable: u64,
    pub total: u64,
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
    /// The jobs training (or that trained) on this dataset.
    pub dataset_id: Option<String>,
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
