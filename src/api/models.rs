//! The model registry: models and their versions.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::datasets::Dataset;
use super::jobs::{EpochMetrics, Hyperparameters, HyperparametersInput, Job};
use super::loaders::{
    AliasHistoryLoader, AliasRequestsLoader, AliasesByModelLoader, HistoryKey, JobLoader,
    PoliciesByModelLoader, TrainingDefaultsLoader, VersionByNumberLoader, VersionsByModelLoader,
};
use super::paging::{Count, Page, PageRequest, page};
use super::{ApiError, ApiResult, caller, service, timestamp};
use crate::domain::{
    AliasChange, AliasTarget, BaseModelRef, JobRecord, ModelAlias as AliasRecord, ModelRecord,
    ModelVersionRecord, PromotionPolicy as PolicyRecord, SplitArm as SplitArmRecord,
};
use crate::service::ServiceError;
use crate::service::registry::history_limit;

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
    /// Its aliases, by name.
    async fn aliases(&self, ctx: &Context<'_>) -> ApiResult<Vec<ModelAlias>> {
        Ok(aliases_of(ctx, &self.0.name)
            .await?
            .into_iter()
            .map(ModelAlias)
            .collect())
    }
    /// Who moved which alias from where to where, when and why; newest first. `alias`: only that
    /// alias's moves. `last`: 1–100 (default 20).
    async fn alias_history(
        &self,
        ctx: &Context<'_>,
        alias: Option<String>,
        #[graphql(default = 20)] last: i32,
    ) -> ApiResult<Vec<AliasMove>> {
        let key = HistoryKey {
            model: self.0.name.clone(),
            alias,
            last: history_limit(last.into())?,
        };
        let loader = ctx.data_unchecked::<DataLoader<AliasHistoryLoader>>();
        Ok(loader
            .load_one(key)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(AliasMove)
            .collect())
    }
    /// The hyperparameters `submitJob` fills in for this model when its input leaves them out (null:
    /// none set).
    async fn training_defaults(&self, ctx: &Context<'_>) -> ApiResult<Option<TrainingDefaults>> {
        let loader = ctx.data_unchecked::<DataLoader<TrainingDefaultsLoader>>();
        Ok(loader
            .load_one(self.0.name.clone())
            .await?
            .map(|(input, updated_at)| TrainingDefaults {
                hyperparameters: input
                    .set_fields()
                    .into_iter()
                    .map(|(name, value)| Setting { name, value })
                    .collect(),
                updated_at: timestamp(updated_at),
            }))
    }
    /// The rules guarding its aliases, by alias.
    async fn promotion_policies(&self, ctx: &Context<'_>) -> ApiResult<Vec<PromotionPolicy>> {
        let loader = ctx.data_unchecked::<DataLoader<PoliciesByModelLoader>>();
        Ok(loader
            .load_one(self.0.name.clone())
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(PromotionPolicy)
            .collect())
    }
}

/// A hyperparameter as set: its name (as in `HyperparametersInput`) and value as JSON text.
#[derive(SimpleObject)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// A model's training defaults.
#[derive(SimpleObject)]
pub struct TrainingDefaults {
    /// Only the hyperparameters that are set, by name.
    pub hyperparameters: Vec<Setting>,
    pub updated_at: String,
}

/// One arm of a split alias: a version and its weight (each arm answers `weight / sum of weights` of
/// the requests).
#[derive(SimpleObject, InputObject, Clone, Copy)]
#[graphql(input_name = "SplitArmInput")]
pub struct SplitArm {
    pub version: i64,
    pub weight: f64,
}

fn split_of(target: &AliasTarget) -> Option<Vec<SplitArm>> {
    match target {
        AliasTarget::Version(_) => None,
        AliasTarget::Split(arms) => Some(
            arms.iter()
                .map(|a| SplitArm {
                    version: a.version,
                    weight: a.weight,
                })
                .collect(),
        ),
    }
}

fn version_of(target: &AliasTarget) -> Option<i64> {
    match target {
        AliasTarget::Version(v) => Some(*v),
        AliasTarget::Split(_) => None,
    }
}

/// A name such as `production` pointing to one version, or to a weighted split of versions.
pub struct ModelAlias(AliasRecord);

#[Object]
impl ModelAlias {
    async fn alias(&self) -> &str {
        &self.0.alias
    }
    /// The version it points to; null for a split.
    async fn version(&self) -> Option<i64> {
        version_of(&self.0.target)
    }
    /// The versions and weights of a split; null for one version.
    async fn split(&self) -> Option<Vec<SplitArm>> {
        split_of(&self.0.target)
    }
    async fn updated_at(&self) -> String {
        timestamp(self.0.updated_at)
    }
    /// `predict` calls answered through it, per version (a split's arms), since it was first used.
    async fn requests(&self, ctx: &Context<'_>) -> ApiResult<Vec<VersionRequests>> {
        let loader = ctx.data_unchecked::<DataLoader<AliasRequestsLoader>>();
        Ok(loader
            .load_one(self.0.model_name.clone())
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.alias == self.0.alias)
            .map(|r| VersionRequests {
                version: r.version,
                requests: r.requests,
                predictions: r.predictions,
            })
            .collect())
    }
}

/// The `predict` calls one version answered through an alias, and the inputs they held.
#[derive(SimpleObject)]
pub struct VersionRequests {
    pub version: i64,
    pub requests: i64,
    pub predictions: i64,
}

/// One move of an alias.
pub struct AliasMove(AliasChange);

#[Object]
impl AliasMove {
    async fn alias(&self) -> &str {
        &self.0.alias
    }
    /// Where it pointed before (null with `fromSplit`, or when the alias was new).
    async fn from_version(&self) -> Option<i64> {
        self.0.from.as_ref().and_then(version_of)
    }
    async fn from_split(&self) -> Option<Vec<SplitArm>> {
        self.0.from.as_ref().and_then(split_of)
    }
    /// Where it points after (null with `toSplit`, or when the alias was deleted).
    async fn to_version(&self) -> Option<i64> {
        self.0.to.as_ref().and_then(version_of)
    }
    async fn to_split(&self) -> Option<Vec<SplitArm>> {
        self.0.to.as_ref().and_then(split_of)
    }
    /// The name of the token that moved it, or `job <id>` for a job's `autoPromote`.
    async fn by(&self) -> &str {
        &self.0.actor
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Whether an admin forced it past rules of the alias's promotion policy.
    async fn forced(&self) -> bool {
        !self.0.overridden_rules.is_empty()
    }
    /// The rules it failed and was forced past.
    async fn overridden_rules(&self) -> &[String] {
        &self.0.overridden_rules
    }
    /// Whether it was a `rollbackModelAlias`.
    async fn rollback(&self) -> bool {
        self.0.rollback
    }
    async fn at(&self) -> String {
        timestamp(self.0.at)
    }
}

/// Rules a version must pass before an alias may point to it.
pub struct PromotionPolicy(PolicyRecord);

#[Object]
impl PromotionPolicy {
    async fn alias(&self) -> &str {
        &self.0.alias
    }
    async fn rules(&self) -> Vec<&str> {
        self.0.rules.iter().map(|r| r.text.as_str()).collect()
    }
    async fn updated_at(&self) -> String {
        timestamp(self.0.updated_at)
    }
}

pub struct ModelVersion(pub ModelVersionRecord);

impl ModelVersion {
    async fn trained_by(&self, ctx: &Context<'_>) -> ApiResult<Option<JobRecord>> {
        let loader = ctx.data_unchecked::<DataLoader<JobLoader>>();
        loader.load_one(self.0.job_id.clone()).await
    }
}

/// A model's aliases, batched over the response.
async fn aliases_of(ctx: &Context<'_>, model: &str) -> ApiResult<Vec<AliasRecord>> {
    let loader = ctx.data_unchecked::<DataLoader<AliasesByModelLoader>>();
    Ok(loader
        .load_one(model.to_string())
        .await?
        .unwrap_or_default())
}

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
        Ok(self.trained_by(ctx).await?.map(Job))
    }
    async fn dataset(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        Dataset::load(ctx, &self.0.dataset_id).await
    }
    /// The SHA-256 of the dataset it was trained on.
    async fn dataset_sha256(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        Ok(Dataset::load(ctx, &self.0.dataset_id)
            .await?
            .map(|d| d.0.sha256))
    }
    /// The base model it was fine-tuned from (null: trained from random weights).
    async fn base_model(&self, ctx: &Context<'_>) -> ApiResult<Option<String>> {
        let job = self.trained_by(ctx).await?;
        Ok(job.and_then(|j| j.settings.base_model.map(|b| b.to_string())))
    }
    /// The registered version it was retrained from (`baseModel: "model:NAME/VERSION"`); null when
    /// it started from a pretrained model or random weights.
    async fn retrained_from(&self, ctx: &Context<'_>) -> ApiResult<Option<ModelVersion>> {
        let job = self.trained_by(ctx).await?;
        let Some(BaseModelRef::Registered(registered)) = job.and_then(|j| j.settings.base_model)
        else {
            return Ok(None);
        };
        let Some(number) = registered.number() else {
            return Ok(None);
        };
        let loader = ctx.data_unchecked::<DataLoader<VersionByNumberLoader>>();
        Ok(loader
            .load_one((registered.model.as_str().to_string(), number))
            .await?
            .map(ModelVersion))
    }
    /// The hyperparameters it was trained with, defaults filled in.
    async fn hyperparameters(&self, ctx: &Context<'_>) -> ApiResult<Option<Hyperparameters>> {
        let job = self.trained_by(ctx).await?;
        Ok(job.map(|j| (&j.settings.hyperparameters).into()))
    }
    /// The aliases that point to it (alone or in a split).
    async fn aliases(&self, ctx: &Context<'_>) -> ApiResult<Vec<String>> {
        Ok(aliases_of(ctx, &self.0.model_name)
            .await?
            .into_iter()
            .filter(|a| a.target.versions().contains(&self.0.version))
            .map(|a| a.alias)
            .collect())
    }
    /// Metrics of the final epoch.
    async fn metrics(&self) -> EpochMetrics {
        (&self.0.metrics).into()
    }
    /// Where its files download as one ZIP with the API token (`GET`, relative to the API's address):
    /// `/models/{name}/versions/{version}/download`.
    async fn download_url(&self) -> String {
        crate::service::downloads::model_version_path(&self.0.model_name, self.0.version)
    }
    /// Where its files are: `model.safetensors`, `config.json`, `tokenizer.json` (text), `kiln.json`.
    async fn artifact_uri(&self) -> &str {
        &self.0.artifact_uri
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
}

/// One metric across compared versions.
#[derive(SimpleObject)]
pub struct MetricComparison {
    /// `accuracy`, `precision`, `recall`, `f1`, `valLoss`, `trainLoss`, or per label
    /// `precision[LABEL]`, `recall[LABEL]`, `f1[LABEL]`.
    pub metric: String,
    /// One per version, in the order asked (null: that version has no such label).
    pub values: Vec<Option<f64>>,
    /// Each value minus the first version's (null where either is missing).
    pub deltas: Vec<Option<f64>>,
}

/// Versions side by side.
#[derive(SimpleObject)]
pub struct VersionComparison {
    pub versions: Vec<ModelVersion>,
    pub metrics: Vec<MetricComparison>,
}

/// Every metric of `metrics` side by side, deltas against the first.
pub fn metric_rows(metrics: &[&crate::domain::EpochMetrics]) -> Vec<MetricComparison> {
    crate::domain::metric_table(metrics)
        .into_iter()
        .map(|(metric, values)| {
            let first = values[0];
            let deltas = values.iter().map(|v| Some(v.as_ref()? - first?)).collect();
            MetricComparison {
                metric,
                values,
                deltas,
            }
        })
        .collect()
}

fn compare(versions: Vec<ModelVersionRecord>) -> VersionComparison {
    let metrics = metric_rows(&versions.iter().map(|v| &v.metrics).collect::<Vec<_>>());
    VersionComparison {
        versions: versions.into_iter().map(ModelVersion).collect(),
        metrics,
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

    /// 2–10 versions of a model side by side, with each metric's difference from the first version
    /// listed.
    async fn compare_model_versions(
        &self,
        ctx: &Context<'_>,
        model: String,
        versions: Vec<i64>,
    ) -> ApiResult<VersionComparison> {
        let found = service(ctx)
            .compare_model_versions(&model, &versions)
            .await?;
        Ok(compare(found))
    }
}

#[derive(Default)]
pub struct ModelsMutation;

/// What `deleteModel` removed.
#[derive(SimpleObject)]
pub struct DeletedModel {
    pub name: String,
    /// The numbers of the versions deleted with it.
    pub versions: Vec<i64>,
}

#[Object]
impl ModelsMutation {
    /// Sets the hyperparameters `submitJob` uses for `model` when its input leaves them out (the
    /// job's own values win; kiln's defaults fill what neither sets; `Job.hyperparameters` shows what
    /// a job used). Checked now like `submitJob`'s (`BAD_USER_INPUT` on `hyperparameters.<name>`).
    /// Setting none (`{}`) removes them. A model that has no version yet is created.
    async fn set_model_training_defaults(
        &self,
        ctx: &Context<'_>,
        model: String,
        hyperparameters: HyperparametersInput,
    ) -> ApiResult<Model> {
        let input: crate::domain::HyperparamsInput = hyperparameters.into();
        let record = service(ctx)
            .set_model_training_defaults(&model, &input)
            .await?;
        Ok(Model(record))
    }

    /// Points an alias at one `version`, or at a weighted `split` of 2–4 versions (`predict` by the alias
    /// routes each request by weight). A guarded alias (see `setPromotionPolicy`) moves only to versions
    /// that pass every rule, else `FAILED_PRECONDITION` listing the failed rules in
    /// `extensions.failedRules`; `force: true` (admin tokens) moves it anyway and the history records
    /// the overridden rules (default false). `reason`: up to 1000 characters, kept in `aliasHistory`.
    #[allow(clippy::too_many_arguments)]
    async fn set_model_alias(
        &self,
        ctx: &Context<'_>,
        model: String,
        alias: String,
        version: Option<i64>,
        split: Option<Vec<SplitArm>>,
        reason: Option<String>,
        force: Option<bool>,
    ) -> ApiResult<Model> {
        let split = split.map(|arms| {
            arms.into_iter()
                .map(|a| SplitArmRecord {
                    version: a.version,
                    weight: a.weight,
                })
                .collect()
        });
        let target = AliasTarget::parse(version, split)?;
        let record = service(ctx)
            .set_model_alias(
                caller(ctx)?,
                &model,
                &alias,
                target,
                reason.as_deref(),
                force.unwrap_or(false),
            )
            .await?;
        Ok(Model(record))
    }

    /// Deletes one version of a model and its files; answers the model. Its job stays (without a
    /// version) and its number is never given again. `CONFLICT` while an alias points to it.
    async fn delete_model_version(
        &self,
        ctx: &Context<'_>,
        model: String,
        version: i64,
    ) -> ApiResult<Model> {
        let service = service(ctx);
        service.delete_model_version(&model, version).await?;
        let record = service
            .model(&model)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no model named {model}")))?;
        Ok(Model(record))
    }

    /// Deletes a model: every version and its files, its alias history, promotion policies and training
    /// defaults (its jobs stay, without versions). Admin tokens only. `CONFLICT` while it has an alias
    /// or a job queued, running or paused.
    async fn delete_model(&self, ctx: &Context<'_>, model: String) -> ApiResult<DeletedModel> {
        let versions = service(ctx).delete_model(caller(ctx)?, &model).await?;
        Ok(DeletedModel {
            name: model,
            versions: versions.iter().map(|v| v.version).collect(),
        })
    }

    /// Removes an alias; its history stays.
    async fn delete_model_alias(
        &self,
        ctx: &Context<'_>,
        model: String,
        alias: String,
        reason: Option<String>,
    ) -> ApiResult<Model> {
        let record = service(ctx)
            .delete_model_alias(caller(ctx)?, &model, &alias, reason.as_deref())
            .await?;
        Ok(Model(record))
    }

    /// Moves an alias back to where it pointed before its latest move (again: one move further back).
    /// Not checked against the promotion policy: that version already served under the alias.
    /// `CONFLICT` when there is nothing to go back to.
    async fn rollback_model_alias(
        &self,
        ctx: &Context<'_>,
        model: String,
        alias: String,
        reason: Option<String>,
    ) -> ApiResult<Model> {
        let record = service(ctx)
            .rollback_model_alias(caller(ctx)?, &model, &alias, reason.as_deref())
            .await?;
        Ok(Model(record))
    }

    /// Sets the rules every version must pass before `alias` may point to it (admin tokens); `[]`
    /// removes the policy. Up to 20 rules of up to 200 characters, each
    /// `METRIC OP THRESHOLD`: METRIC one of accuracy, precision, recall, f1, val_loss, train_loss, or
    /// per label `precision[LABEL]`, `recall[LABEL]`, `f1[LABEL]`; OP one of `>=`, `>`, `<=`, `<`;
    /// THRESHOLD a number or `current`, `current + N`, `current - N` (the same metric of the version
    /// the alias points to now; such a rule fails while the alias points to no version, so the first
    /// needs an admin's `force`). Examples:
    /// `accuracy >= 0.95`, `f1 >= current - 0.01`, `recall[injection] >= 0.98`. A malformed rule is
    /// `BAD_USER_INPUT` on `rules[i]` saying at which character.
    async fn set_promotion_policy(
        &self,
        ctx: &Context<'_>,
        model: String,
        alias: String,
        rules: Vec<String>,
    ) -> ApiResult<Model> {
        let record = service(ctx)
            .set_promotion_policy(caller(ctx)?, &model, &alias, &rules)
            .await?;
        Ok(Model(record))
    }
}
