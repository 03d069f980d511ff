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
    BaseModelRef, DatasetRecord, DatasetSummary, FieldError, TaskKind, TrainData, TrainingSettings,
    UserError,
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
/// problems is refused with what validation found, so the caller can report each problem by line.
pub fn index_file(
    path: &Path,
    options: &ReadOptions,
) -> anyhow::Result<Result<TrainData, DatasetSummary>> {
    let open = || std::fs::File::open(path).with_context(|| format!("opening {}", path.display()));
    let reader = std::io::BufReader::new(open()?);
    Ok(data::index(reader, options, RowSource::File(open()?))
        .map(|rows| Arc::new(rows) as TrainData))
}

/// A local base model must be a directory holding the three files kiln reads; a hub reference is
/// checked when it is downloaded. Problems are reported against `field`.
pub async fn check_base_model(field: &str, base: &BaseModelRef) -> Result<(), FieldError> {
    let BaseModelRef::Local(dir) = base else {
        return Ok(());
    };
    if !tokio::fs::metadata(dir)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Err(FieldError::new(
            field,
            format!("{} is not a directory on the server", dir.display()),
        ));
    }
    for file in crate::hub::MODEL_FILES {
        if tokio::fs::metadata(dir.join(file)).await.is_err() {
            return Err(FieldError::new(
                field,
                format!("{} has no {file}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// The local directory of a base model: the path itself, or the hub cache under `cache_root` after
/// downloading what is missing.
pub async fn fetch_base_model(
    base: &BaseModelRef,
    hub: &HubSettings,
    cache_root: &Path,
) -> anyhow::Result<PathBuf> {
    match base {
        BaseModelRef::Local(dir) => Ok(dir.clone()),
        BaseModelRef::Hub(model) => {
            let token = hub.token.as_ref().map(|t| t.expose());
            crate::hub::fetch(model, &hub.endpoint, token, cache_root).await
        }
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
        dataset: &DatasetRecord,
    ) -> Result<(), FieldError> {
        let labels = dataset.summary.labels.len();
        let h = &settings.hyperparameters;
        let (batch, seq) = (h.batch_size as u64, h.max_seq_length as u64);
        let (estimate, model_field) = match (settings.task, &settings.base_model) {
            (TaskKind::TabularClassification, _) => (
                memory::mlp(dataset.summary.features.len(), labels, batch),
                "datasetId",
            ),
            (TaskKind::TextClassification, None) => {
                let size = settings.model_config.unwrap_or_default();
                let config = BertConfig::small(&size, MAX_FITTED_VOCAB, seq as usize);
                (memory::bert(&config, labels, batch, seq), "modelConfig")
            }
            (TaskKind::TextClassification, Some(BaseModelRef::Local(dir))) => {
                let path = dir.join("config.json");
                let config = tokio::task::spawn_blocking(move || BertConfig::read(&path))
                    .await
                    .map_err(|e| FieldError::new("baseModel", e.to_string()))?
                    .map_err(|e| {
                        let reason =
                            UserError::find_in(&e).unwrap_or("its config.json cannot be read");
                        FieldError::new("baseModel", reason)
                    })?;
                (memory::bert(&config, labels, batch, seq), "baseModel")
            }
            (TaskKind::TextClassification, Some(BaseModelRef::Hub(_))) => return Ok(()),
        };
        match memory::refusal(&estimate, self.settings.max_train_memory, model_field) {
            Some((field, message)) => Err(FieldError::new(field, message)),
            None => Ok(()),
        }
    }

    /// The examples of a stored dataset: its file is copied from the object store into `dir` (streamed),
    /// checked again and indexed, and rows are read from that copy as training needs them.
    pub async fn training_examples(
        &self,
        dataset_id: &str,
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
            ..ReadOptions::new(
                dataset.format,
                FieldNames {
                    text: dataset.text_field.clone(),
                    label: dataset.label_field.clone(),
                },
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

    /// The local directory of a job's base model, downloaded into the work folder's `hub/` cache when it
    /// comes from the hub.
    pub async fn base_model_dir(&self, base: &BaseModelRef) -> anyhow::Result<PathBuf> {
        fetch_base_model(
            base,
            &self.settings.hub,
            &self.settings.work_dir.join("hub"),
        )
        .await
    }
}
