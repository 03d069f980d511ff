//! `predict`: which version answers (a number, an alias — a split alias routed by weight per request —
//! or the latest), an in-memory LRU cache of loaded versions, and the engine's own forward pass run on a
//! blocking thread, off the async runtime.
//!
//! Limits: [`MAX_PREDICT_BATCH`] inputs or rows per request, [`MAX_INPUT_BYTES`] per text; at most
//! `KILN_MODEL_CACHE_SIZE` versions loaded per process (the least recently used is dropped first; a
//! request that still holds it finishes with it).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    AliasName, FieldError, ModelArchitecture, ModelName, ModelVersionRecord, now_ms,
};
use crate::train::inference::LoadedModel;

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

/// A loaded version and how it has been used.
pub struct Served {
    pub version: ModelVersionRecord,
    pub model: LoadedModel,
    pub loaded_at: i64,
    last_used: AtomicI64,
    requests: AtomicU64,
}

impl Served {
    pub fn last_used(&self) -> i64 {
        self.last_used.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

struct Slot {
    version_id: String,
    cell: Arc<OnceCell<Arc<Served>>>,
}

/// The loaded versions, least recently used first. One load per version at a time: concurrent
/// requests for a version that is loading wait for that load.
pub struct ModelCache {
    capacity: usize,
    slots: std::sync::Mutex<Vec<Slot>>,
}

impl ModelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The cell of a version, made most recently used (created, evicting the least recently used
    /// beyond the capacity, when absent).
    fn cell(&self, version_id: &str) -> Arc<OnceCell<Arc<Served>>> {
        let mut slots = self.slots.lock().expect("cache lock");
        let slot = match slots.iter().position(|s| s.version_id == version_id) {
            Some(i) => slots.remove(i),
            None => Slot {
                version_id: version_id.to_string(),
                cell: Arc::new(OnceCell::new()),
            },
        };
        let cell = slot.cell.clone();
        slots.push(slot);
        while slots.len() > self.capacity {
            let evicted = slots.remove(0);
            tracing::info!(version = %evicted.version_id, "model unloaded (least recently used)");
        }
        cell
    }

    fn loaded(&self) -> Vec<Arc<Served>> {
        let slots = self.slots.lock().expect("cache lock");
        slots.iter().filter_map(|s| s.cell.get().cloned()).collect()
    }

    fn remove(&self, version_id: &str) -> bool {
        let mut slots = self.slots.lock().expect("cache lock");
        let before = slots.len();
        slots.retain(|s| s.version_id != version_id || s.cell.get().is_none());
        slots.len() != before
    }
}

/// A number in `[0, 1)` fixed by a request id: the same id is always routed the same way.
fn routing_number(request_id: &str) -> f64 {
    let digest = Sha256::digest(request_id.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

fn softmax(logits: &[f32]) -> Vec<f64> {
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
    async fn served(&self, version: &ModelVersionRecord) -> ServiceResult<Arc<Served>> {
        let cell = self.models.cell(&version.id);
        let served = cell
            .get_or_try_init(|| async {
                let model = self.load_version(version).await?;
                tracing::info!(model = %version.model_name, version = version.version, "model loaded");
                anyhow::Ok(Arc::new(Served {
                    version: version.clone(),
                    model,
                    loaded_at: now_ms(),
                    last_used: AtomicI64::new(now_ms()),
                    requests: AtomicU64::new(0),
                }))
            })
            .await
            .map_err(ServiceError::Internal)?;
        Ok(served.clone())
    }

    async fn load_version(&self, version: &ModelVersionRecord) -> anyhow::Result<LoadedModel> {
        let dir = self
            .settings
            .work_dir
            .join("serving")
            .join(uuid::Uuid::new_v4().to_string());
        // The weights and tokenizer are read whole into memory; the folder is removed after.
        let loaded = async {
            self.fetch_version_files(version, &dir).await?;
            let path = dir.clone();
            tokio::task::spawn_blocking(move || {
                LoadedModel::load(&path, &crate::train::default_device())
            })
            .await
            .context("the loading thread ended")?
        }
        .await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a loaded model's folder");
        }
        loaded.with_context(|| {
            format!(
                "loading version {} of model {}",
                version.version, version.model_name
            )
        })
    }

    /// Answers `input` with the chosen version. `request_id` fixes a split alias's routing.
    pub async fn predict(
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
                    if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                        return Err(FieldError::new(
                            format!("rows[{i}][{j}]"),
                            "must be a finite number",
                        )
                        .into());
                    }
                }
            }
            (ModelArchitecture::Bert { .. }, PredictInput::Texts(_)) => {}
        }
        served.requests.fetch_add(count as u64, Ordering::Relaxed);
        served.last_used.store(now_ms(), Ordering::Relaxed);
        let worker = served.clone();
        let logits = tokio::task::spawn_blocking(move || match input {
            PredictInput::Texts(texts) => worker.model.text_logits(&texts),
            PredictInput::Rows(rows) => {
                let rows: Vec<Vec<f32>> = rows
                    .into_iter()
                    .map(|r| r.into_iter().map(|x| x as f32).collect())
                    .collect();
                worker.model.row_logits(&rows)
            }
        })
        .await
        .context("the prediction thread ended")?
        .with_context(|| format!("predicting with {what}"))?;
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

    /// Loads a version into the cache ahead of requests.
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
