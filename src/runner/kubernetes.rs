//! The Kubernetes runner (`KILN_RUNNER=kubernetes`): instead of a child process, the worker creates one
//! `batch/v1` Job per claimed attempt, whose pod runs `kiln run-job <id> --lease-owner <worker>` (the
//! standalone form: it keeps the lease, hears cancels and pauses through Redis, records its progress
//! and writes its own end, as a child process does).
//!
//! The worker keeps the lease too until the pod ends (a pod may wait long to be scheduled or to pull
//! its image), watches the Job and its pod every [`KubeSettings::poll`], and writes the job's end when
//! the pod could not: it never started (its image could not be pulled, its Secret is missing), it was
//! killed at its memory limit (`OOMKilled`), it ran past its deadline, or it vanished (evicted, its node
//! lost, deleted by someone: the job goes back to the queue). A worker that shuts down leaves a running
//! pod to finish on its own; a pod that has not started yet is deleted and the job queued again.
//!
//! Secret settings (`KILN_DATABASE_URL`, `KILN_REDIS_URL`, `KILN_S3_SECRET_ACCESS_KEY`,
//! `KILN_HF_TOKEN`) reach the pod from the Secret `KILN_K8S_SECRET`, never in the Job itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SecretKeySelector, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::control::{self, RunResult, StopFlag, StopReason};
use super::{Worker, WorkerSettings};
use crate::config::RunnerConfig;
use crate::domain::{JobRecord, JobStatus, LogLevel, Resources};
use crate::service::ClusterUnavailable;

/// The settings job pods read from the Secret rather than from the Job.
pub const SECRET_SETTINGS: [&str; 4] = [
    "KILN_DATABASE_URL",
    "KILN_REDIS_URL",
    "KILN_S3_SECRET_ACCESS_KEY",
    "KILN_HF_TOKEN",
];

/// Where a job pod keeps its dataset copy and the model being written (an `emptyDir`).
pub const POD_WORK_DIR: &str = "/var/lib/kiln/work";

/// The label every object kiln creates carries, with the job's id and attempt.
const JOB_LABEL: &str = "kiln.dev/job-id";
const ATTEMPT_LABEL: &str = "kiln.dev/attempt";

/// How job pods are made.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub namespace: String,
    pub image: String,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub secret: String,
    pub ttl_seconds: u32,
    /// How often the Job and its pod are looked at.
    pub poll: Duration,
}

impl KubeSettings {
    /// From the settings; errors name the setting.
    pub fn from_config(config: &RunnerConfig) -> Result<Self> {
        let image = config
            .k8s_image
            .clone()
            .filter(|i| !i.trim().is_empty())
            .context(
                "KILN_K8S_IMAGE: the image job pods run must be set with KILN_RUNNER=kubernetes",
            )?;
        Ok(Self {
            namespace: config.k8s_namespace.clone().unwrap_or_else(own_namespace),
            image,
            node_selector: parse_node_selector(&config.k8s_node_selector)?,
            tolerations: parse_tolerations(&config.k8s_tolerations)?,
            secret: config.k8s_secret.clone(),
            ttl_seconds: config.k8s_ttl_seconds,
            poll: Duration::from_secs(2),
        })
    }
}

/// The namespace of the pod this process runs in, or `default`.
fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// `key=value,key=value` (`KILN_K8S_NODE_SELECTOR`).
pub fn parse_node_selector(raw: &str) -> Result<BTreeMap<String, String>> {
    let mut selector = BTreeMap::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            bail!("KILN_K8S_NODE_SELECTOR: {part:?} is not key=value");
        };
        if key.trim().is_empty() {
            bail!("KILN_K8S_NODE_SELECTOR: {part:?} has no key");
        }
        selector.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(selector)
}

/// `key=value:Effect`, `key:Effect`, `key=value` or `key` (`KILN_K8S_TOLERATIONS`), comma-separated.
pub fn parse_tolerations(raw: &str) -> Result<Vec<Toleration>> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    let mut tolerations = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (taint, effect) = match part.rsplit_once(':') {
            Some((taint, effect)) => {
                if !EFFECTS.contains(&effect) {
                    bail!(
                        "KILN_K8S_TOLERATIONS: {part:?} has effect {effect:?}; it must be one of {}",
                        EFFECTS.join(", ")
                    );
                }
                (taint, Some(effect.to_string()))
            }
            None => (part, None),
        };
        let (key, value) = match taint.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (taint, None),
        };
        if key.is_empty() {
            bail!("KILN_K8S_TOLERATIONS: {part:?} has no key");
        }
        tolerations.push(Toleration {
            key: Some(key.to_string()),
            operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
            value,
            effect,
            toleration_seconds: None,
        });
    }
    Ok(tolerations)
}

/// A connection to the cluster and how job pods are made.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    pub settings: Arc<KubeSettings>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Kube {
    /// The cluster this process runs in, or the one `KUBECONFIG` (or `~/.kube/config`) names.
    pub async fn connect(settings: KubeSettings) -> Result<Self> {
        let config = kube::Config::infer().await.context(
            "KILN_RUNNER=kubernetes: no cluster found (not in a pod, and no kubeconfig)",
        )?;
        Self::with_config(config, settings)
    }

    /// The API server at `url`, with no credentials (a local proxy such as `kubectl proxy`).
    pub fn at(url: &str, settings: KubeSettings) -> Result<Self> {
        let uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        Self::with_config(kube::Config::new(uri), settings)
    }

    fn with_config(mut config: kube::Config, settings: KubeSettings) -> Result<Self> {
        config.default_namespace = settings.namespace.clone();
        let client = kube::Client::try_from(config).context("connecting to the cluster")?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

/// The name of the Kubernetes Job of one attempt of a kiln job.
pub fn job_name(job: &JobRecord) -> String {
    format!("kiln-{}-a{}", job.id, job.attempts)
}

/// The Kubernetes Job that runs one attempt of `job`, claimed by `worker`.
pub fn manifest(
    job: &JobRecord,
    worker: &str,
    settings: &KubeSettings,
    worker_settings: &WorkerSettings,
) -> Job {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kiln".to_string()),
        ("app.kubernetes.io/component".to_string(), "job".to_string()),
        (JOB_LABEL.to_string(), job.id.clone()),
        (ATTEMPT_LABEL.to_string(), job.attempts.to_string()),
    ]);
    let mut env: Vec<EnvVar> = Vec::new();
    for (name, value) in &worker_settings.env {
        if SECRET_SETTINGS.contains(name) {
            env.push(EnvVar {
                name: name.to_string(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: settings.secret.clone(),
                        key: name.to_string(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                }),
            });
            continue;
        }
        let value = match *name {
            "KILN_WORK_DIR" => Some(POD_WORK_DIR.to_string()),
            _ => value.clone(),
        };
        if let Some(value) = value {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value),
                value_from: None,
            });
        }
    }
    if let Some(threads) = job.resources.threads() {
        env.push(EnvVar {
            name: "RAYON_NUM_THREADS".into(),
            value: Some(threads.to_string()),
            value_from: None,
        });
    }
    let container = Container {
        name: "kiln".into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["kiln".into()]),
        args: Some(vec![
            "run-job".into(),
            job.id.clone(),
            "--lease-owner".into(),
            worker.to_string(),
        ]),
        env: Some(env),
        resources: Some(requirements(&job.resources)),
        volume_mounts: Some(vec![VolumeMount {
            name: "work".into(),
            mount_path: POD_WORK_DIR.into(),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A backstop behind the job's own time limit, which its process keeps (with a checkpoint).
    let deadline = job.max_duration_ms.map(|limit| {
        let left = (limit - job.run_ms).max(0) / 1000;
        left + 2 * worker_settings.stop_grace.as_secs() as i64 + 300
    });
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(job)),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([
                ("kiln.dev/job-name".to_string(), job.name.clone()),
                ("kiln.dev/worker".to_string(), worker.to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // kiln retries a job itself, from its checkpoint.
            backoff_limit: Some(0),
            active_deadline_seconds: deadline,
            ttl_seconds_after_finished: Some(settings.ttl_seconds as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    tolerations: (!settings.tolerations.is_empty())
                        .then(|| settings.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(10001),
                        fs_group: Some(10001),
                        ..Default::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "work".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A job's resources as a container's requests and limits: CPUs requested (a limit would throttle
/// the matrix products), memory requested and limited, GPUs as `nvidia.com/gpu` limits.
fn requirements(resources: &Resources) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = resources.cpu_quantity() {
        requests.insert("cpu".to_string(), Quantity(cpu));
    }
    if let Some(memory) = resources.memory_quantity() {
        requests.insert("memory".to_string(), Quantity(memory.clone()));
        limits.insert("memory".to_string(), Quantity(memory));
    }
    if resources.gpus > 0 {
        limits.insert(
            "nvidia.com/gpu".to_string(),
            Quantity(resources.gpus.to_string()),
        );
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        claims: None,
    }
}

/// What the worker makes of its pod at one look.
#[derive(Debug, Clone, PartialEq)]
enum PodState {
    /// Not running yet; a reason to tell the job's log when there is one (unschedulable, pulling).
    Waiting(Option<String>),
    /// Its container is running.
    Running,
    /// Its container ended with this exit code (and the kubelet's reason, `OOMKilled` say).
    Exited { code: i32, reason: Option<String> },
    /// It cannot run, in words; nothing will change that by waiting.
    Failed(String),
    /// It is gone, or was stopped from outside (evicted, preempted, its node lost): in words.
    Lost(String),
}

/// Reads the pod of an attempt from its Job and pod. `job` is `None` when the Job no longer exists.
fn pod_state(job: Option<&Job>, pod: Option<&Pod>, image: &str) -> PodState {
    let Some(job) = job else {
        return PodState::Lost(
            "its Kubernetes Job was deleted from outside kiln before the job ended".into(),
        );
    };
    let failed = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    if let Some(condition) = failed
        && condition.reason.as_deref() == Some("DeadlineExceeded")
    {
        let seconds = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or_default();
        return PodState::Failed(format!(
            "Kubernetes stopped the job's pod at its deadline (activeDeadlineSeconds {seconds}): \
             the job ran past its time limit (maxDurationMinutes)"
        ));
    }
    let Some(pod) = pod else {
        return match failed {
            Some(condition) => PodState::Lost(format!(
                "its Kubernetes Job failed with no pod left ({}: {})",
                condition.reason.as_deref().unwrap_or("no reason"),
                condition.message.as_deref().unwrap_or("no message")
            )),
            None => PodState::Waiting(None),
        };
    };
    let Some(status) = &pod.status else {
        return PodState::Waiting(None);
    };
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == "kiln"));
    if let Some(state) = container.and_then(|c| c.state.as_ref()) {
        if let Some(done) = &state.terminated {
            return PodState::Exited {
                code: done.exit_code,
                reason: done.reason.clone(),
            };
        }
        if state.running.is_some() {
            return PodState::Running;
        }
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.as_deref().unwrap_or_default();
            let detail = waiting.message.as_deref().unwrap_or("no detail");
            match reason {
                "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                    return PodState::Failed(format!(
                        "the job's pod could not start: its image {image} could not be pulled \
                         ({reason}: {detail}); check KILN_K8S_IMAGE and the cluster's access to \
                         its registry"
                    ));
                }
                "CreateContainerConfigError" | "CreateContainerError" => {
                    return PodState::Failed(format!(
                        "the job's pod could not start: its container could not be created \
                         ({reason}: {detail}); check the Secret KILN_K8S_SECRET names"
                    ));
                }
                "ErrImagePull" | "ContainerCreating" | "PodInitializing" | "" => {
                    return PodState::Waiting(None);
                }
                other => return PodState::Waiting(Some(format!("{other}: {detail}"))),
            }
        }
    }
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" {
        let reason = status.reason.as_deref().unwrap_or("no reason");
        let message = status.message.as_deref().unwrap_or("no message");
        return PodState::Lost(format!(
            "its pod was stopped by Kubernetes ({reason}: {message})"
        ));
    }
    let unschedulable = status.conditions.as_ref().and_then(|c| {
        c.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
    });
    PodState::Waiting(unschedulable.map(|c| {
        format!(
            "no node can take its pod yet: {}",
            c.message.as_deref().unwrap_or("unschedulable")
        )
    }))
}

/// Runs a claimed job as a Kubernetes Job and returns the status it ended in (`RUNNING` when the
/// worker left a running pod to finish on its own).
#[tracing::instrument(skip_all, fields(job_id = %job.id, worker = %worker.id))]
pub(super) async fn run(worker: &Worker, kube: &Kube, job: JobRecord) -> JobStatus {
    let service = &worker.service;
    tracing::info!(
        attempt = job.attempts,
        "claimed; creating the job's Kubernetes Job"
    );
    let flag = super::process::stop_flag_for(&job);
    // The worker's shutdown does not stop a running pod: the supervisor hears only the job's stops.
    let supervisor = worker.supervise(&job, &flag, tokio_util::sync::CancellationToken::new());
    let result = drive(worker, kube, &job, &flag).await;
    let status = match result {
        Some(result) => control::conclude(service, &job, &worker.id, result, &flag).await,
        None => JobStatus::Running,
    };
    supervisor.abort();
    tracing::info!(status = status.as_str(), "the job's run ended");
    status
}

/// Creates the Job and follows it to its end: the result to write, or `None` when the worker leaves a
/// running pod behind at shutdown.
async fn drive(
    worker: &Worker,
    kube: &Kube,
    job: &JobRecord,
    flag: &StopFlag,
) -> Option<RunResult> {
    let service = &worker.service;
    let name = job_name(job);
    let mut manifest = manifest(job, &worker.id, &kube.settings, &worker.settings);
    // The pod's process continues the worker's trace of this run.
    if let Some(parent) = crate::telemetry::traceparent()
        && let Some(container) = manifest
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|s| s.containers.first_mut())
    {
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "TRACEPARENT".into(),
            value: Some(parent),
            value_from: None,
        });
    }
    match kube.jobs().create(&PostParams::default(), &manifest).await {
        Ok(_) => {}
        // Created before, by this attempt: follow it.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(e) => return Some(refused(e)),
    }
    service
        .log_now(
            &job.id,
            LogLevel::Info,
            format!(
                "Kubernetes Job {name} created in namespace {}",
                kube.settings.namespace
            ),
        )
        .await;
    let selector = format!("{JOB_LABEL}={},{ATTEMPT_LABEL}={}", job.id, job.attempts);
    let mut told: Option<String> = None;
    let mut started = false;
    let mut stop_until: Option<tokio::time::Instant> = None;
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        let looked = async {
            let found = kube.jobs().get_opt(&name).await?;
            let pods = kube
                .pods()
                .list(&ListParams::default().labels(&selector))
                .await?;
            let pod = pods
                .items
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone());
            Ok::<_, kube::Error>(pod_state(
                found.as_ref(),
                pod.as_ref(),
                &kube.settings.image,
            ))
        }
        .await;
        let state = match looked {
            Ok(state) => {
                unreachable_since = None;
                state
            }
            Err(e) => {
                // The API server may come back; the pod goes on meanwhile.
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                tracing::warn!(error = %e, "reading the job's Kubernetes Job failed");
                if since.elapsed() > control::OUTAGE_PATIENCE {
                    return Some(RunResult::Failed(
                        anyhow::Error::new(ClusterUnavailable(e.to_string())),
                        None,
                    ));
                }
                PodState::Waiting(None)
            }
        };
        match state {
            PodState::Running => started = true,
            PodState::Waiting(Some(reason)) if told.as_ref() != Some(&reason) => {
                service
                    .log_now(
                        &job.id,
                        LogLevel::Warn,
                        format!("waiting for the cluster: {reason}"),
                    )
                    .await;
                told = Some(reason);
            }
            PodState::Waiting(_) => {}
            PodState::Exited { code, reason } => {
                return Some(exited(worker, job, code, reason.as_deref()).await);
            }
            PodState::Failed(message) => {
                delete(kube, &name).await;
                return Some(RunResult::Failed(
                    anyhow::anyhow!("{message}"),
                    Some(message),
                ));
            }
            PodState::Lost(message) => {
                delete(kube, &name).await;
                if flag.reason() != StopReason::None {
                    return Some(RunResult::Stopped);
                }
                return Some(RunResult::Failed(
                    anyhow::Error::new(ClusterUnavailable(message.clone())),
                    Some(message),
                ));
            }
        }
        // A stop: a running pod stops itself (with a checkpoint where one is kept) and writes its
        // end; one that has not started is deleted. Either way, after the grace period it goes.
        if flag.reason() != StopReason::None {
            let until = *stop_until.get_or_insert_with(|| {
                tokio::time::Instant::now()
                    + if started {
                        worker.settings.stop_grace
                    } else {
                        Duration::ZERO
                    }
            });
            if tokio::time::Instant::now() >= until {
                delete(kube, &name).await;
                return Some(RunResult::Stopped);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(kube.settings.poll) => {}
            _ = flag.stopped(), if stop_until.is_none() => {}
            _ = worker.shutdown.cancelled() => {
                if started {
                    tracing::info!("shutting down: the job's running pod finishes on its own");
                    return None;
                }
                delete(kube, &name).await;
                flag.stop(StopReason::Shutdown);
                return Some(RunResult::Stopped);
            }
        }
    }
}

/// The result of a pod whose container ended with `code`: `kiln run-job`'s own ends were written by
/// it; a container killed at its memory limit or crashed was not.
async fn exited(worker: &Worker, job: &JobRecord, code: i32, reason: Option<&str>) -> RunResult {
    use super::process::JobExit;
    let own = [
        JobExit::Completed,
        JobExit::Stopped,
        JobExit::Failed,
        JobExit::Requeued,
    ];
    if own.iter().any(|e| *e as i32 == code) {
        // Its process wrote the job's end (or found its lease gone): read where it stands.
        let now = control::while_unavailable(|| worker.service.job(&job.id)).await;
        return match now {
            Ok(Some(now))
                if now.status == JobStatus::Running
                    && now.lease_owner.as_deref() == Some(worker.id.as_str()) =>
            {
                RunResult::Stopped
            }
            Ok(Some(now)) => RunResult::Ended(now.status),
            Ok(None) => RunResult::Ended(JobStatus::Failed),
            Err(e) => RunResult::Failed(e.into(), None),
        };
    }
    let batch = job.settings.hyperparameters.batch_size;
    let smaller = format!(
        "try batchSize ≤ {} or a shorter maxSeqLength",
        (batch / 2).max(1)
    );
    let error = anyhow::anyhow!("the job's container ended with exit code {code} ({reason:?})");
    let message = match reason {
        Some("OOMKilled") => format!(
            "the job ran out of memory: Kubernetes killed its container at its memory limit{} \
             (OOMKilled); raise resources.memoryGb, or {smaller}",
            job.resources
                .memory_gb
                .map(|gb| format!(" of {gb} GiB"))
                .unwrap_or_default()
        ),
        Some("Error") | None => format!(
            "the job's process crashed in its pod (exit code {code}); retry the job, and if it \
             fails again ask an operator to read the pod's log"
        ),
        Some(other) => {
            format!("the job's container ended with exit code {code} ({other}); retry the job")
        }
    };
    RunResult::Failed(error, Some(message))
}

/// A Job the cluster would not create: refused for what it is (not retried), or the cluster could
/// not be reached (retried).
fn refused(error: kube::Error) -> RunResult {
    match &error {
        kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429 => {
            let message = format!(
                "Kubernetes refused the job's Job ({} {}): {}",
                status.code, status.reason, status.message
            );
            RunResult::Failed(anyhow::anyhow!("{message}"), Some(message))
        }
        _ => RunResult::Failed(
            anyhow::Error::new(ClusterUnavailable(error.to_string()))
                .context("creating the job's Kubernetes Job"),
            Some(
                "the Kubernetes API could not be reached to start the job; it goes back to the queue"
                    .into(),
            ),
        ),
    }
}

/// Deletes an attempt's Job and its pod (errors are logged: the Job's TTL removes it anyway).
async fn delete(kube: &Kube, name: &str) {
    match kube.jobs().delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => tracing::warn!(error = %e, job = name, "deleting a Kubernetes Job failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_selectors_and_tolerations_are_read_as_kubectl_writes_them() {
        let selector = parse_node_selector("gpu=a100, zone = eu-1").unwrap();
        assert_eq!(selector["gpu"], "a100");
        assert_eq!(selector["zone"], "eu-1");
        assert!(parse_node_selector("").unwrap().is_empty());
        let e = parse_node_selector("gpu").unwrap_err().to_string();
        assert!(e.starts_with("KILN_K8S_NODE_SELECTOR"), "{e}");

        let t = parse_tolerations("nvidia.com/gpu=present:NoSchedule,dedicated:NoExecute,spot")
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(t[0].operator.as_deref(), Some("Equal"));
        assert_eq!(t[0].value.as_deref(), Some("present"));
        assert_eq!(t[0].effect.as_deref(), Some("NoSchedule"));
        assert_eq!(t[1].operator.as_deref(), Some("Exists"));
        assert_eq!(t[1].effect.as_deref(), Some("NoExecute"));
        assert_eq!(t[2].effect, None);
        let e = parse_tolerations("a=b:Sometimes").unwrap_err().to_string();
        assert!(e.contains("must be one of NoSchedule"), "{e}");
    }

    #[test]
    fn a_pods_state_says_why_it_cannot_run() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kiln-x-a1"},
            "spec": {"template": {}, "activeDeadlineSeconds": 900},
        }))
        .unwrap();
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
                .unwrap()
        };
        let waiting = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "kiln", "image": "kiln:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
        );
        match pod_state(Some(&job), Some(&waiting), "kiln:1") {
            PodState::Failed(m) => assert!(
                m.starts_with("the job's pod could not start: its image kiln:1 could not be pulled (ImagePullBackOff: not found)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let oom = pod(
            serde_json::json!({"phase": "Failed", "containerStatuses": [{
            "name": "kiln", "image": "kiln:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(
            pod_state(Some(&job), Some(&oom), "kiln:1"),
            PodState::Exited {
                code: 137,
                reason: Some("OOMKilled".into())
            }
        );
        let unschedulable = pod(serde_json::json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}));
        assert_eq!(
            pod_state(Some(&job), Some(&unschedulable), "kiln:1"),
            PodState::Waiting(Some(
                "no node can take its pod yet: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
                    .into()
            ))
        );
        let mut deadline = job.clone();
        deadline.status = serde_json::from_value(serde_json::json!({"conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}))
        .unwrap();
        match pod_state(Some(&deadline), None, "kiln:1") {
            PodState::Failed(m) => assert!(m.contains("activeDeadlineSeconds 900"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pod_state(None, None, "kiln:1"), PodState::Lost(_)));
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        match pod_state(Some(&job), Some(&evicted), "kiln:1") {
            PodState::Lost(m) => assert!(m.contains("Evicted: The node was low"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
