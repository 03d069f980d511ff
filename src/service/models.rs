//! The model registry: models, their versions, and registering the version a job trained.

use std::path::Path;

use anyhow::Context;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    JobRecord, JobStatus, ModelArchitecture, ModelManifest, ModelName, ModelRecord,
    ModelVersionRecord, ObjectKey,
};
use crate::events::JobEvent;
use crate::objects::keys;
use crate::train::files;

impl Service {
    /// A model by name; a string that cannot be a model name names none.
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn model(&self, name: &str) -> ServiceResult<Option<ModelRecord>> {
        if ModelName::parse("name", name).is_err() {
            return Ok(None);
        }
        Ok(self.store.get_model(name).await?)
    }

    /// By name, after the name `after`.
    #[tracing::instrument(skip_all)]
    pub async fn models(&self, first: i64, after: Option<&str>) -> ServiceResult<Vec<ModelRecord>> {
        if let Some(after) = after
            && ModelName::parse("after", after).is_err()
        {
            return Err(crate::domain::FieldError::new(
                "after",
                "is not a cursor returned by this API",
            )
            .into());
        }
        Ok(self.store.list_models(first, after).await?)
    }

    #[tracing::instrument(skip_all)]
    pub async fn count_models(&self) -> ServiceResult<i64> {
        Ok(self.store.count_models().await?)
    }

    /// Versions of one model by number, in one round trip (those that exist, by number).
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn versions_numbered(
        &self,
        model: &str,
        numbers: &[i64],
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        Ok(self.store.model_versions_numbered(model, numbers).await?)
    }

    /// A version's stored files (its export's top level: name and key), after checking that every file
    /// it needs is there: the weights and `kiln.json`, and what its manifest says it has besides (a text
    /// model's `config.json` and `tokenizer.json`, LoRA adapters kept apart). A missing one is
    /// [`ServiceError::Lost`], naming them.
    pub(super) async fn version_objects(
        &self,
        version: &ModelVersionRecord,
    ) -> ServiceResult<Vec<(String, ObjectKey)>> {
        let name = ModelName::parse("model", &version.model_name)?;
        let prefix = keys::model_run(&name, &version.job_id)?;
        let mut files = Vec::new();
        for (file, _) in self.objects.list(&prefix).await? {
            if !file.contains('/') {
                let key = prefix.join(&file)?;
                files.push((file, key));
            }
        }
        let has = |f: &str| files.iter().any(|(name, _)| name == f);
        let mut needed = vec![files::WEIGHTS, ModelManifest::FILE_NAME];
        if has(ModelManifest::FILE_NAME) {
            let manifest = self
                .version_manifest(version)
                .await
                .map_err(ServiceError::Internal)?;
            if let ModelArchitecture::Bert { lora, .. } = &manifest.architecture {
                needed.extend(["config.json", "tokenizer.json"]);
                if lora.as_ref().is_some_and(|l| !l.merge_adapters) {
                    needed.extend([files::ADAPTER_WEIGHTS, files::ADAPTER_CONFIG]);
                }
            }
        }
        let missing: Vec<&str> = needed.into_iter().filter(|f| !has(f)).collect();
        if !missing.is_empty() {
            return Err(ServiceError::Lost(format!(
                "version {} of model {} has lost stored files: {} {} missing from the object store; \
                 restore {} from a backup, or train the model again",
                version.version,
                version.model_name,
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                if missing.len() == 1 { "it" } else { "them" },
            )));
        }
        Ok(files)
    }

    /// Copies a version's files (its export's top level) from the object store into `dir`, streamed.
    pub(super) async fn fetch_version_files(
        &self,
        version: &ModelVersionRecord,
        dir: &Path,
    ) -> ServiceResult<()> {
        let files = self.version_objects(version).await?;
        self.download_objects(files, dir).await
    }

    /// Copies `files` (name and key) from the object store into `dir`, streamed.
    pub(super) async fn download_objects(
        &self,
        files: Vec<(String, ObjectKey)>,
        dir: &Path,
    ) -> ServiceResult<()> {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        for (file, key) in files {
            self.objects.get_to_file(&key, &dir.join(&file)).await?;
        }
        Ok(())
    }

    /// A version's `kiln.json`.
    pub(super) async fn version_manifest(
        &self,
        version: &ModelVersionRecord,
    ) -> anyhow::Result<ModelManifest> {
        let bytes = self.version_file(version, ModelManifest::FILE_NAME).await?;
        Ok(ModelManifest::from_json(&bytes)?)
    }

    /// One of a version's (small) files, read whole.
    pub(super) async fn version_file(
        &self,
        version: &ModelVersionRecord,
        file: &str,
    ) -> anyhow::Result<bytes::Bytes> {
        let name = ModelName::parse("model", &version.model_name)?;
        let key = keys::model_run(&name, &version.job_id)?.join(file)?;
        self.objects.get_bytes(&key).await
    }

    /// Versions by id, in one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn model_versions_by_id(
        &self,
        ids: &[String],
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        Ok(self.store.get_model_versions(ids).await?)
    }

    /// Every version of many models, in one round trip, by model then version.
    #[tracing::instrument(skip_all)]
    pub async fn versions_of_models(
        &self,
        names: &[String],
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        Ok(self.store.versions_of_models(names).await?)
    }

    /// Registers what a job trained: uploads the model's files from `dir` to the object store under the
    /// job's run folder, then, in one transaction, files the next version of the job's model and marks the
    /// job `COMPLETED`, and announces it. Nothing is registered when `worker` no longer holds the job.
    #[tracing::instrument(skip_all, fields(worker = %worker))]
    pub async fn register_model_version(
        &self,
        job: &JobRecord,
        worker: &str,
        dir: &Path,
        files: &[String],
        manifest: &ModelManifest,
    ) -> anyhow::Result<ModelVersionRecord> {
        let model = ModelName::parse("modelName", &job.model_name)?;
        let prefix = keys::model_run(&model, &job.id)?;
        for file in files {
            self.objects
                .put_file(&prefix.join(file)?, &dir.join(file))
                .await
                .with_context(|| format!("storing {file} of the trained model"))?;
        }
        let (done, version) = self
            .store
            .complete_job_with_version(
                job,
                worker,
                &uuid::Uuid::new_v4().to_string(),
                &self.objects.uri(&prefix),
                &manifest.metrics,
            )
            .await?;
        tracing::info!(model = %version.model_name, version = version.version, "model registered");
        debug_assert_eq!(done.status, JobStatus::Completed);
        // Before the status is announced, so whoever sees COMPLETED sees the alias moved too.
        self.auto_promote(&done, &version).await;
        let message = format!(
            "completed: registered as version {} of model {}",
            version.version, version.model_name
        );
        self.log_now(&done.id, crate::domain::LogLevel::Info, message)
            .await;
        self.events.publish(
            &done.id,
            JobEvent::StatusChanged {
                status: done.status,
                error: None,
            },
        );
        Ok(version)
    }
}
