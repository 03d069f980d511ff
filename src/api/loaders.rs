//! DataLoaders, created per request: every `Job.dataset`, `Job.modelVersion` and `Job.epochs` of one
//! response is fetched in one round trip each, whatever the page size.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};

use super::error::ApiError;
use crate::store::{DatasetRecord, ModelVersionRecord, Store};
use crate::train::EpochMetrics;

pub struct DatasetLoader(pub Store);
pub struct ModelVersionLoader(pub Store);
pub struct EpochsLoader(pub Store);
pub struct VersionsByModelLoader(pub Store);

impl Loader<String> for DatasetLoader {
    type Value = DatasetRecord;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, DatasetRecord>, ApiError> {
        Ok(self
            .0
            .get_datasets(keys)
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect())
    }
}

impl Loader<String> for ModelVersionLoader {
    type Value = ModelVersionRecord;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, ModelVersionRecord>, ApiError> {
        Ok(self
            .0
            .get_model_versions(keys)
            .await?
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect())
    }
}

impl Loader<String> for EpochsLoader {
    type Value = Vec<EpochMetrics>;
    type Error = ApiError;
    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Vec<EpochMetrics>>, ApiError> {
        let mut out: HashMap<String, Vec<EpochMetrics>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for (job_id, epoch) in self.0.epochs_of(keys).await? {
            out.entry(job_id).or_default().push(epoch);
        }
        Ok(out)
    }
}

impl Loader<String> for VersionsByModelLoader {
    type Value = Vec<ModelVersionRecord>;
    type Error = ApiError;
    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Vec<ModelVersionRecord>>, ApiError> {
        let mut out: HashMap<String, Vec<ModelVersionRecord>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for version in self.0.versions_of_models(keys).await? {
            out.entry(version.model_name.clone())
                .or_default()
                .push(version);
        }
        Ok(out)
    }
}

/// Adds a fresh set of loaders to one request.
pub fn attach(request: async_graphql::Request, store: &Store) -> async_graphql::Request {
    request
        .data(DataLoader::new(DatasetLoader(store.clone()), tokio::spawn))
        .data(DataLoader::new(
            ModelVersionLoader(store.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(EpochsLoader(store.clone()), tokio::spawn))
        .data(DataLoader::new(
            VersionsByModelLoader(store.clone()),
            tokio::spawn,
        ))
}
