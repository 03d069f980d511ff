//! `predict` and the cache of loaded model versions.

use async_graphql::{Context, Object, SimpleObject};

use super::{ApiResult, service, timestamp};
use crate::domain::FieldError;
use crate::service::inference::{
    PredictInput, Prediction as PredictionRecord, Served, VersionChoice,
};

#[derive(SimpleObject)]
pub struct LabelProbability {
    pub label: String,
    pub probability: f64,
}

/// One input's answer.
#[derive(SimpleObject)]
pub struct Prediction {
    /// The most probable label.
    pub label: String,
    /// Its probability.
    pub score: f64,
    /// Every label's probability, in the model's label order.
    pub probabilities: Vec<LabelProbability>,
    /// The scores before the softmax, in the model's label order.
    pub logits: Vec<f64>,
    /// The version that answered.
    pub version: i64,
}

impl From<PredictionRecord> for Prediction {
    fn from(p: PredictionRecord) -> Self {
        Self {
            label: p.label,
            score: p.score,
            probabilities: p
                .probabilities
                .into_iter()
                .map(|(label, probability)| LabelProbability { label, probability })
                .collect(),
            logits: p.logits,
            version: p.version,
        }
    }
}

/// A model version held in memory by this server process.
pub struct LoadedModel(std::sync::Arc<Served>);

#[Object]
impl LoadedModel {
    async fn model(&self) -> &str {
        &self.0.version.model_name
    }
    async fn version(&self) -> i64 {
        self.0.version.version
    }
    async fn loaded_at(&self) -> String {
        timestamp(self.0.loaded_at)
    }
    async fn last_used_at(&self) -> String {
        timestamp(self.0.last_used())
    }
    /// Inputs it answered since it was loaded.
    async fn predictions(&self) -> u64 {
        self.0.requests()
    }
}

/// How many answers a `predict` asks for (at least 1), for its complexity.
fn predict_inputs(inputs: &Option<Vec<String>>, rows: &Option<Vec<Vec<f64>>>) -> usize {
    let count = |list: Option<usize>| list.unwrap_or(0);
    count(inputs.as_ref().map(Vec::len))
        .max(count(rows.as_ref().map(Vec::len)))
        .max(1)
}

fn choice(version: Option<i64>, alias: Option<String>) -> VersionChoice {
    VersionChoice { version, alias }
}

#[derive(Default)]
pub struct InferenceQuery;

#[Object]
impl InferenceQuery {
    /// Runs a model on 1–256 `inputs` (texts, for a text model; each up to 64 KiB) or `rows` (numbers
    /// in the model's feature order, for a tabular model) — exactly one of the two. The version:
    /// `version`, or `alias` (a split alias routes the request by weight; the same `requestId` always
    /// goes to the same version), or neither for the latest. The first request for a version loads it
    /// (`loadModel` does so ahead of time). Each input counts its selected fields towards the query's
    /// complexity.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "child_complexity * predict_inputs(&inputs, &rows)")]
    async fn predict(
        &self,
        ctx: &Context<'_>,
        model: String,
        version: Option<i64>,
        alias: Option<String>,
        inputs: Option<Vec<String>>,
        rows: Option<Vec<Vec<f64>>>,
        request_id: Option<String>,
    ) -> ApiResult<Vec<Prediction>> {
        let input = match (inputs, rows) {
            (Some(texts), None) => PredictInput::Texts(texts),
            (None, Some(rows)) => PredictInput::Rows(rows),
            _ => {
                return Err(FieldError::new(
                    "inputs",
                    "give exactly one of `inputs` (texts) and `rows` (numbers)",
                )
                .into());
            }
        };
        let request_id = match request_id {
            Some(id) if id.is_empty() || id.chars().count() > 200 => {
                return Err(FieldError::new("requestId", "must be 1 to 200 characters").into());
            }
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let predictions = service(ctx)
            .predict(&model, &choice(version, alias), input, &request_id)
            .await?;
        Ok(predictions.into_iter().map(Into::into).collect())
    }

    /// The model versions this server process holds in memory, least recently used first (at most
    /// `KILN_MODEL_CACHE_SIZE`).
    async fn loaded_models(&self, ctx: &Context<'_>) -> Vec<LoadedModel> {
        service(ctx)
            .loaded_models()
            .into_iter()
            .map(LoadedModel)
            .collect()
    }
}

#[derive(Default)]
pub struct InferenceMutation;

#[Object]
impl InferenceMutation {
    /// Loads a version (by `version`, `alias` — a split's arm picked by weight — or the latest) into
    /// this server process's cache, so the first `predict` does not wait for it.
    async fn load_model(
        &self,
        ctx: &Context<'_>,
        model: String,
        version: Option<i64>,
        alias: Option<String>,
    ) -> ApiResult<LoadedModel> {
        let served = service(ctx)
            .load_model(&model, &choice(version, alias))
            .await?;
        Ok(LoadedModel(served))
    }

    /// Drops a version from this server process's cache; false when it was not loaded.
    async fn unload_model(
        &self,
        ctx: &Context<'_>,
        model: String,
        version: i64,
    ) -> ApiResult<bool> {
        Ok(service(ctx).unload_model(&model, version).await?)
    }
}
