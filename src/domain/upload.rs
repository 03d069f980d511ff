//! A resumable upload (the tus protocol): what the client declared when it created the upload, how far
//! its bytes have come, and how it ended. The protocol's `Upload-Metadata` header is parsed here.

use std::collections::BTreeMap;

use base64::Engine;

use super::{DatasetFormat, FieldError, FieldNames};

/// Where a resumable upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UploadStatus {
    /// Bytes are coming (or will, when the client resumes).
    Receiving,
    /// Every byte is stored; the file is being checked and its dataset made.
    Validating,
    /// The dataset exists (`dataset_id`): READY or INVALID, as its own status says.
    Done,
    /// The bytes could not be turned into a dataset (`error` says why).
    Failed,
    /// Not finished before its expiry: its bytes are gone.
    Expired,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "RECEIVING",
            Self::Validating => "VALIDATING",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "RECEIVING" => Ok(Self::Receiving),
            "VALIDATING" => Ok(Self::Validating),
            "DONE" => Ok(Self::Done),
            "FAILED" => Ok(Self::Failed),
            "EXPIRED" => Ok(Self::Expired),
            other => Err(FieldError::new(
                "status",
                format!("unknown upload status {other:?}"),
            )),
        }
    }

    /// Nothing more happens to an upload in this status.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Expired)
    }
}

/// A stored resumable upload.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRecord {
    pub id: String,
    /// The dataset's name.
    pub name: String,
    pub file_name: String,
    pub format: DatasetFormat,
    /// The fields the dataset will be read by.
    pub fields: FieldNames,
    /// `Upload-Length`: the bytes the whole file has.
    pub length: i64,
    /// `Upload-Offset`: the bytes stored so far.
    pub offset: i64,
    pub status: UploadStatus,
    /// The staging area's id in the object store (an S3 multipart upload's id; empty on local files).
    pub multipart_id: String,
    /// The ids of the stored parts, in order.
    pub parts: Vec<String>,
    pub dataset_id: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub updated_at: i64,
}

/// What `uploadEvents` tells its followers: the bytes stored (or arriving) and where the upload
/// stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadProgress {
    pub offset: i64,
    pub length: i64,
    pub status: UploadStatus,
    pub dataset_id: Option<String>,
    pub error: Option<String>,
    pub expires_at: i64,
}

impl UploadRecord {
    pub fn progress(&self) -> UploadProgress {
        UploadProgress {
            offset: self.offset,
            length: self.length,
            status: self.status,
            dataset_id: self.dataset_id.clone(),
            error: self.error.clone(),
            expires_at: self.expires_at,
        }
    }

    /// This upload as `progress` says it is now.
    pub fn moved_to(&self, progress: UploadProgress) -> Self {
        Self {
            offset: progress.offset,
            length: progress.length,
            status: progress.status,
            dataset_id: progress.dataset_id,
            error: progress.error,
            expires_at: progress.expires_at,
            ..self.clone()
        }
    }
}

/// The largest `Upload-Metadata` header, in bytes.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Reads an `Upload-Metadata` header: comma-separated pairs of a key and its base64 value (the value may
/// be absent). Keys are ASCII without spaces or commas and appear once; values are UTF-8 here.
pub fn parse_upload_metadata(raw: &str) -> Result<BTreeMap<String, String>, FieldError> {
    const FIELD: &str = "Upload-Metadata";
    if raw.len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            FIELD,
            format!("is longer than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let mut out = BTreeMap::new();
    for pair in raw.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(FieldError::new(
                FIELD,
                format!("key {key:?} is not a plain ASCII word"),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| {
                FieldError::new(FIELD, format!("the value of {key:?} is not base64: {e}"))
            })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            FieldError::new(FIELD, format!("the value of {key:?} is not UTF-8 text"))
        })?;
        if out.insert(key.to_string(), value).is_some() {
            return Err(FieldError::new(FIELD, format!("key {key:?} appears twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_and_bad_ones_name_the_problem() {
        let parsed =
            parse_upload_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(parsed["filename"], "world_domination_plan.pdf");
        assert_eq!(parsed["is_confidential"], "");
        assert!(parse_upload_metadata("").unwrap().is_empty());
        let twice = parse_upload_metadata("a YQ==,a Yg==").unwrap_err();
        assert!(twice.message.contains("twice"), "{twice}");
        let bad = parse_upload_metadata("name !!!").unwrap_err();
        assert!(bad.message.contains("\"name\" is not base64"), "{bad}");
        assert!(parse_upload_metadata(&"a".repeat(MAX_METADATA_BYTES + 1)).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            UploadStatus::Receiving,
            UploadStatus::Validating,
            UploadStatus::Done,
            UploadStatus::Failed,
            UploadStatus::Expired,
        ] {
            assert_eq!(UploadStatus::parse(status.as_str()).unwrap(), status);
        }
        assert!(UploadStatus::Done.is_final() && !UploadStatus::Validating.is_final());
    }
}
