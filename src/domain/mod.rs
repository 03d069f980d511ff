//! Pure types of kiln's domain, with no I/O. Every value that crosses the API edge is parsed into one of
//! these types exactly once ("parse, don't validate"); the code behind the edge never checks it again.
//!
//! The records every layer passes around (a job, a dataset, a model version, a job's progress, an
//! epoch's metrics, the model manifest) live here too, so `store/` decodes into them, `service/` returns
//! them and `api/` maps them, without any of those layers importing another's internals.
//!
//! A parse failure is a [`FieldError`]: it names the input field and the problem, so the API can answer
//! `BAD_USER_INPUT` with a message a user can act on. A failure deeper down whose message is safe and
//! useful to show is a [`UserError`].

mod augment;
mod dataset;
mod hyper;
mod job;
mod logs;
mod manifest;
mod model;
mod names;
mod profile;
mod queue;
mod reading;
mod registry;
mod resources;
mod spec;
mod stats;
mod time;
mod upload;

pub use augment::{
    AugmentPlan, AugmentPlanInput, Augmentation, AugmentationInput, BalancePlan, BalanceStrategy,
    DEFAULT_AUGMENT_SEED, DEFAULT_BALANCE_TECHNIQUES, DEFAULT_PROBABILITY, LabelShareInput,
    MAX_AUGMENTATION_FACTOR, MAX_DERIVED_ROWS, MAX_SLOT_VALUE_CHARS, MAX_SLOT_VALUES, MAX_SLOTS,
    MAX_SYNTHETIC_ROWS, MAX_TEMPLATE_CHARS, MAX_TEMPLATES, Piece, SlotInput, SyntheticInput,
    SyntheticSpec, Technique, TechniqueInput, TechniqueSetting, TemplateInput,
};
pub use dataset::{
    DatasetFormat, DatasetKind, DatasetLifecycle, DatasetRecord, DatasetStatus, DatasetSummary,
    Derivation, DerivationKind, ExampleKind, Examples, RowError, TrainData,
};
pub use hyper::{
    ClassWeights, ClassWeightsInput, CustomizationInput, CustomizationMethod, EarlyStopping,
    EarlyStoppingMetric, Hyperparams, HyperparamsInput, LabelWeight, LoraSettings, LoraTarget,
    LrSchedule, OptimizerChoice, input_from_json,
};
pub use job::{
    CheckpointRecord, EpochMetrics, JobFilter, JobProgress, JobRecord, JobStatus, LabelMetrics,
    MetricPoint, ModelConfig, ModelConfigInput, ParameterCount, Priority, RETRY_CANCELLED,
    RETRY_PROMISE, TaskKind,
};
pub use logs::{LogLevel, LogLine, MAX_LOG_LINE_CHARS, MAX_LOG_LINES};
pub use manifest::{ModelArchitecture, ModelManifest, Pooling, Standardization};
pub use model::{ModelRecord, ModelVersionRecord, version_number};
pub use names::{DisplayName, ModelName, ObjectKey, abbreviate, closest, is_plausible_id};
pub use profile::{
    Bucket, DatasetStats, FeatureSummary, LabelConflict, LengthSummary, MAX_CONFLICT_LINES,
    MAX_LISTED_CONFLICTS, MAX_PII_SAMPLES, MAX_TOKEN_MEASUREMENTS, MAX_TRACKED_ROWS, PiiFindings,
    PiiKind, PiiReport, PiiSample, TokenLengths,
};
pub use queue::{LiveWorker, QueuePlace, QueueSnapshot, QueuedJob, RunningJob, WorkerCounts};
pub use reading::{
    CsvDialect, FieldNames, FileLayout, MAX_ALLOWED_LABELS, MAX_MAPPED_FEATURES,
    MAX_REQUIRED_FIELDS, MAX_TEXT_CHARS, MappingInput, RulesInput, ValidationRules,
};
pub use registry::{
    AliasChange, AliasName, AliasRequests, AliasTarget, Comparison, ModelAlias, PromotionPolicy,
    Rule, RuleMetric, SplitArm, Threshold, Verdict, metric_table,
};
pub use resources::{Resources, ResourcesInput, gpus_phrase};
pub use spec::{
    BaseModelRef, HubModel, RegisteredModel, TrainingInput, TrainingSettings, VersionSelector,
};
pub use stats::{JobGroup, MetricSummary};
pub use time::{parse_timestamp, timestamp};
pub use upload::{
    MAX_METADATA_BYTES, UploadProgress, UploadRecord, UploadStatus, parse_upload_metadata,
};

/// One input field that failed to parse: `field` is the path of the field in the API's input
/// (`hyperparameters.epochs`), `message` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A failure whose message was written for the person who reads it: it says what went wrong in the
/// user's terms and what to do, and holds no server paths, URLs of internal services or OS errors.
///
/// Deeper layers return it inside an `anyhow::Error` chain, optionally wrapping the cause it explains
/// ([`UserError::wrap`]); whoever reports a failure to a user shows the innermost one
/// ([`UserError::find_in`]), the most specific explanation, and keeps the whole chain for the server log.
#[derive(Debug)]
pub struct UserError {
    message: String,
    cause: Option<anyhow::Error>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cause: None,
        }
    }

    /// Explains `cause` to the user; the cause stays in the chain for the log.
    pub fn wrap(message: impl Into<String>, cause: impl Into<anyhow::Error>) -> anyhow::Error {
        Self {
            message: message.into(),
            cause: Some(cause.into()),
        }
        .into()
    }

    /// The innermost user-facing message in an error chain.
    pub fn find_in(error: &anyhow::Error) -> Option<&str> {
        error
            .chain()
            .filter_map(|cause| cause.downcast_ref::<UserError>())
            .last()
            .map(|e| e.message.as_str())
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|c| &**c as &(dyn std::error::Error + 'static))
    }
}

/// Milliseconds since the Unix epoch: the one representation of time in the store (portable across
/// SQLite and Postgres).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_innermost_user_message_is_the_one_shown() {
        let inner: anyhow::Error =
            UserError::new("the loss became NaN; try a lower learning rate").into();
        let wrapped = UserError::wrap(
            "training failed",
            Err::<(), _>(inner)
                .context("training /srv/kiln/work/jobs/1")
                .unwrap_err(),
        );
        assert_eq!(
            UserError::find_in(&wrapped),
            Some("the loss became NaN; try a lower learning rate")
        );
        let generic = UserError::wrap("training failed", anyhow::anyhow!("os error 111"));
        assert_eq!(UserError::find_in(&generic), Some("training failed"));
        let internal = anyhow::anyhow!("connection refused (os error 111)");
        assert_eq!(UserError::find_in(&internal), None);
    }
}
