//! What is in a dataset, as its validation pass measured it: labels and their balance, repeated rows,
//! texts labelled two ways, empty texts, text lengths, and each feature column's summary. Stored with
//! the dataset as JSON, so older rows (without some field) read back with its default.

use serde::{Deserialize, Serialize};

/// The most label conflicts listed, and the most lines listed for each.
pub const MAX_LISTED_CONFLICTS: usize = 100;
pub const MAX_CONFLICT_LINES: usize = 10;
/// The most distinct texts (or feature rows) whose repeats are tracked in one pass; past it, repeats
/// and overlaps are counted among the first this many only, and the statistics say so.
/// 900 000 keeps the table within 2^20 slots (a table doubles when 7/8 of its slots are taken).
pub const MAX_TRACKED_ROWS: usize = 900_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DatasetStats {
    /// Valid rows.
    pub rows: u64,
    /// Rows of the most frequent label over rows of the least frequent; `None` with under two labels.
    pub imbalance_ratio: Option<f64>,
    /// Rows that repeat an earlier row exactly: the same text (or features) and the same label.
    pub duplicate_rows: u64,
    /// Distinct texts (or feature rows) that occur with two or more labels, and the rows that hold them.
    pub conflicting_texts: u64,
    pub conflicting_rows: u64,
    /// The first [`MAX_LISTED_CONFLICTS`] of them.
    pub conflicts: Vec<LabelConflict>,
    /// Rows whose text is empty or only whitespace (they are errors too).
    pub empty_texts: u64,
    /// Text lengths in characters, over valid rows of a text dataset.
    pub text_length: Option<LengthSummary>,
    /// Each feature column of a table, in the dataset's feature order.
    pub features: Vec<FeatureSummary>,
    /// Whether every row's repeats were tracked (false past [`MAX_TRACKED_ROWS`] distinct rows).
    pub complete: bool,
}

/// One text labelled two or more ways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelConflict {
    /// The text, whitespace collapsed, at most 200 characters.
    pub excerpt: String,
    /// Each label it has and on how many rows, by label.
    pub labels: Vec<(String, u64)>,
    /// The lines (Parquet: rows) it is on, the first [`MAX_CONFLICT_LINES`].
    pub lines: Vec<u64>,
}

/// A distribution of lengths: its extremes, mean and percentiles, and a histogram for a chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LengthSummary {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    /// At most 20 equal-width buckets from the shortest length to the 99th percentile; the last one
    /// also holds every longer text.
    pub histogram: Vec<Bucket>,
}

/// Lengths in `[from, to]` and how many rows have them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Bucket {
    pub from: u64,
    pub to: u64,
    pub count: u64,
}

/// One numeric column: over the rows where it is a number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FeatureSummary {
    pub name: String,
    pub count: u64,
    /// Rows where it is missing, null or blank.
    pub missing: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// The population standard deviation.
    pub std: Option<f64>,
}

/// A kind of personal data or secret the scan finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Ssn,
    IpAddress,
    Iban,
    Secret,
}

impl PiiKind {
    pub const ALL: [PiiKind; 7] = [
        Self::Email,
        Self::Phone,
        Self::CreditCard,
        Self::Ssn,
        Self::IpAddress,
        Self::Iban,
        Self::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "EMAIL",
            Self::Phone => "PHONE",
            Self::CreditCard => "CREDIT_CARD",
            Self::Ssn => "SSN",
            Self::IpAddress => "IP_ADDRESS",
            Self::Iban => "IBAN",
            Self::Secret => "SECRET",
        }
    }
}

/// The most samples kept per kind of finding.
pub const MAX_PII_SAMPLES: usize = 10;

/// What the scan for personal data found in a dataset's texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PiiReport {
    /// Rows with at least one finding.
    pub rows: u64,
    /// Each kind found, in [`PiiKind::ALL`] order.
    pub findings: Vec<PiiFindings>,
}

impl PiiReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// `3 EMAIL, 1 PHONE`.
    pub fn describe(&self) -> String {
        self.findings
            .iter()
            .map(|f| format!("{} {}", f.count, f.kind.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One kind of finding: how many, on how many rows, and the first few, masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PiiFindings {
    pub kind: PiiKind,
    pub count: u64,
    pub rows: u64,
    #[serde(default)]
    pub samples: Vec<PiiSample>,
}

/// Where a finding is (the line; Parquet: the row) and the text around it with it masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PiiSample {
    pub line: u64,
    pub excerpt: String,
}

/// The most tokenizers a dataset keeps token lengths for (the oldest measurement goes first).
pub const MAX_TOKEN_MEASUREMENTS: usize = 10;

/// Text lengths in tokens of one tokenizer, special tokens included and nothing cut off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenLengths {
    /// The base model whose tokenizer counted: as given (`hf:org/name`, `model:NAME/VERSION`, a folder).
    pub tokenizer: String,
    pub measured_at: i64,
    pub lengths: LengthSummary,
}
