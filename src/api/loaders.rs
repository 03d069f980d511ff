//! DataLoaders, created per request: every `Job.dataset`, `Job.modelVersion`, `Job.epochs`,
//! `Job.checkpoints`, `Job.metrics`, `Model.versions`, `Model.aliases` (and `ModelVersion.aliases`),
//! `Model.aliasHistory`, `Model.promotionPolicies`, `Model.trainingDefaults`, `ModelAlias.requests`,
//! `ModelVersion.retrainedFrom`, a queued job's place (one read of the queue) and a version's job of one response is fetched in one round trip each (metrics: one per distinct metric
//! and count; alias history: one per distinct alias and count), whatever the page size.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};

use super::error::ApiError;
use crate::domain::{
    AliasChange, AliasRequests, CheckpointRecord, DatasetRecord, EpochMetrics, HyperparamsInput,
    JobRecord, MetricPoint, ModelAlias, ModelVersionRecord, PromotionPolicy, QueuePlace,
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
pub struct AliasHistoryLoader(Service);
pub struct PoliciesByModelLoader(Service);
pub struct AliasRequestsLoader(Service);
pub struct TrainingDefaultsLoader(Service);
pub struct VersionByNumberLoader(Service);
pub struct QueuePlaceLoader(Service);

/// Which alias moves of a model: all or one alias's, and how many of the last.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HistoryKey {
    pub model: String,
    pub alias: Option<String>,
    pub last: i64,
}

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

/// Every requested queued job's place, from one read of the queue.
impl Loader<String> for QueuePlaceLoader {
    type Value = QueuePlace;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, QueuePlace>, ApiError> {
        let view = self.0.queue_view().await?;
        Ok(keys
            .iter()
            .filter_map(|k| Some((k.clone(), view.places.get(k)?.clone())))
            .collect())
    }
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

impl Loader<HistoryKey> for AliasHistoryLoader {
    type Value = Vec<AliasChange>;
    type Error = ApiError;
    /// One round trip per distinct alias and count asked for, whatever the number of models.
    async fn load(
        &self,
        keys: &[HistoryKey],
    ) -> Result<HashMap<HistoryKey, Vec<AliasChange>>, ApiError> {
        let mut groups: HashMap<(Option<String>, i64), Vec<String>> = HashMap::new();
        for key in keys {
            groups
                .entry((key.alias.clone(), key.last))
                .or_default()
                .push(key.model.clone());
        }
        let mut out: HashMap<HistoryKey, Vec<AliasChange>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for ((alias, last), models) in groups {
            let rows = self
                .0
                .alias_history_of_models(&models, alias.as_deref(), last)
                .await?;
            for change in rows {
                let key = HistoryKey {
                    model: change.model_name.clone(),
                    alias: alias.clone(),
                    last,
                };
                out.entry(key).or_default().push(change);
            }
        }
        Ok(out)
    }
}

impl Loader<String> for PoliciesByModelLoader {
    type Value = Vec<PromotionPolicy>;
    type Error = ApiError;
    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Vec<PromotionPolicy>>, ApiError> {
        let rows = self.0.promotion_policies_of_models(keys).await?;
        Ok(group(
            keys,
            rows.into_iter().map(|p| (p.model_name.clone(), p)),
        ))
    }
}

impl Loader<String> for AliasRequestsLoader {
    type Value = Vec<AliasRequests>;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<AliasRequests>>, ApiError> {
        Ok(group(keys, self.0.alias_requests_of_models(keys).await?))
    }
}

impl Loader<(String, i64)> for VersionByNumberLoader {
    type Value = ModelVersionRecord;
    type Error = ApiError;
    /// One round trip per distinct model.
    async fn load(
        &self,
        keys: &[(String, i64)],
    ) -> Result<HashMap<(String, i64), ModelVersionRecord>, ApiError> {
        let mut by_model: HashMap<&str, Vec<i64>> = HashMap::new();
        for (model, number) in keys {
            by_model.entry(model).or_default().push(*number);
        }
        let mut out = HashMap::new();
        for (model, numbers) in by_model {
            for version in self.0.versions_numbered(model, &numbers).await? {
                out.insert((version.model_name.clone(), version.version), version);
            }
        }
        Ok(out)
    }
}

impl Loader<String> for TrainingDefaultsLoader {
    type Value = (HyperparamsInput, i64);
    type Error = ApiError;
    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, (HyperparamsInput, i64)>, ApiError> {
        let rows = self.0.training_defaults_of_models(keys).await?;
        Ok(rows
            .into_iter()
            .map(|(model, input, at)| (model, (input, at)))
            .collect())
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
            QueuePlaceLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            AliasHistoryLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            PoliciesByModelLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            AliasRequestsLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            TrainingDefaultsLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            VersionByNumberLoader(service.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            MetricsLoader(service.clone()),
            tokio::spawn,
        ))
}
