//! Turning what a user asked for into what the training engine reads: a dataset's examples (checked
//! again as they are loaded) and a base model's local directory (downloaded from the hub once). The
//! workers use it for stored jobs, `kiln train` for a local file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::Service;
use crate::config::Secret;
use crate::data::{self, FieldNames, ReadOptions, RowSource};
use crate::domain::{
    BaseModelRef, DatasetSummary, FieldError, ModelVersionRecord, RegisteredModel, TaskKind,
    TrainData, TrainingSettings, UserError, abbreviate,
};
use crate::train::bert::BertConfig;
use crate::train::memory;
use crate::train::tokenizer::MAX_FITTED_VOCAB;

/// Where `hf:` base models come from.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub endpoint: String,
    /// Sent as a bearer token, for private repositories.
    pub token: Option<Secret>,
}

/// Validates a local dataset file and indexes its rows for training, in one streaming pass; a file with
/// problems is refused with what validation found, so the caller can report each problem by line. A
/// Parquet file's rows are read back from a JSONL copy beside it (`<path>.rows.jsonl`).
pub fn index_file(
    path: &Path,
    options: &ReadOptions,
) -> anyhow::Result<Result<TrainData, Box<DatasetSummary>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut scratch = path.as_os_str().to_owned();
    scratch.push(".rows.jsonl");
    Ok(
        data::index(RowSource::File(file), options, Path::new(&scratch))
            .map(|rows| Arc::new(rows) as TrainData),
    )
}

/// A run's examples as it trains on them: augmented afresh each epoch when its hyperparameters ask
/// for it (`hyperparameters.augmentation`), from the run's seed.
pub fn augmented(examples: TrainData, hyper: &crate::domain::Hyperparams) -> TrainData {
    data::augment::augmented(examples, hyper.augmentation.as_ref(), hyper.seed)
}

/// The folders local base models may come from (`KILN_MODEL_ROOTS`). A reference is resolved inside
/// them without following links out of them, and a refusal never says what exists outside them.
#[derive(Debug, Clone, Default)]
pub struct ModelRoots(Vec<PathBuf>);

impl ModelRoots {
    /// Roots from a colon-separated list; relative ones are taken from the current folder.
    pub fn parse(list: &str) -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self(
            list.split(':')
                .filter(|p| !p.trim().is_empty())
                .filter_map(|p| normalize(&cwd.join(p.trim())))
                .collect(),
        )
    }

    /// The folder a local reference names, checked to hold the three files kiln reads.
    pub fn resolve(&self, field: &str, path: &Path) -> Result<PathBuf, FieldError> {
        let shown = abbreviate(&path.display().to_string(), 120);
        let outside = || {
            FieldError::new(
                field,
                "must be a folder under the server's model roots (KILN_MODEL_ROOTS), or \
                 hf:org/name for a hub model",
            )
        };
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            normalize(path).into_iter().collect()
        } else {
            self.0
                .iter()
                .filter_map(|r| normalize(&r.join(path)))
                .collect()
        };
        let mut inside = false;
        for candidate in candidates {
            if !self.0.iter().any(|r| candidate.starts_with(r)) {
                continue;
            }
            inside = true;
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            let under_a_root = self.0.iter().any(|root| {
                real.starts_with(std::fs::canonicalize(root).unwrap_or_else(|_| root.clone()))
            });
            if !under_a_root {
                // A link out of the roots: as if the path were outside.
                return Err(outside());
            }
            if !real.is_dir() {
                return Err(FieldError::new(field, format!("{shown} is not a folder")));
            }
            check_model_files(field, &real, &shown)?;
            return Ok(real);
        }
        if inside {
            Err(FieldError::new(
                field,
                format!("there is no model folder {shown} under the model roots"),
            ))
        } else {
            Err(outside())
        }
    }
}

/// `path` made absolute without `.` and `..` (lexically, touching nothing); `None` when `..` climbs
/// above the filesystem's root.
fn normalize(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    Some(out)
}

fn check_model_files(field: &str, dir: &Path, shown: &str) -> Result<(), FieldError> {
    for file in crate::hub::MODEL_FILES {
        if !dir.join(file).is_file() {
            return Err(FieldError::new(field, format!("{shown} has no {file}")));
        }
    }
    Ok(())
}

/// Checks a base model reference before a job is accepted: a local one resolves under `roots` (when
/// given: the server's; `kiln train` trusts its own user) to a folder holding the three files; a hub
/// one is checked when it is downloaded. Problems are reported against `field`.
#[tracing::instrument(skip_all)]
pub async fn check_base_model(
    field: &str,
    base: &BaseModelRef,
    roots: Option<&ModelRoots>,
) -> Result<(), FieldError> {
    let dir = match base {
        BaseModelRef::Local(dir) => dir,
        BaseModelRef::Hub(_) => return Ok(()),
        // The service resolves these against its registry; `kiln train` has none.
        BaseModelRef::Registered(_) if roots.is_some() => return Ok(()),
        BaseModelRef::Registered(_) => return Err(no_registry(field)),
    };
    let (name, dir, roots) = (field.to_string(), dir.clone(), roots.cloned());
    tokio::task::spawn_blocking(move || match roots {
        Some(roots) => roots.resolve(&name, &dir).map(|_| ()),
        None if dir.is_dir() => {
            check_model_files(&name, &dir, &abbreviate(&dir.display().to_string(), 120))
        }
        None => Err(FieldError::new(
            &name,
            format!("{} is not a directory", dir.display()),
        )),
    })
    .await
    .map_err(|_| FieldError::new(field, "could not be checked"))?
}

fn no_registry(field: &str) -> FieldError {
    FieldError::new(
        field,
        "model:NAME/VERSION names a version in a kiln server's registry: submit the job to the \
         server (submitJob) to retrain it",
    )
}

/// The local directory of a base model: the folder under `roots` (when given), or the hub cache under
/// `cache_root` after downloading what is missing. A registered version is fetched by the service
/// ([`Service::base_model_dir`]).
#[tracing::instrument(skip_all)]
pub async fn fetch_base_model(
    base: &BaseModelRef,
    hub: &HubSettings,
    cache_root: &Path,
    roots: Option<&ModelRoots>,
    progress: crate::hub::Progress<'_>,
) -> anyhow::Result<PathBuf> {
    match base {
        BaseModelRef::Local(dir) => match roots {
            Some(roots) => roots.resolve("baseModel", dir).map_err(|e| {
                UserError::new(format!("the base model cannot be used: {}", e.message)).into()
            }),
            None => Ok(dir.clone()),
        },
        BaseModelRef::Hub(model) => {
            let token = hub.token.as_ref().map(|t| t.expose());
            crate::hub::fetch(model, &hub.endpoint, token, cache_root, progress).await
        }
        BaseModelRef::Registered(_) => Err(UserError::new(no_registry("baseModel").message).into()),
    }
}

impl Service {
    /// Refuses a job whose estimated peak memory ([`crate::train::memory`]) is above
    /// `KILN_MAX_TRAIN_MEMORY`, naming the setting to lower. A local base model's `config.json` is read
    /// (and checked against kiln's limits) for it; a hub model's size is known only once the worker has
    /// downloaded it, and is checked there before anything is allocated.
    pub(super) async fn check_training_memory(
        &self,
        settings: &TrainingSettings,
        dataset: &DatasetSummary,
        resources: &crate::domain::Resources,
    ) -> Result<(), FieldError> {
        let labels = dataset.labels.len();
        let h = &settings.hyperparameters;
        let (batch, seq) = (h.batch_size as u64, h.max_seq_length as u64);
        let trained = memory::Trained::of(settings);
        let (estimate, model_field) = match (settings.task, &settings.base_model) {
            (TaskKind::TabularClassification, _) => (
                memory::mlp(
                    dataset.features.len(),
                    &h.tabular_hidden_sizes(),
                    labels,
                    batch,
                ),
                "datasetId",
            ),
            (TaskKind::TextClassification, None) => {
                let size = settings.model_config.unwrap_or_default();
                let config = BertConfig::small(&size, MAX_FITTED_VOCAB, seq as usize);
                (
                    memory::bert(&config, labels, batch, seq, trained),
                    "modelConfig",
                )
            }
            (TaskKind::TextClassification, Some(BaseModelRef::Local(dir))) => {
                let dir = self.settings.model_roots.resolve("baseModel", dir)?;
                let path = dir.join("config.json");
                let config = tokio::task::spawn_blocking(move || BertConfig::read(&path))
                    .await
                    .map_err(|e| FieldError::new("baseModel", e.to_string()))?
                    .map_err(|e| {
                        let reason =
                            UserError::find_in(&e).unwrap_or("its config.json cannot be read");
                        FieldError::new("baseModel", reason)
                    })?;
                (
                    memory::bert(&config, labels, batch, seq, trained),
                    "baseModel",
                )
            }
            (TaskKind::TextClassification, Some(BaseModelRef::Registered(registered))) => {
                let config = self.registered_config(registered).await.map_err(|e| {
                    let reason = UserError::find_in(&e)
                        .unwrap_or("the registered version's config.json cannot be read");
                    FieldError::new("baseModel", reason)
                })?;
                (
                    memory::bert(&config, labels, batch, seq, trained),
                    "baseModel",
                )
            }
            // Known once the worker has the weights, and checked there.
            (TaskKind::TextClassification, Some(BaseModelRef::Hub(_))) => return Ok(()),
        };
        if let Some((field, message)) =
            memory::refusal(&estimate, self.settings.max_train_memory, model_field)
        {
            return Err(FieldError::new(field, message));
        }
        // The job's own memory bound (`resources.memoryGb`) must hold what training needs.
        match resources.memory_bytes() {
            Some(asked) if estimate.bytes() > asked => {
                let fits = estimate.max_batch_within(asked);
                let lower = if fits > 0 {
                    format!(", or lower batchSize to {fits} or less")
                } else {
                    String::new()
                };
                Err(FieldError::new(
                    "resources.memoryGb",
                    format!(
                        "training would need about {}, more than the {} asked for; raise memoryGb{lower}",
                        memory::human(estimate.bytes()),
                        memory::human(asked)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The `config.json` of a registered text version, read from the object store.
    async fn registered_config(&self, registered: &RegisteredModel) -> anyhow::Result<BertConfig> {
        let version = self.registered_record(registered).await?;
        let bytes = self.version_file(&version, "config.json").await?;
        BertConfig::parse(&String::from_utf8_lossy(&bytes))
    }

    /// The version row a pinned `model:NAME/N` reference names.
    async fn registered_record(
        &self,
        registered: &RegisteredModel,
    ) -> anyhow::Result<ModelVersionRecord> {
        let number = registered
            .number()
            .context("a job's registered base model names its version")?;
        let model = registered.model.as_str();
        Ok(self
            .store
            .model_version(model, number)
            .await?
            .ok_or_else(|| {
                UserError::new(format!(
                    "version {number} of model {model} no longer exists"
                ))
            })?)
    }

    /// The examples of a stored dataset: its file is copied from the object store into `dir` (streamed),
    /// checked again and indexed, and rows are read from that copy as training needs them.
    #[tracing::instrument(skip_all)]
    /// `fields`: the mapping the job was submitted with (the dataset's own when `None`).
    pub async fn training_examples(
        &self,
        dataset_id: &str,
        fields: Option<&FieldNames>,
        dir: &Path,
    ) -> anyhow::Result<TrainData> {
        let dataset = self
            .store
            .get_dataset(dataset_id)
            .await?
            .ok_or_else(|| UserError::new(format!("dataset {dataset_id} no longer exists")))?;
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("dataset.{}", dataset.format.extension()));
        self.objects
            .get_to_file(&dataset.object_key, &path)
            .await
            .map_err(|e| {
                UserError::wrap(
                    "the dataset could not be read from the object store; retry the job later",
                    e,
                )
            })?;
        let options = ReadOptions {
            max_line_bytes: self.settings.max_line_bytes,
            rules: dataset.rules.clone(),
            ..ReadOptions::new(
                dataset.format,
                fields.cloned().unwrap_or_else(|| dataset.fields.clone()),
            )
        };
        tokio::task::spawn_blocking(move || index_file(&path, &options))
            .await
            .context("the dataset loading thread panicked")??
            .map_err(|summary| {
                let first = summary
                    .errors
                    .first()
                    .map(|e| e.message.as_str())
                    .unwrap_or("unknown error");
                UserError::new(format!("the dataset no longer validates: {first}")).into()
            })
    }

    /// The local directory of a job's base model: downloaded into the work folder's `hub/` cache when it
    /// comes from the hub (reporting to `progress` how far it is); a registered version's files copied
    /// into `job_dir/base`.
    #[tracing::instrument(skip_all)]
    pub async fn base_model_dir(
        &self,
        base: &BaseModelRef,
        job_dir: &Path,
        progress: crate::hub::Progress<'_>,
    ) -> anyhow::Result<PathBuf> {
        if let BaseModelRef::Registered(registered) = base {
            let version = self.registered_record(registered).await?;
            let dir = job_dir.join("base");
            self.fetch_version_files(&version, &dir).await?;
            return Ok(dir);
        }
        fetch_base_model(
            base,
            &self.settings.hub,
            &self.settings.work_dir.join("hub"),
            Some(&self.settings.model_roots),
            progress,
        )
        .await
    }
}
