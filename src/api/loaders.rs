//! DataLoaders, created per request: every `Job.dataset`, `Job.modelVersion`, `Job.epochs` and
//! `Model.versions` of one response is fetched in one round trip each, whatever the page size.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};

use super::error::ApiError;
use crate::domain::{DatasetRecord, EpochMetrics, ModelVersionRecord};
use crate::service::Service;

pub struct DatasetLoader(Service);
pub struct ModelVersionLoader(Service);
pub struct EpochsLoader(Service);
pub struct VersionsByModelLoader(Service);

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
            VersionsByModelLoader(service.clone()),
            tokio::spawn,
        ))
}
