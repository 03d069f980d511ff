//! DataLoaders, created per request: every `Job.dataset`, `Job.modelVersion`, `Job.epochs`,
//! `Job.checkpoints`, `Job.metrics`, `Model.versions`, `Model.aliases` (and `ModelVersion.aliases`) and
//! a version's job of one response is fetched in one round trip each (metrics: one
//! per distinct metric and count), whatever the page size.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};

use super::error::ApiError;
use crate::domain::{
    CheckpointRecord, DatasetRecord, EpochMetrics, JobRecord, MetricPoint, ModelAlias,
    ModelVersionRecord,
};
use crate::service::Service;

pub struct DatasetLoader(Service);
pub struct ModelVersionLoader(Service);
pub struct EpochsLoader(Service);
pub struct CheckpointsLoader(Service);
pub struct VersionsByModelLoader(Service);
pub struct MetricsLoader(Service);
pub struct AliasesByModelLoader(Service);
pub struct JobLoader(Service);

/// Which points of a job's step metrics: its id, the metric (all when `None`), and how many of the
/// last.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricsKey {
    pub job_id: String,
    pub name: Option<String>,
    pub last: i64,
}

/// Groups rows by key, every requested key present (with no rows when none matched).
fn group<T>(
    keys: &[String],
    rows: impl IntoIterator<Item = (String, T)>,
) -> HashMap<String, Vec<T>> {
    let mut out: HashMap<String, Vec<T>> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for (key, row) in rows {
        out.entry(key).or_default().push(row);
    }
    out
}

impl Loader<String> for DatasetLoader {
    type Value = DatasetRecord;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, DatasetRecord>, ApiError> {
        let rows = self.0.datasets_by_id(keys).await?;
        Ok(rows.into_iter().map(|d| (d.id.clone(), d)).collect())
    }
}

impl Loader<String> for ModelVersionLoader {
    type Value = ModelVersionRecord;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, ModelVersionRecord>, ApiError> {
        let rows = self.0.model_versions_by_id(keys).await?;
        Ok(rows.into_iter().map(|v| (v.id.clone(), v)).collect())
    }
}

impl Loader<String> for EpochsLoader {
    type Value = Vec<EpochMetrics>;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<EpochMetrics>>, ApiError> {
        Ok(group(keys, self.0.epochs_of(keys).await?))
    }
}

impl Loader<String> for CheckpointsLoader {
    type Value = Vec<CheckpointRecord>;
    type Error = ApiError;
    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Vec<CheckpointRecord>>, ApiError> {
        let rows = self.0.checkpoints_of(keys).await?;
        Ok(group(keys, rows.into_iter().map(|c| (c.job_id.clone(), c))))
    }
}

impl Loader<String> for VersionsByModelLoader {
    type Value = Vec<ModelVersionRecord>;
    type Error = ApiError;
    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Vec<ModelVersionRecord>>, ApiError> {
        let rows = self.0.versions_of_models(keys).await?;
        Ok(group(
            keys,
            rows.into_iter().map(|v| (v.model_name.clone(), v)),
        ))
    }
}

impl Loader<String> for AliasesByModelLoader {
    type Value = Vec<ModelAlias>;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<ModelAlias>>, ApiError> {
        let rows = self.0.aliases_of_models(keys).await?;
        Ok(group(
            keys,
            rows.into_iter().map(|a| (a.model_name.clone(), a)),
        ))
    }
}

impl Loader<String> for JobLoader {
    type Value = JobRecord;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, JobRecord>, ApiError> {
        let rows = self.0.jobs_by_id(keys).await?;
        Ok(rows.into_iter().map(|j| (j.id.clone(), j)).collect())
    }
}

impl Loader<MetricsKey> for MetricsLoader {
    type Value = Vec<MetricPoint>;
    type Error = ApiError;
    /// One round trip per distinct metric name and count asked for, whatever the number of jobs.
    async fn load(
        &self,
        keys: &[MetricsKey],
    ) -> Result<HashMap<MetricsKey, Vec<MetricPoint>>, ApiError> {
        let mut groups: HashMap<(Option<String>, i64), Vec<String>> = HashMap::new();
        for key in keys {
            groups
                .entry((key.name.clone(), key.last))
                .or_default()
                .push(key.job_id.clone());
        }
        let mut out: HashMap<MetricsKey, Vec<MetricPoint>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for ((name, last), jobs) in groups {
            for (job_id, point) in self.0.metrics_of(&jobs, name.as_deref(), last).await? {
                let key = MetricsKey {
                    job_id,
                    name: name.clone(),
                    last,
                };
                out.entry(key).or_default().push(point);
            }
        }
        Ok(out)
    }
}

/// Adds a fresh set of loaders to one request.
pub fn attach(request: async_graphql::Request, service: &Service) -> async_graphql::Request {
    request
        .data(DataLoader::new(
            DatasetLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            ModelVersionLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(EpochsLoader(service.clone()), tokio::spawn))
        .data(DataLoader::new(
            CheckpointsLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            VersionsByModelLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            AliasesByModelLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(JobLoader(service.clone()), tokio::spawn))
        .data(DataLoader::new(
            MetricsLoader(service.clone()),
            tokio::spawn,
        ))
}
