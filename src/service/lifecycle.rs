//! A dataset's life after its upload: FRESH until a job trains on it, then USED; archived (no new job
//! may train on it) and restored; deleted when nothing refers to it; cleaned up in bulk; downloaded as
//! uploaded.

use super::downloads::Download;
use super::{Service, ServiceError, ServiceResult};
use crate::auth::{Principal, Role};
use crate::domain::{
    DatasetLifecycle, DatasetRecord, DatasetStatus, FieldError, abbreviate, is_plausible_id, now_ms,
};
use crate::objects::keys;

/// The most datasets one `cleanupDatasets` call removes (call it again for more).
pub const MAX_CLEANUP: i64 = 500;

/// What `cleanupDatasets` did (or, on a dry run, would do).
#[derive(Debug, Default)]
pub struct Cleanup {
    pub dry_run: bool,
    /// Removed (or to be removed).
    pub removed: Vec<DatasetRecord>,
    /// Kept, each with why: a job or a model version still refers to it.
    pub kept: Vec<(DatasetRecord, String)>,
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no dataset with id {}", abbreviate(id, 100)))
}

fn dataset_error(id: &str, e: crate::store::StoreError) -> ServiceError {
    match e {
        crate::store::StoreError::NotFound(_) => not_found(id),
        other => other.into(),
    }
}

impl Service {
    /// Puts a dataset away: it stays (with its jobs and lineage), but no new job may train on it.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn archive_dataset(&self, id: &str) -> ServiceResult<DatasetRecord> {
        self.set_archived(id, Some(now_ms())).await
    }

    /// Takes a dataset out of the archive.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn restore_dataset(&self, id: &str) -> ServiceResult<DatasetRecord> {
        self.set_archived(id, None).await
    }

    async fn set_archived(&self, id: &str, at: Option<i64>) -> ServiceResult<DatasetRecord> {
        if !is_plausible_id(id) {
            return Err(not_found(id));
        }
        let Some(current) = self.store.get_dataset(id).await? else {
            return Err(not_found(id));
        };
        if current.status == DatasetStatus::Uploaded {
            return Err(ServiceError::Conflict(format!(
                "dataset {id} is still being checked"
            )));
        }
        // Archiving an archived dataset keeps its first archive time.
        let at = at.map(|at| current.archived_at.unwrap_or(at));
        self.store
            .set_dataset_archived(id, at)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Deletes a dataset and its file. `CONFLICT` while a model version's lineage or a job refers to
    /// it, naming them.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn delete_dataset(&self, id: &str) -> ServiceResult<DatasetRecord> {
        if !is_plausible_id(id) {
            return Err(not_found(id));
        }
        let dataset = self
            .store
            .delete_unreferenced_dataset(id)
            .await
            .map_err(|e| dataset_error(id, e))?;
        self.remove_objects(keys::dataset_folder(&dataset.id)).await;
        tracing::info!(dataset_id = %dataset.id, "dataset deleted");
        Ok(dataset)
    }

    /// Deletes the datasets created more than `older_than_days` ago (in `lifecycle`, when given) that
    /// nothing refers to, oldest first, at most [`MAX_CLEANUP`]; on a dry run, only says which. Admins
    /// only.
    #[tracing::instrument(skip_all)]
    pub async fn cleanup_datasets(
        &self,
        caller: &Principal,
        older_than_days: i64,
        lifecycle: Option<DatasetLifecycle>,
        dry_run: bool,
    ) -> ServiceResult<Cleanup> {
        if caller.role != Role::Admin {
            return Err(ServiceError::Forbidden(
                "only an admin token can clean up datasets".into(),
            ));
        }
        if !(0..=36_500).contains(&older_than_days) {
            return Err(FieldError::new("olderThanDays", "must be 0–36500").into());
        }
        let before = now_ms() - older_than_days * 86_400_000;
        let candidates = self
            .store
            .datasets_created_before(before, lifecycle, MAX_CLEANUP)
            .await?;
        let mut cleanup = Cleanup {
            dry_run,
            ..Default::default()
        };
        for dataset in candidates {
            let outcome = if dry_run {
                self.store.dataset_references(&dataset.id).await?
            } else {
                match self.delete_dataset(&dataset.id).await {
                    Ok(_) => None,
                    Err(ServiceError::Conflict(why)) => Some(why),
                    Err(ServiceError::NotFound(_)) => continue,
                    Err(other) => return Err(other),
                }
            };
            match outcome {
                None => cleanup.removed.push(dataset),
                Some(why) => cleanup.kept.push((dataset, why)),
            }
        }
        Ok(cleanup)
    }

    /// A dataset's file as it was uploaded, streamed.
    #[tracing::instrument(skip_all, fields(dataset_id = %id))]
    pub async fn download_dataset(&self, id: &str) -> ServiceResult<Download> {
        if !is_plausible_id(id) {
            return Err(not_found(id));
        }
        let dataset = self
            .store
            .get_dataset(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if dataset.status == DatasetStatus::Uploaded {
            return Err(ServiceError::Conflict(format!(
                "dataset {id} is still being checked"
            )));
        }
        let body = self
            .objects
            .get_stream(&dataset.object_key)
            .await
            .map_err(|e| {
                ServiceError::Lost(format!(
                    "the file of dataset {id} is gone from the object store: {e:#}"
                ))
            })?;
        let body = futures::StreamExt::map(body, |chunk| chunk.map_err(std::io::Error::other));
        let safe: String = dataset
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let extension = format!(".{}", dataset.format.extension());
        let file_name = if safe.to_ascii_lowercase().ends_with(&extension) {
            safe
        } else {
            format!("{safe}{extension}")
        };
        Ok(Download {
            file_name,
            content_type: match dataset.format {
                crate::domain::DatasetFormat::Jsonl => "application/jsonl",
                crate::domain::DatasetFormat::Csv => "text/csv; charset=utf-8",
                crate::domain::DatasetFormat::Parquet => "application/vnd.apache.parquet",
            },
            size: Some(dataset.size_bytes.max(0) as u64),
            body: Box::pin(body),
        })
    }
}
