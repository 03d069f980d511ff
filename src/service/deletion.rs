//! Deleting a job, a model version or a model: the rows go in one transaction that first checks nothing
//! still needs them, then the stored files. A file that cannot be removed then is logged (the rows are
//! gone either way, and nothing refers to the file any more).

use super::jobs::{job_error, not_found};
use super::{Service, ServiceError, ServiceResult};
use crate::auth::{Principal, Role};
use crate::domain::{
    FieldError, JobRecord, ModelName, ModelVersionRecord, ObjectKey, is_plausible_id,
};
use crate::objects::keys;

impl Service {
    /// Deletes an ended job with its epochs, metrics, log and checkpoints. `CONFLICT` while it is queued,
    /// running or paused, or while the version it produced exists.
    #[tracing::instrument(skip_all, fields(id = %id))]
    pub async fn delete_job(&self, id: &str) -> ServiceResult<JobRecord> {
        if !is_plausible_id(id) {
            return Err(not_found(id));
        }
        let job = self
            .store
            .delete_job(id)
            .await
            .map_err(|e| job_error(id, e))?;
        self.remove_objects(keys::checkpoints(&job.id)).await;
        // What a failed run may have stored before it failed.
        if let Ok(name) = ModelName::parse("model", &job.model_name) {
            self.remove_objects(keys::model_run(&name, &job.id)).await;
        }
        tracing::info!(job_id = %job.id, "job deleted");
        Ok(job)
    }

    /// Deletes one version of a model with its files; its job stays, without a version, and its number
    /// is never given again. `CONFLICT` while an alias points to it.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn delete_model_version(
        &self,
        model: &str,
        version: i64,
    ) -> ServiceResult<ModelVersionRecord> {
        let name = ModelName::parse("model", model)?;
        if version < 1 {
            return Err(FieldError::new("version", "must be 1 or more").into());
        }
        let record = self
            .store
            .delete_model_version(name.as_str(), version)
            .await
            .map_err(|e| version_error(model, Some(version), e))?;
        self.forget_version(&name, &record).await;
        tracing::info!(model = %name.as_str(), version, "model version deleted");
        Ok(record)
    }

    /// Deletes a model, every version of it and their files, its alias history, promotion policies and
    /// training defaults. Admins only. `CONFLICT` while it has an alias or a job queued, running or
    /// paused. Returns the versions deleted.
    #[tracing::instrument(skip_all, fields(model = %model))]
    pub async fn delete_model(
        &self,
        caller: &Principal,
        model: &str,
    ) -> ServiceResult<Vec<ModelVersionRecord>> {
        if caller.role != Role::Admin {
            return Err(ServiceError::Forbidden(
                "only an admin token can delete a model".into(),
            ));
        }
        let name = ModelName::parse("model", model)?;
        let versions = self
            .store
            .delete_model(name.as_str())
            .await
            .map_err(|e| version_error(model, None, e))?;
        for version in &versions {
            self.forget_version(&name, version).await;
        }
        tracing::info!(model = %name.as_str(), versions = versions.len(), "model deleted");
        Ok(versions)
    }

    /// Drops a deleted version from the model cache and removes its files.
    async fn forget_version(&self, name: &ModelName, version: &ModelVersionRecord) {
        self.models.remove(&version.id);
        self.remove_objects(keys::model_run(name, &version.job_id))
            .await;
    }

    pub(super) async fn remove_objects(&self, prefix: Result<ObjectKey, FieldError>) {
        let Ok(prefix) = prefix else { return };
        if let Err(e) = self.objects.delete_prefix(&prefix).await {
            tracing::warn!(prefix = %prefix, error = format!("{e:#}"), "removing deleted files failed; remove them by hand");
        }
    }
}

/// A store error about a model (or one version of it), with "not found" saying which.
fn version_error(model: &str, version: Option<i64>, e: crate::store::StoreError) -> ServiceError {
    match (e, version) {
        (crate::store::StoreError::NotFound("model version"), Some(version)) => {
            ServiceError::NotFound(format!("model {model} has no version {version}"))
        }
        (crate::store::StoreError::NotFound(_), _) => {
            ServiceError::NotFound(format!("no model named {model}"))
        }
        (other, _) => other.into(),
    }
}
