//! What a dataset is, independent of where its bytes live.

use super::FieldError;

/// The file format of an uploaded dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    Jsonl,
    Csv,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "JSONL",
            Self::Csv => "CSV",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "JSONL" => Ok(Self::Jsonl),
            "CSV" => Ok(Self::Csv),
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
        } else if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else {
            None
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
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
