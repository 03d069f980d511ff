//! The model registry's records: named models and their numbered versions.

use super::EpochMetrics;

/// A registry model: a name that versions are filed under.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub name: String,
    pub created_at: i64,
}

/// One trained version of a model, tied to the job and dataset that produced it.
#[derive(Debug, Clone)]
pub struct ModelVersionRecord {
    pub id: String,
    pub model_name: String,
    /// 1, 2, … within its model.
    pub version: i64,
    pub job_id: String,
    pub dataset_id: String,
    /// Where its files are: `s3://bucket/prefix/…` or `file:///dir/…`.
    pub artifact_uri: String,
    /// The final epoch's metrics.
    pub metrics: EpochMetrics,
    pub created_at: i64,
}
