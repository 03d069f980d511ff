//! What a dataset is, independent of where its bytes live: its format and kind, what validation found
//! ([`DatasetSummary`]), its stored record, and the examples a training run reads from it ([`TrainData`]).

use std::collections::BTreeMap;

use super::{
    DatasetStats, FieldError, FieldNames, FileLayout, ObjectKey, PiiReport, TokenLengths,
    ValidationRules,
};

/// The file format of an uploaded dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    Jsonl,
    Csv,
    Parquet,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "JSONL",
            Self::Csv => "CSV",
            Self::Parquet => "PARQUET",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "JSONL" => Ok(Self::Jsonl),
            "CSV" => Ok(Self::Csv),
            "PARQUET" => Ok(Self::Parquet),
            other => Err(FieldError::new(
                "format",
                format!("unknown format {other:?}"),
            )),
        }
    }

    /// Guesses the format from a file name's extension, for uploads that do not say.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || lower.ends_with(".json") {
            Some(Self::Jsonl)
        } else if lower.ends_with(".csv") || lower.ends_with(".tsv") {
            Some(Self::Csv)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(Self::Parquet)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }
}

/// What a dataset can train: text classification (a text field and a label) or tabular classification
/// (numeric feature columns and a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Text,
    Tabular,
}

impl DatasetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "TEXT",
            Self::Tabular => "TABULAR",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "TEXT" => Ok(Self::Text),
            "TABULAR" => Ok(Self::Tabular),
            other => Err(FieldError::new(
                "kind",
                format!("unknown dataset kind {other:?}"),
            )),
        }
    }
}

/// `Uploaded` while bytes are stored and validation has not finished; then `Ready` or `Invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetStatus {
    Uploaded,
    Ready,
    Invalid,
}

impl DatasetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "UPLOADED",
            Self::Ready => "READY",
            Self::Invalid => "INVALID",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "UPLOADED" => Ok(Self::Uploaded),
            "READY" => Ok(Self::Ready),
            "INVALID" => Ok(Self::Invalid),
            other => Err(FieldError::new(
                "status",
                format!("unknown dataset status {other:?}"),
            )),
        }
    }
}

/// Where a dataset is in its life: `Fresh` until a job trains on it, `Used` after, `Archived` while an
/// operator has put it away (no new job may train on it; it can be restored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetLifecycle {
    Fresh,
    Used,
    Archived,
}

impl DatasetLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "FRESH",
            Self::Used => "USED",
            Self::Archived => "ARCHIVED",
        }
    }
}

/// One problem in a file. `line` is the 1-based line of the file (for CSV the header, when there is one,
/// is line 1; for Parquet it is the 1-based row); `None` for problems of the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: Option<u64>,
    pub message: String,
}

/// What one validation pass over a file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetSummary {
    pub kind: Option<DatasetKind>,
    /// Valid rows.
    pub row_count: u64,
    /// Label → number of rows, sorted by label.
    pub labels: BTreeMap<String, u64>,
    /// Feature columns of a tabular file, in file order (JSONL: sorted by name).
    pub features: Vec<String>,
    /// The first problems found (at most `data::MAX_REPORTED_ERRORS`).
    pub errors: Vec<RowError>,
    /// Every problem found.
    pub error_count: u64,
    /// The file's columns and, for CSV, its delimiter and header.
    pub layout: FileLayout,
    /// What is in it; `None` until it has been read (or for a dataset checked before kiln kept
    /// statistics).
    pub stats: Option<DatasetStats>,
    /// Personal data and secrets in its texts; `None` until read (and for a table).
    pub pii: Option<PiiReport>,
}

impl DatasetSummary {
    pub fn is_valid(&self) -> bool {
        self.error_count == 0
    }

    /// `READY` for a valid file, `INVALID` otherwise.
    pub fn status(&self) -> DatasetStatus {
        if self.is_valid() {
            DatasetStatus::Ready
        } else {
            DatasetStatus::Invalid
        }
    }
}

/// A stored dataset.
#[derive(Debug, Clone)]
pub struct DatasetRecord {
    pub id: String,
    pub name: String,
    pub format: DatasetFormat,
    pub status: DatasetStatus,
    pub object_key: ObjectKey,
    pub size_bytes: i64,
    pub sha256: String,
    /// The fields it is read by: the text, the label and, for a table, the features.
    pub fields: FieldNames,
    /// The rules its rows were checked against.
    pub rules: ValidationRules,
    /// Empty until validation has finished.
    pub summary: DatasetSummary,
    pub created_at: i64,
    /// When a job first trained on it.
    pub used_at: Option<i64>,
    pub archived_at: Option<i64>,
    /// How it was made from another dataset (a redacted copy, …); `None` for an upload.
    pub derivation: Option<Derivation>,
    /// Its texts' lengths in tokens, per tokenizer measured (`measureTokenLengths`).
    pub token_lengths: Vec<TokenLengths>,
}

/// What made a derived dataset: the operation, its parent, and the spec it ran with (and the spec's
/// SHA-256, so that the same operation on the same parent is recognisable).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Derivation {
    pub operation: DerivationKind,
    /// `None` for a dataset generated from templates.
    #[serde(default)]
    pub parent_id: Option<String>,
    pub spec: serde_json::Value,
    pub spec_hash: String,
}

impl Derivation {
    pub fn new(
        operation: DerivationKind,
        parent_id: Option<String>,
        spec: serde_json::Value,
    ) -> Self {
        use sha2::Digest;
        // serde_json writes object keys sorted, so the hash does not depend on their order.
        let spec_hash = hex::encode(sha2::Sha256::digest(spec.to_string().as_bytes()));
        Self {
            operation,
            parent_id,
            spec,
            spec_hash,
        }
    }
}

/// How a derived dataset was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivationKind {
    Redact,
    Augment,
    Balance,
    /// Generated from templates (`parent_id` is `None`).
    Synthesize,
}

impl DatasetRecord {
    pub fn lifecycle(&self) -> DatasetLifecycle {
        if self.archived_at.is_some() {
            DatasetLifecycle::Archived
        } else if self.used_at.is_some() {
            DatasetLifecycle::Used
        } else {
            DatasetLifecycle::Fresh
        }
    }
}

/// What the rows of a training run hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExampleKind {
    Text,
    Tabular { feature_names: Vec<String> },
}

/// The examples a training run reads, a row at a time, so that a dataset is never held in memory whole:
/// only each row's label is (4 bytes a row). `data/` reads them from a file through an index of row
/// offsets; rows were validated when the index was built.
pub trait Examples: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> &ExampleKind;
    /// Each row's label, an index into [`Examples::label_names`].
    fn labels(&self) -> &[u32];
    /// Label names, sorted.
    fn label_names(&self) -> &[String];
    /// The text of a row of a text dataset.
    fn text(&self, row: usize) -> anyhow::Result<String>;
    /// The features of a row of a tabular dataset, in the order of its `feature_names`.
    fn features(&self, row: usize) -> anyhow::Result<Vec<f32>>;

    /// The text a run trains on for `row` in `epoch` (from 1): the row's text, or an augmented draw
    /// of it when the run augments on the fly. Validation reads [`Examples::text`].
    fn training_text(&self, row: usize, epoch: u32) -> anyhow::Result<String> {
        let _ = epoch;
        self.text(row)
    }

    fn len(&self) -> usize {
        self.labels().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A training run's examples, shared between the threads that read them.
pub type TrainData = std::sync::Arc<dyn Examples>;
