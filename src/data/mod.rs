//! Dataset files: parsing JSONL, CSV (its delimiter and header found by reading its start) and Parquet,
//! validation with errors that name the line (or row) and the problem, the user's own rules, label
//! statistics, and reading examples back for training.
//!
//! One streaming pass does validation and statistics ([`scan`]) in constant memory: it keeps counts and
//! the first errors. For training, the same pass builds an index of where each valid row is
//! ([`index`]), and the examples are then read back a row at a time ([`IndexedRows`]), so memory grows
//! with the number of rows (12 bytes a row), not with their size. A Parquet file's rows are decoded a
//! row group at a time; to be indexed they are written out once as JSONL lines, which are then read
//! back like a JSONL file's.
//!
//! Limits: a line is at most [`ReadOptions::max_line_bytes`] bytes (`KILN_MAX_LINE_BYTES`, 1 MiB by
//! default; a longer line is an error naming it, skipped without being held in memory); a text is at
//! most [`MAX_TEXT_CHARS`] characters; a file has at most [`MAX_LABELS`] distinct labels and
//! [`MAX_FEATURES`] feature columns; at most [`MAX_REPORTED_ERRORS`] errors are listed (the count covers
//! all of them). Feature values must be finite as 32-bit floats.

pub mod augment;
pub(crate) mod lines;
mod parquet;
pub mod pii;
mod record;
pub mod rewrite;
mod rows;
mod scan;
mod sniff;
mod stats;

pub use record::row_label;
pub use rows::{IndexedRows, RowSource};
pub use scan::{Scan, index, scan};
pub use stats::{Overlap, length_summary, overlap, text_key};

use crate::domain::{DatasetFormat, ValidationRules};
pub use crate::domain::{FieldNames, MAX_TEXT_CHARS};

pub const MAX_LABELS: usize = 1_000;
pub const MAX_FEATURES: usize = 10_000;
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Default of [`ReadOptions::max_line_bytes`].
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// How to read one dataset file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    pub format: DatasetFormat,
    pub names: FieldNames,
    /// The rules its rows must meet besides being readable.
    pub rules: ValidationRules,
    /// The longest line accepted, in bytes.
    pub max_line_bytes: usize,
}

impl ReadOptions {
    pub fn new(format: DatasetFormat, names: FieldNames) -> Self {
        Self {
            format,
            names,
            rules: ValidationRules::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}
