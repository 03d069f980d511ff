//! Cleaning up after what was interrupted: an upload whose process died before it was checked (its row
//! stuck `UPLOADED`, its bytes, partial or whole, in the object store) and a job folder whose job's
//! process died without removing it; resumable uploads past their expiry (service/uploads.rs). Run at start and then every [`SWEEP_EVERY`].

use std::time::Duration;

use super::{Service, ServiceResult};
use crate::domain::{DatasetSummary, RowError, is_plausible_id, now_ms};
use crate::objects::keys;

/// An upload still unchecked after this long was interrupted.
pub const STALE_UPLOAD: Duration = Duration::from_secs(3600);
/// How often [`Service::sweep_debris`] runs in a serving process.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// What a sweep cleaned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub uploads: usize,
    /// Resumable uploads past their expiry, their bytes removed.
    pub expired_uploads: usize,
    pub job_folders: usize,
}

impl Service {
    /// Marks interrupted uploads `INVALID` (saying so) and removes their bytes, and removes the folders
    /// of jobs that are not running.
    #[tracing::instrument(skip_all)]
    pub async fn sweep_debris(&self) -> ServiceResult<Swept> {
        let mut swept = Swept::default();
        let before = now_ms() - STALE_UPLOAD.as_millis() as i64;
        for dataset in self.store.unfinished_uploads(before).await? {
            if let Ok(folder) = keys::dataset_folder(&dataset.id)
                && let Err(e) = self.objects.delete_prefix(&folder).await
            {
                tracing::warn!(error = format!("{e:#}"), dataset = %dataset.id, "removing an interrupted upload");
                continue;
            }
            let summary = DatasetSummary {
                errors: vec![RowError {
                    line: None,
                    message:
                        "the upload was interrupted before the file was checked; upload it again"
                            .into(),
                }],
                error_count: 1,
                ..Default::default()
            };
            self.store
                .finish_dataset_validation(&dataset.id, &dataset.fields, &dataset.rules, &summary)
                .await?;
            swept.uploads += 1;
        }
        swept.expired_uploads = self.sweep_uploads().await?;
        let jobs = self.settings.work_dir.join("jobs");
        let mut found = Vec::new();
        if let Ok(mut entries) = tokio::fs::read_dir(&jobs).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_plausible_id(&name) {
                    found.push(name);
                }
            }
        }
        let running = self.store.running_among(&found).await?;
        for id in found.iter().filter(|id| !running.contains(id)) {
            if tokio::fs::remove_dir_all(jobs.join(id)).await.is_ok() {
                swept.job_folders += 1;
            }
        }
        if swept != Swept::default() {
            tracing::info!(?swept, "cleaned up what interrupted uploads and jobs left");
        }
        Ok(swept)
    }
}
