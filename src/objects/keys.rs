//! Where things live in the object store, in one place; the code and the tests build keys only here.
//!
//! ```text
//! datasets/<dataset id>/data.<jsonl|csv|parquet>  an uploaded dataset, as uploaded
//! datasets/<dataset id>/row-keys              the keys of its distinct rows, for overlapWith
//! datasets/<upload id>/data.<ext>.parts/<n>  a resumable upload's parts (local files; S3 keeps its own)
//! datasets/<upload id>/tail-<offset>          the bytes of a resumable upload past its last whole part
//! models/<model name>/runs/<job id>/<file>   the files of the model version a job trained
//! checkpoints/<job id>/<step>/<file>         a job's checkpoint (step zero-padded to 10 digits);
//!                                            checkpoint.json is written last
//! kiln-readyz                                probed (never written) by the readiness check
//! ```

use crate::domain::{DatasetFormat, FieldError, ModelName, ObjectKey};

/// The uploaded file of a dataset.
pub fn dataset(dataset_id: &str, format: DatasetFormat) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!(
        "datasets/{dataset_id}/data.{}",
        format.extension()
    ))
}

/// The keys of a dataset's distinct rows (see `data::overlap`), written by its validation pass.
pub fn dataset_row_keys(dataset_id: &str) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("datasets/{dataset_id}/row-keys"))
}

/// The folder of a dataset: its file, and whatever an interrupted upload left beside it.
pub fn dataset_folder(dataset_id: &str) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("datasets/{dataset_id}"))
}

/// The bytes of a resumable upload past its last whole part, when it holds `offset` bytes (offset
/// zero-padded to 20 digits).
pub fn upload_tail(upload_id: &str, offset: i64) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("datasets/{upload_id}/tail-{offset:020}"))
}

/// The folder of the model files a job produced.
pub fn model_run(model: &ModelName, job_id: &str) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("models/{model}/runs/{job_id}"))
}

/// The folder of a job's checkpoint at `step`.
pub fn checkpoint(job_id: &str, step: u64) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("checkpoints/{job_id}/{step:010}"))
}

/// The folder of all of a job's checkpoints.
pub fn checkpoints(job_id: &str) -> Result<ObjectKey, FieldError> {
    ObjectKey::parse(&format!("checkpoints/{job_id}"))
}

/// The key the readiness check looks up.
pub fn readiness_probe() -> ObjectKey {
    ObjectKey::parse("kiln-readyz").expect("a valid key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        assert_eq!(
            dataset("abc", DatasetFormat::Csv).unwrap().as_str(),
            "datasets/abc/data.csv"
        );
        let model = ModelName::parse("modelName", "pi-detector").unwrap();
        assert_eq!(
            model_run(&model, "job-1").unwrap().as_str(),
            "models/pi-detector/runs/job-1"
        );
        assert!(dataset("../x", DatasetFormat::Jsonl).is_err());
        assert_eq!(
            checkpoint("job-1", 42).unwrap().as_str(),
            "checkpoints/job-1/0000000042"
        );
    }
}
