//! The model registry: models and their versions.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, Object};

use super::datasets::Dataset;
use super::jobs::{EpochMetrics, Job};
use super::loaders::VersionsByModelLoader;
use super::paging::{Count, Page, PageRequest, page};
use super::{ApiError, ApiResult, service, timestamp};
use crate::domain::{ModelRecord, ModelVersionRecord};

pub struct Model(pub ModelRecord);

impl Model {
    async fn all_versions(&self, ctx: &Context<'_>) -> ApiResult<Vec<ModelVersionRecord>> {
        let loader = ctx.data_unchecked::<DataLoader<VersionsByModelLoader>>();
        Ok(loader
            .load_one(self.0.name.clone())
            .await?
            .unwrap_or_default())
    }
}

#[Object]
impl Model {
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Every version, oldest first.
    async fn versions(&self, ctx: &Context<'_>) -> ApiResult<Vec<ModelVersion>> {
        Ok(self
            .all_versions(ctx)
            .await?
            .into_iter()
            .map(ModelVersion)
            .collect())
    }
    async fn latest_version(&self, ctx: &Context<'_>) -> ApiResult<Option<ModelVersion>> {
        Ok(self.all_versions(ctx).await?.pop().map(ModelVersion))
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

pub struct ModelVersion(pub ModelVersionRecord);

#[Object]
impl ModelVersion {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// 1, 2, … within its model.
    async fn version(&self) -> i64 {
        self.0.version
    }
    async fn model(&self, ctx: &Context<'_>) -> ApiResult<Model> {
        let model = service(ctx).model(&self.0.model_name).await?;
        model.map(Model).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("version {} has no model", self.0.id))
        })
    }
    /// The job that trained it.
    async fn job(&self, ctx: &Context<'_>) -> ApiResult<Option<Job>> {
        Ok(service(ctx).job(&self.0.job_id).await?.map(Job))
    }
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        Dataset::load(ctx, &self.0.dataset_id).await
    }
    /// Metrics of the final epoch.
    async fn metrics(&self) -> EpochMetrics {
        (&self.0.metrics).into()
    }
    /// Where its files are: `model.safetensors`, `config.json`, `tokenizer.json` (text), `kiln.json`.
    async fn artifact_uri(&self) -> &str {
        &self.0.artifact_uri
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

#[derive(Default)]
pub struct ModelsQuery;

#[Object]
impl ModelsQuery {
    async fn model(&self, ctx: &Context<'_>, name: String) -> ApiResult<Option<Model>> {
        Ok(service(ctx).model(&name).await?.map(Model))
    }

    /// By name. `first`: 1–100 (default 20).
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn models(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<String, Model>> {
        let request = PageRequest::parse(first, after)?;
        let rows = service(ctx)
            .models(request.fetch(), request.after.as_deref())
            .await?;
        Ok(page(
            &request,
            rows,
            Count::Models,
            |m| m.name.clone(),
            Model,
        ))
    }
}
