//! `predict`: which version answers (a number, an alias — a split alias routed by weight per request —
//! or the latest), an in-memory LRU cache of loaded versions ([`cache`]), and the engine's own forward
//! pass run on a blocking thread, off the async runtime, in micro-batches within the process's memory
//! for predictions ([`budget`]).
//!
//! Limits: [`MAX_PREDICT_BATCH`] inputs or rows per request, [`MAX_INPUT_BYTES`] per text; at most
//! `KILN_MODEL_CACHE_SIZE` versions in memory per process (the least recently used is dropped first; a
//! request that still holds it finishes with it); at most `KILN_PREDICT_MEMORY` in forward passes at
//! once, a request waiting up to `KILN_PREDICT_WAIT_SECONDS` for its turn.

mod budget;
mod cache;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    AliasName, FieldError, ModelArchitecture, ModelName, ModelVersionRecord, now_ms,
};
use crate::train::inference::LoadedModel;

pub use budget::{MAX_MICRO_BATCH, PredictBudget};
pub use cache::{ModelCache, Served};

/// The most inputs (or rows) one `predict` takes.
pub const MAX_PREDICT_BATCH: usize = 256;
/// The longest text input, in bytes (the model reads its first `maxSeqLength` tokens).
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// What to predict on: texts for a text model, rows of numbers for a tabular one.
pub enum PredictInput {
    Texts(Vec<String>),
    Rows(Vec<Vec<f64>>),
}

/// Which version answers: one of a number or an alias; neither is the latest version.
#[derive(Default)]
pub struct VersionChoice {
    pub version: Option<i64>,
    pub alias: Option<String>,
}

/// One input's answer.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub label: String,
    /// The probability of `label`.
    pub score: f64,
    /// Every label's probability, in the model's label order.
    pub probabilities: Vec<(String, f64)>,
    /// The raw scores before the softmax.
    pub logits: Vec<f64>,
    /// The version that answered.
    pub version: i64,
}

/// A number in `[0, 1)` fixed by a request id: the same id is always routed the same way.
fn routing_number(request_id: &str) -> f64 {
    let digest = Sha256::digest(request_id.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// Probabilities from a row of logits, in double precision.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

impl Service {
    /// The version a request is answered by, and the alias it came through (for the per-version
    /// request counts of a split).
    async fn choose_version(
        &self,
        model: &str,
        choice: &VersionChoice,
        request_id: &str,
    ) -> ServiceResult<(ModelVersionRecord, Option<AliasName>)> {
        let name = ModelName::parse("model", model)?;
        if self.store.get_model(name.as_str()).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "no model named {}",
                name.as_str()
            )));
        }
        let missing = |v: i64| {
            FieldError::new(
                "version",
                format!("model {} has no version {v}", name.as_str()),
            )
        };
        match (choice.version, &choice.alias) {
            (Some(_), Some(_)) => {
                Err(FieldError::new("alias", "give either `version` or `alias`, not both").into())
            }
            (Some(v), None) => Ok((
                self.store
                    .model_version(name.as_str(), v)
                    .await?
                    .ok_or_else(|| missing(v))?,
                None,
            )),
            (None, Some(alias)) => {
                let alias = AliasName::parse("alias", alias)?;
                let target = self
                    .alias_target(name.as_str(), &alias)
                    .await?
                    .ok_or_else(|| {
                        FieldError::new(
                            "alias",
                            format!("model {} has no alias {}", name.as_str(), alias.as_str()),
                        )
                    })?;
                let v = target.route(routing_number(request_id));
                let version = self
                    .store
                    .model_version(name.as_str(), v)
                    .await?
                    .ok_or_else(|| missing(v))?;
                Ok((version, Some(alias)))
            }
            (None, None) => Ok((
                self.store
                    .latest_model_version(name.as_str())
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "model {} has no versions yet",
                            name.as_str()
                        ))
                    })?,
                None,
            )),
        }
    }

    /// A version from the cache, loading it (files from the object store, then the weights) if absent.
    /// Its files are checked first, so that a version whose files are gone takes no room from others.
    async fn served(&self, version: &ModelVersionRecord) -> ServiceResult<Arc<Served>> {
        let cell = self.models.cell(&version.id);
        self.metrics.model_cache(cell.initialized());
        let loaded = cell
            .get_or_try_init(|| async {
                let files = self.version_objects(version).await?;
                let room = self
                    .models
                    .make_room(&version.id, self.predictions.wait())
                    .await?;
                let model = self.load_version(version, files).await?;
                tracing::info!(model = %version.model_name, version = version.version, "model loaded");
                ServiceResult::Ok(Arc::new(Served::new(version.clone(), model, room)))
            })
            .await
            .cloned();
        self.models.load_ended(&version.id, &cell);
        loaded
    }

    async fn load_version(
        &self,
        version: &ModelVersionRecord,
        files: Vec<(String, crate::domain::ObjectKey)>,
    ) -> ServiceResult<LoadedModel> {
        let dir = self
            .settings
            .work_dir
            .join("serving")
            .join(uuid::Uuid::new_v4().to_string());
        // The weights and tokenizer are read whole into memory; the folder is removed after.
        let loaded = async {
            self.download_objects(files, &dir).await?;
            let path = dir.clone();
            let device = self.settings.device;
            tokio::task::spawn_blocking(move || LoadedModel::load(&path, &device.open()?.device))
                .await
                .context("the loading thread ended")?
        }
        .await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a loaded model's folder");
        }
        Ok(loaded.with_context(|| {
            format!(
                "loading version {} of model {}",
                version.version, version.model_name
            )
        })?)
    }

    /// Answers `input` with the chosen version. `request_id` fixes a split alias's routing.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn predict(
        &self,
        model: &str,
        choice: &VersionChoice,
        input: PredictInput,
        request_id: &str,
    ) -> ServiceResult<Vec<Prediction>> {
        let started = std::time::Instant::now();
        let answered = self.answer(model, choice, input, request_id).await;
        let outcome = answered.as_ref().map_or_else(ServiceError::kind, |_| "ok");
        // A name that is not a model's, or a request refused before the model was looked up, is
        // not given a label of its own: labels stay bounded by the registry.
        let label = match &answered {
            Err(ServiceError::NotFound(_) | ServiceError::BadInput(_)) => "(unknown)",
            _ => model,
        };
        self.metrics.predict(label, outcome, started.elapsed());
        answered
    }

    async fn answer(
        &self,
        model: &str,
        choice: &VersionChoice,
        input: PredictInput,
        request_id: &str,
    ) -> ServiceResult<Vec<Prediction>> {
        let count = match &input {
            PredictInput::Texts(t) => t.len(),
            PredictInput::Rows(r) => r.len(),
        };
        let field = match &input {
            PredictInput::Texts(_) => "inputs",
            PredictInput::Rows(_) => "rows",
        };
        if count == 0 || count > MAX_PREDICT_BATCH {
            return Err(FieldError::new(
                field,
                format!("give 1 to {MAX_PREDICT_BATCH} (got {count})"),
            )
            .into());
        }
        if let PredictInput::Texts(texts) = &input
            && let Some(i) = texts.iter().position(|t| t.len() > MAX_INPUT_BYTES)
        {
            return Err(FieldError::new(
                format!("inputs[{i}]"),
                format!("is longer than {MAX_INPUT_BYTES} bytes"),
            )
            .into());
        }
        let (version, alias) = self.choose_version(model, choice, request_id).await?;
        let served = self.served(&version).await?;
        let what = format!("model {} version {}", version.model_name, version.version);
        match (&served.model.manifest.architecture, &input) {
            (ModelArchitecture::Bert { .. }, PredictInput::Rows(_)) => {
                return Err(FieldError::new(
                    "rows",
                    format!("{what} is a text model: send `inputs`"),
                )
                .into());
            }
            (ModelArchitecture::Mlp { features, .. }, PredictInput::Texts(_)) => {
                return Err(FieldError::new(
                    "inputs",
                    format!(
                        "{what} is a tabular model: send `rows` of {} numbers",
                        features.len()
                    ),
                )
                .into());
            }
            (ModelArchitecture::Mlp { features, .. }, PredictInput::Rows(rows)) => {
                for (i, row) in rows.iter().enumerate() {
                    if row.len() != features.len() {
                        return Err(FieldError::new(
                            format!("rows[{i}]"),
                            format!(
                                "has {} numbers; {what} reads {} ({})",
                                row.len(),
                                features.len(),
                                crate::domain::abbreviate(&features.join(", "), 200)
                            ),
                        )
                        .into());
                    }
                    // The model computes in 32-bit floats: a larger number is infinite there.
                    if let Some(j) = row
                        .iter()
                        .position(|x| !x.is_finite() || x.abs() > f32::MAX as f64)
                    {
                        return Err(FieldError::new(
                            format!("rows[{i}][{j}]"),
                            format!(
                                "must be a finite number within ±{:e} (a 32-bit float; got {})",
                                f32::MAX,
                                row[j]
                            ),
                        )
                        .into());
                    }
                }
            }
            (ModelArchitecture::Bert { .. }, PredictInput::Texts(_)) => {}
        }
        served.requests.fetch_add(count as u64, Ordering::Relaxed);
        served.last_used.store(now_ms(), Ordering::Relaxed);
        let logits = self.forward_in_batches(&served, input, &what).await?;
        if let Some(alias) = alias {
            self.store
                .count_alias_requests(
                    &version.model_name,
                    alias.as_str(),
                    version.version,
                    count as i64,
                )
                .await?;
        }
        let labels = &served.model.manifest.labels;
        Ok(logits
            .into_iter()
            .map(|row| {
                let probabilities = softmax(&row);
                let best = (0..probabilities.len())
                    .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
                    .unwrap_or(0);
                Prediction {
                    label: labels[best].clone(),
                    score: probabilities[best],
                    probabilities: labels.iter().cloned().zip(probabilities).collect(),
                    logits: row.into_iter().map(f64::from).collect(),
                    version: version.version,
                }
            })
            .collect())
    }

    /// The logits of every input, run in micro-batches that each take their memory from the process's
    /// budget for predictions first (waiting their turn), on a blocking thread.
    async fn forward_in_batches(
        &self,
        served: &Arc<Served>,
        input: PredictInput,
        what: &str,
    ) -> ServiceResult<Vec<Vec<f32>>> {
        let model = &served.model;
        let plan = match &input {
            PredictInput::Texts(texts) => {
                let chars: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
                self.predictions.plan(texts.len(), "inputs", |r| {
                    model.text_batch_memory(&chars[r])
                })?
            }
            PredictInput::Rows(rows) => self
                .predictions
                .plan(rows.len(), "rows", |r| model.row_batch_memory(r.len()))?,
        };
        let input = Arc::new(input);
        let mut logits = Vec::new();
        for (range, bytes) in plan {
            let _memory = self.predictions.take(bytes).await?;
            let (served, input) = (served.clone(), input.clone());
            let batch = tokio::task::spawn_blocking(move || {
                let logits = match &*input {
                    PredictInput::Texts(texts) => served.model.text_logits(&texts[range]),
                    PredictInput::Rows(rows) => {
                        let rows: Vec<Vec<f32>> = rows[range]
                            .iter()
                            .map(|r| r.iter().map(|&x| x as f32).collect())
                            .collect();
                        served.model.row_logits(&rows)
                    }
                };
                give_back_freed_memory();
                logits
            })
            .await
            .context("the prediction thread ended")?
            .with_context(|| format!("predicting with {what}"))?;
            logits.extend(batch);
        }
        Ok(logits)
    }

    /// Loads a version into the cache ahead of requests.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn load_model(
        &self,
        model: &str,
        choice: &VersionChoice,
    ) -> ServiceResult<Arc<Served>> {
        let (version, _) = self
            .choose_version(model, choice, &uuid::Uuid::new_v4().to_string())
            .await?;
        self.served(&version).await
    }

    /// Drops a version from the cache; whether it was loaded.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn unload_model(&self, model: &str, version: i64) -> ServiceResult<bool> {
        let choice = VersionChoice {
            version: Some(version),
            alias: None,
        };
        let (version, _) = self.choose_version(model, &choice, "").await?;
        Ok(self.models.remove(&version.id))
    }

    /// The versions loaded in this process, least recently used first.
    pub fn loaded_models(&self) -> Vec<Arc<Served>> {
        self.models.loaded()
    }
}

/// Returns what this thread's heap holds freed to the OS now. A batch's memory is given back to the
/// budget when it ends; without this, the blocking thread that ran it would keep the freed pages until
/// it next allocates, and batches on other threads would take fresh ones, so the process could hold
/// several budgets' worth under load.
fn give_back_freed_memory() {
    // SAFETY: mi_collect only walks the calling thread's own mimalloc heap; it is a no-op for memory
    // mimalloc does not manage.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_numbers_are_fixed_per_request_and_spread_evenly() {
        assert_eq!(routing_number("req-1"), routing_number("req-1"));
        let below: usize = (0..10_000)
            .filter(|i| routing_number(&format!("r{i}")) < 0.25)
            .count();
        assert!((2300..2700).contains(&below), "{below} of 10000 below 0.25");
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_the_order() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > p[2] && p[2] > p[0]);
    }
}
