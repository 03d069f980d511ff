//! The workers' handle on the use cases ([`WorkQueue`]): what running a claimed job needs and nothing
//! else — claim, keep the lease, read the job's inputs, record progress and checkpoints, register the
//! model, end the attempt. A worker (`runner/`) holds this rather than the whole [`Service`], so it
//! cannot submit, promote or delete, and the rules of ending an attempt stay here (in `queue.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::logs::JobLog;
use super::{Lease, Service, ServiceResult, Settings, TrainingRecord};
use crate::domain::{
    BaseModelRef, CheckpointRecord, JobRecord, JobStatus, LogLevel, ModelManifest,
    ModelVersionRecord, TrainData,
};
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::train::Checkpoint;

/// The use cases a worker calls. Cheap to clone.
#[derive(Clone)]
pub struct WorkQueue(Service);

impl Service {
    /// The narrow handle workers hold, beside this `Service`.
    pub fn work_queue(&self) -> WorkQueue {
        WorkQueue(self.clone())
    }
}

impl From<Service> for WorkQueue {
    /// The narrow handle in place of the whole `Service`: a job's own process keeps no other handle,
    /// so its event hub closes (and its last events are written) when the run ends.
    fn from(service: Service) -> Self {
        Self(service)
    }
}

/// Each method is the [`Service`] use case of the same name.
impl WorkQueue {
    pub fn settings(&self) -> &Settings {
        self.0.settings()
    }

    pub fn events(&self) -> &EventHub {
        self.0.events()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.0.metrics()
    }

    pub async fn worker_started(&self, worker: &str, gpus: u32) -> ServiceResult<()> {
        self.0.worker_started(worker, gpus).await
    }

    pub async fn worker_heartbeat(&self, worker: &str, gpus: u32) -> ServiceResult<()> {
        self.0.worker_heartbeat(worker, gpus).await
    }

    pub async fn worker_stopped(&self, worker: &str) -> ServiceResult<()> {
        self.0.worker_stopped(worker).await
    }

    pub async fn claim_next_job(
        &self,
        worker: &str,
        lease_ms: i64,
        gpus: u32,
    ) -> ServiceResult<Option<JobRecord>> {
        self.0.claim_next_job(worker, lease_ms, gpus).await
    }

    pub async fn job(&self, id: &str) -> ServiceResult<Option<JobRecord>> {
        self.0.job(id).await
    }

    pub async fn heartbeat(
        &self,
        job_id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> ServiceResult<Lease> {
        self.0.heartbeat(job_id, worker, lease_ms).await
    }

    pub async fn mark_stalled(&self, job_id: &str, worker: &str, since: i64) -> ServiceResult<()> {
        self.0.mark_stalled(job_id, worker, since).await
    }

    pub fn job_log(&self, job_id: &str) -> JobLog {
        self.0.job_log(job_id)
    }

    pub async fn log_now(&self, job_id: &str, level: LogLevel, message: impl AsRef<str>) {
        self.0.log_now(job_id, level, message).await
    }

    pub async fn training_examples(
        &self,
        dataset_id: &str,
        fields: Option<&crate::domain::FieldNames>,
        dir: &Path,
    ) -> anyhow::Result<TrainData> {
        self.0.training_examples(dataset_id, fields, dir).await
    }

    pub async fn base_model_dir(
        &self,
        base: &BaseModelRef,
        job_dir: &Path,
        progress: crate::hub::Progress<'_>,
    ) -> anyhow::Result<PathBuf> {
        self.0.base_model_dir(base, job_dir, progress).await
    }

    pub async fn fetch_checkpoint(
        &self,
        job_id: &str,
        dir: &Path,
    ) -> anyhow::Result<Option<(CheckpointRecord, Checkpoint)>> {
        self.0.fetch_checkpoint(job_id, dir).await
    }

    pub async fn rewind_job(
        &self,
        job: &JobRecord,
        worker: &str,
        checkpoint: Option<&CheckpointRecord>,
    ) -> ServiceResult<bool> {
        self.0.rewind_job(job, worker, checkpoint).await
    }

    pub async fn record_device(
        &self,
        job_id: &str,
        worker: &str,
        device: &str,
    ) -> ServiceResult<bool> {
        self.0.record_device(job_id, worker, device).await
    }

    pub async fn record_training(
        &self,
        job_id: &str,
        worker: &str,
        record: TrainingRecord<'_>,
    ) -> ServiceResult<Lease> {
        self.0.record_training(job_id, worker, record).await
    }

    pub async fn store_checkpoint(
        &self,
        job_id: &str,
        worker: &str,
        checkpoint: &Checkpoint,
        keep: usize,
    ) -> anyhow::Result<bool> {
        self.0
            .store_checkpoint(job_id, worker, checkpoint, keep)
            .await
    }

    pub async fn register_model_version(
        &self,
        job: &JobRecord,
        worker: &str,
        dir: &Path,
        files: &[String],
        manifest: &ModelManifest,
    ) -> anyhow::Result<ModelVersionRecord> {
        self.0
            .register_model_version(job, worker, dir, files, manifest)
            .await
    }

    pub async fn drop_checkpoints(&self, job_id: &str) -> anyhow::Result<()> {
        self.0.drop_checkpoints(job_id).await
    }

    pub async fn release_job(
        &self,
        job_id: &str,
        worker: &str,
        to: JobStatus,
    ) -> ServiceResult<Option<JobRecord>> {
        self.0.release_job(job_id, worker, to).await
    }

    pub async fn fail_job(
        &self,
        job_id: &str,
        worker: &str,
        error: &anyhow::Error,
        fallback: &str,
    ) -> ServiceResult<Option<JobRecord>> {
        self.0.fail_job(job_id, worker, error, fallback).await
    }

    pub async fn end_failed_attempt(
        &self,
        job: &JobRecord,
        worker: &str,
        error: &anyhow::Error,
        fallback: &str,
    ) -> ServiceResult<Option<JobRecord>> {
        self.0
            .end_failed_attempt(job, worker, error, fallback)
            .await
    }
}
