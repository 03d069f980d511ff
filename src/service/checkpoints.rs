//! A job's checkpoints in the object store: storing one a run wrote (files first, manifest last, then its
//! row; older ones removed only after that), finding the newest intact one to resume from, and
//! removing them all for a retry from scratch.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Service, ServiceResult};
use crate::domain::{CheckpointRecord, ObjectKey, now_ms};
use crate::objects::keys;
use crate::train::Checkpoint;
use crate::train::checkpoint::MANIFEST;

impl Service {
    /// Stores a checkpoint a run of `job_id` wrote locally: its files, then its manifest, then its row
    /// (only while `worker` holds the lease); then deletes the job's checkpoints beyond the newest
    /// `keep` (row first, files after). Returns `false` when the lease is gone (what was uploaded is
    /// removed again).
    #[tracing::instrument(skip_all, fields(job_id = %job_id, worker = %worker))]
    pub async fn store_checkpoint(
        &self,
        job_id: &str,
        worker: &str,
        checkpoint: &Checkpoint,
        keep: usize,
    ) -> Result<bool> {
        let m = &checkpoint.manifest;
        let prefix = keys::checkpoint(job_id, m.step)?;
        for name in m.file_names() {
            self.objects
                .put_file(&prefix.join(&name)?, &checkpoint.dir.join(&name))
                .await
                .with_context(|| format!("storing {name} of the checkpoint at step {}", m.step))?;
        }
        let record = CheckpointRecord {
            job_id: job_id.to_string(),
            step: m.step,
            epoch: m.epochs_done,
            size_bytes: m.size_bytes(),
            object_prefix: prefix.as_str().to_string(),
            created_at: now_ms(),
        };
        if !self.store.insert_checkpoint(worker, &record).await? {
            self.objects.delete_prefix(&prefix).await?;
            return Ok(false);
        }
        let stored = self.store.checkpoints_of(&[job_id.to_string()]).await?;
        let old = stored.len().saturating_sub(keep.max(1));
        for stale in &stored[..old] {
            self.store.delete_checkpoint(job_id, stale.step).await?;
            self.objects
                .delete_prefix(&ObjectKey::parse(&stale.object_prefix)?)
                .await?;
        }
        Ok(true)
    }

    /// The checkpoints of many jobs (`Job.checkpoints`), by job, oldest first; one round trip.
    #[tracing::instrument(skip_all)]
    pub async fn checkpoints_of(&self, job_ids: &[String]) -> ServiceResult<Vec<CheckpointRecord>> {
        Ok(self.store.checkpoints_of(job_ids).await?)
    }

    /// Downloads the newest intact checkpoint of a job into `dir` and returns it with its row. A
    /// checkpoint whose files are missing or do not match its manifest is skipped (logged) for the
    /// one before it; `None` when there is none.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn fetch_checkpoint(
        &self,
        job_id: &str,
        dir: &Path,
    ) -> Result<Option<(CheckpointRecord, Checkpoint)>> {
        let stored = self.store.checkpoints_of(&[job_id.to_string()]).await?;
        for record in stored.into_iter().rev() {
            let target = dir.join(Checkpoint::folder_name(record.step));
            match self.download_checkpoint(&record, &target).await {
                Ok(checkpoint) => return Ok(Some((record, checkpoint))),
                Err(e) => tracing::warn!(
                    job_id,
                    step = record.step,
                    error = format!("{e:#}"),
                    "a stored checkpoint cannot be used; trying the one before it"
                ),
            }
        }
        Ok(None)
    }

    async fn download_checkpoint(
        &self,
        record: &CheckpointRecord,
        target: &Path,
    ) -> Result<Checkpoint> {
        let prefix = ObjectKey::parse(&record.object_prefix)?;
        tokio::fs::create_dir_all(target)
            .await
            .with_context(|| format!("creating {}", target.display()))?;
        let bytes = self.objects.get_bytes(&prefix.join(MANIFEST)?).await?;
        let manifest: crate::train::CheckpointManifest =
            serde_json::from_slice(&bytes).context("reading the checkpoint's manifest")?;
        for file in &manifest.files {
            self.objects
                .get_to_file(&prefix.join(&file.name)?, &target.join(&file.name))
                .await?;
        }
        tokio::fs::write(target.join(MANIFEST), &bytes).await?;
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || Checkpoint::read(&target)).await?
    }

    /// Removes every checkpoint of a job (rows, then files).
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn drop_checkpoints(&self, job_id: &str) -> Result<()> {
        for stale in self.store.checkpoints_of(&[job_id.to_string()]).await? {
            self.store.delete_checkpoint(job_id, stale.step).await?;
        }
        self.objects
            .delete_prefix(&keys::checkpoints(job_id)?)
            .await
    }
}
