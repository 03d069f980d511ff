//! The Kubernetes runner against a cluster played by the test: an HTTP server that answers the
//! Kubernetes API calls the runner makes (creating, reading and deleting `batch/v1` Jobs, listing pods
//! by label), checks each one, and acts as the kubelet: it runs each Job's container command as a
//! local process, with the Job's environment (secret references resolved from its Secret) and a fresh
//! folder for its `emptyDir`, and reports the pod's state as a kubelet would — or, when the test says
//! so, an image that cannot be pulled, or a container killed at its memory limit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use kiln::domain::JobStatus;
use kiln::runner::kubernetes::{Kube, KubeSettings, parse_tolerations};
use kiln::runner::{Outcome, Runner, Worker, WorkerSettings};

use crate::helpers::{Db, Objects, Options, TestApp, separable_text_jsonl, spawn_with};

const NAMESPACE: &str = "kiln-test";
const IMAGE: &str = "registry.example.com/kiln:test";

/// What the played kubelet does with the next pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kubelet {
    /// Runs the container's command.
    Run,
    /// Reports that the image cannot be pulled.
    ImagePullBackOff,
}

struct PodRecord {
    object: Value,
    child: Option<std::process::Child>,
    /// What the kubelet says of an ended container: exit code and reason.
    ended: Option<(i32, String)>,
    _work: tempfile::TempDir,
}

#[derive(Default)]
struct ClusterState {
    jobs: BTreeMap<String, Value>,
    pods: BTreeMap<String, PodRecord>,
    /// Every request: method and path with query.
    requests: Vec<String>,
    /// Every Job body the runner posted.
    created: Vec<Value>,
    secret: BTreeMap<String, String>,
    kubelet: Option<Kubelet>,
}

#[derive(Clone)]
struct Cluster {
    url: String,
    state: Arc<Mutex<ClusterState>>,
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

impl Cluster {
    async fn start(secret: BTreeMap<String, String>) -> Self {
        let state = Arc::new(Mutex::new(ClusterState {
            secret,
            kubelet: Some(Kubelet::Run),
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs",
                axum::routing::post(create_job),
            )
            .route(
                "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                get(read_job).delete(delete_job),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            // Anything else the runner asks is a mistake the tests see in `requests`.
            .fallback(|method: Method, uri: Uri| async move {
                status(
                    501,
                    "NotImplemented",
                    format!("the test cluster does not expect {method} {uri}"),
                )
            })
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                |State(state): State<Arc<Mutex<ClusterState>>>,
                 request: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    let line = format!("{} {}", request.method(), request.uri());
                    state.lock().unwrap().requests.push(line);
                    next.run(request).await
                },
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    fn set_kubelet(&self, kubelet: Kubelet) {
        self.state.lock().unwrap().kubelet = Some(kubelet);
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn created(&self) -> Vec<Value> {
        self.state.lock().unwrap().created.clone()
    }

    fn job_names(&self) -> Vec<String> {
        self.state.lock().unwrap().jobs.keys().cloned().collect()
    }

    /// Kills the running container of `job`'s pod as the kernel does at a cgroup's memory limit,
    /// and reports it as the kubelet does (`OOMKilled`, exit code 137).
    fn oom_kill(&self, job: &str) {
        let mut state = self.state.lock().unwrap();
        let pod = state
            .pods
            .values_mut()
            .find(|p| p.object["metadata"]["labels"]["job-name"] == job)
            .expect("the job's pod");
        if let Some(child) = &mut pod.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        pod.child = None;
        pod.ended = Some((137, "OOMKilled".into()));
    }
}

/// A pod's process ends with the pod (deleted, or the test over).
impl Drop for PodRecord {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn create_job(
    State(state): State<Arc<Mutex<ClusterState>>>,
    Path(ns): Path<String>,
    Json(job): Json<Value>,
) -> Response {
    assert_eq!(ns, NAMESPACE, "Jobs go to the configured namespace");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let name = job["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    let mut state = state.lock().unwrap();
    state.created.push(job.clone());
    if state.jobs.contains_key(&name) {
        return status(
            409,
            "AlreadyExists",
            format!("jobs.batch \"{name}\" already exists"),
        );
    }
    let mut stored = job.clone();
    stored["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    stored["metadata"]["creationTimestamp"] = json!("2026-12-07T00:00:00Z");
    stored["status"] = json!({ "active": 1 });
    state.jobs.insert(name.clone(), stored.clone());

    // The pod, as the Job controller makes it.
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels["job-name"] = json!(name);
    let pod_name = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
    let container = &template["spec"]["containers"][0];
    let work = tempfile::tempdir().unwrap();
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let child = match state.kubelet.unwrap() {
        Kubelet::ImagePullBackOff => None,
        Kubelet::Run => {
            let command: Vec<&str> = container["command"]
                .as_array()
                .unwrap()
                .iter()
                .chain(container["args"].as_array().unwrap())
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(command[0], "kiln", "the image's kiln runs the job");
            let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
            process.args(&command[1..]).env_clear();
            process.env("PATH", std::env::var("PATH").unwrap_or_default());
            for var in container["env"].as_array().unwrap() {
                let name = var["name"].as_str().unwrap();
                let value = match (&var["value"], &var["valueFrom"]["secretKeyRef"]) {
                    (Value::String(v), _) => Some(v.clone()),
                    (_, Value::Object(reference)) => {
                        assert_eq!(reference["name"], "kiln-test-secrets");
                        state
                            .secret
                            .get(reference["key"].as_str().unwrap())
                            .cloned()
                    }
                    _ => panic!("an env var with neither a value nor a secret: {var}"),
                };
                // The emptyDir is a fresh folder of this pod's own.
                let value = value.map(|v| {
                    if v == mount {
                        work.path().display().to_string()
                    } else {
                        v
                    }
                });
                if let Some(value) = value {
                    process.env(name, value);
                }
            }
            process
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            Some(process.spawn().expect("the pod's process starts"))
        }
    };
    state.pods.insert(
        pod_name.clone(),
        PodRecord {
            object: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": pod_name, "namespace": NAMESPACE, "labels": labels,
                              "creationTimestamp": "2026-12-07T00:00:01Z" },
                "spec": template["spec"].clone(),
            }),
            child,
            ended: None,
            _work: work,
        },
    );
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn read_job(
    State(state): State<Arc<Mutex<ClusterState>>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    assert_eq!(ns, NAMESPACE);
    match state.lock().unwrap().jobs.get(&name) {
        Some(job) => Json(job.clone()).into_response(),
        None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(
    State(state): State<Arc<Mutex<ClusterState>>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    assert_eq!(ns, NAMESPACE);
    let options: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    assert!(
        options["propagationPolicy"] == "Background"
            || query.get("propagationPolicy").map(String::as_str) == Some("Background"),
        "a Job is deleted with its pods: {options} {query:?}"
    );
    let mut state = state.lock().unwrap();
    if state.jobs.remove(&name).is_none() {
        return status(404, "NotFound", format!("jobs.batch \"{name}\" not found"));
    }
    let pods: Vec<String> = state
        .pods
        .iter()
        .filter(|(_, p)| p.object["metadata"]["labels"]["job-name"] == name.as_str())
        .map(|(n, _)| n.clone())
        .collect();
    for pod in pods {
        state.pods.remove(&pod);
    }
    Json(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" }))
        .into_response()
}

async fn list_pods(
    State(state): State<Arc<Mutex<ClusterState>>>,
    Path(ns): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    assert_eq!(ns, NAMESPACE);
    let selector: Vec<(String, String)> = query
        .get("labelSelector")
        .expect("pods are listed by label")
        .split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut state = state.lock().unwrap();
    let kubelet = state.kubelet.unwrap();
    let mut items = Vec::new();
    for pod in state.pods.values_mut() {
        let labels = &pod.object["metadata"]["labels"];
        if !selector.iter().all(|(k, v)| labels[k] == v.as_str()) {
            continue;
        }
        if pod.ended.is_none()
            && let Some(child) = &mut pod.child
            && let Ok(Some(exit)) = child.try_wait()
        {
            let code = exit.code().unwrap_or(137);
            pod.ended = Some((code, if code == 0 { "Completed" } else { "Error" }.into()));
        }
        let container = |state: Value| {
            json!([{ "name": "kiln", "image": IMAGE, "imageID": "", "ready": false,
                     "restartCount": 0, "state": state }])
        };
        let status = match (&pod.ended, &pod.child, kubelet) {
            (Some((code, reason)), _, _) => json!({
                "phase": if *code == 0 { "Succeeded" } else { "Failed" },
                "containerStatuses": container(json!({ "terminated": { "exitCode": code, "reason": reason } })),
            }),
            (None, Some(_), _) => json!({
                "phase": "Running",
                "containerStatuses": container(json!({ "running": { "startedAt": "2026-12-07T00:00:02Z" } })),
            }),
            (None, None, _) => json!({
                "phase": "Pending",
                "containerStatuses": container(json!({ "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": format!("Back-off pulling image \"{IMAGE}\"") } })),
            }),
        };
        let mut object = pod.object.clone();
        object["status"] = status;
        items.push(object);
    }
    Json(
        json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "1" },
                 "items": items }),
    )
    .into_response()
}

/// A kiln whose jobs' pods can reach it as the cluster's would: Postgres, Redis, and objects in a
/// folder this machine shares with them.
async fn kiln_with_cluster() -> (TestApp, Cluster, Worker) {
    let mut options = Options::new(Db::Postgres, Objects::Local);
    options.redis = true;
    options.job_stop_grace_seconds = 5;
    let app = spawn_with(options).await;
    let secret = BTreeMap::from([
        (
            "KILN_DATABASE_URL".to_string(),
            app.config.database_url.clone(),
        ),
        (
            "KILN_REDIS_URL".to_string(),
            app.config.redis_url.clone().unwrap(),
        ),
    ]);
    let cluster = Cluster::start(secret).await;
    let settings = KubeSettings {
        namespace: NAMESPACE.into(),
        image: IMAGE.into(),
        node_selector: BTreeMap::from([("pool".to_string(), "training".to_string())]),
        tolerations: parse_tolerations("nvidia.com/gpu=present:NoSchedule").unwrap(),
        secret: "kiln-test-secrets".into(),
        ttl_seconds: 600,
        poll: Duration::from_millis(200),
    };
    let kube = Kube::at(&cluster.url, settings).unwrap();
    let mut worker_settings = WorkerSettings::from_config(&app.config);
    worker_settings.gpus = 8;
    let worker = Worker::new(
        app.kiln.worker_service.work_queue(),
        worker_settings.with_runner(Runner::Kubernetes(kube)),
    );
    (app, cluster, worker)
}

async fn text_job(app: &TestApp, name: &str, epochs: u32, resources: Value) -> String {
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(60, 5))
        .await;
    app.queued_job(json!({
        "name": name, "modelName": "k8s-model", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
        "hyperparameters": { "epochs": epochs, "batchSize": 4, "maxSeqLength": 16 },
        "resources": resources,
    }))
    .await
}

#[tokio::test]
async fn a_kubernetes_worker_runs_each_job_in_a_pod_of_its_own() {
    let (app, cluster, worker) = kiln_with_cluster().await;
    let job_id = text_job(
        &app,
        "on k8s",
        2,
        json!({ "cpus": 1.5, "memoryGb": 2, "gpus": 1 }),
    )
    .await;
    let asked = app
        .data(
            "query($id: ID!) { job(id: $id) { resources { cpus memoryGb gpus } } }",
            json!({ "id": job_id }),
        )
        .await;
    assert_eq!(
        asked["job"]["resources"],
        json!({ "cpus": 1.5, "memoryGb": 2.0, "gpus": 1 })
    );
    let mut events = app.subscribe_job(&job_id).await;

    let outcome = tokio::time::timeout(Duration::from_secs(180), worker.try_run_next())
        .await
        .expect("the job ends")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert!(job["modelVersion"]["version"].as_i64().is_some(), "{job}");
    // The pod's progress reached this kiln's followers through Redis.
    let seen = events.collect_until_complete(Duration::from_secs(30)).await;
    assert_eq!(crate::helpers::epochs(&seen), vec![1, 2], "{seen:?}");

    // The Job kiln created: its attempt's name, the image, `kiln run-job` under the worker's lease,
    // the resources as requests and limits, the node selector and tolerations, no secret in it.
    let created = cluster.created();
    assert_eq!(created.len(), 1);
    let manifest = &created[0];
    assert_eq!(manifest["metadata"]["name"], format!("kiln-{job_id}-a1"));
    assert_eq!(
        manifest["metadata"]["labels"]["kiln.dev/job-id"],
        job_id.as_str()
    );
    assert_eq!(manifest["spec"]["backoffLimit"], 0);
    assert_eq!(manifest["spec"]["ttlSecondsAfterFinished"], 600);
    let pod = &manifest["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["nodeSelector"], json!({ "pool": "training" }));
    assert_eq!(
        pod["tolerations"],
        json!([{ "key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule" }])
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], IMAGE);
    assert_eq!(
        container["args"],
        json!(["run-job", job_id, "--lease-owner", worker.id()])
    );
    assert_eq!(
        container["resources"],
        json!({ "requests": { "cpu": "1500m", "memory": "2Gi" },
                "limits": { "memory": "2Gi", "nvidia.com/gpu": "1" } })
    );
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|v| v["name"] == name).cloned();
    assert_eq!(var("RAYON_NUM_THREADS").unwrap()["value"], "2");
    assert_eq!(
        var("KILN_DATABASE_URL").unwrap()["valueFrom"]["secretKeyRef"],
        json!({ "name": "kiln-test-secrets", "key": "KILN_DATABASE_URL", "optional": true })
    );
    let text = manifest.to_string();
    assert!(
        !text.contains(&app.config.database_url) && !text.contains("redis://"),
        "a secret setting is written in the Job: {text}"
    );
    // The cluster was asked for exactly this: create, then follow the Job and its pod.
    let requests = cluster.requests();
    assert!(
        requests[0].starts_with(&format!("POST /apis/batch/v1/namespaces/{NAMESPACE}/jobs")),
        "{requests:?}"
    );
    assert!(
        requests.iter().skip(1).all(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("labelSelector=kiln.dev%2Fjob-id%3D")),
        "{requests:?}"
    );
    let log = app
        .data(
            "query($id: ID!) { job(id: $id) { logs { message } } }",
            json!({ "id": job_id }),
        )
        .await;
    assert!(
        log.to_string().contains(&format!(
            "Kubernetes Job kiln-{job_id}-a1 created in namespace {NAMESPACE}"
        )),
        "{log}"
    );

    // Every Job kiln created is a valid batch/v1 Job.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.json");
    std::fs::write(&path, serde_json::to_vec(manifest).unwrap()).unwrap();
    crate::deploy::kubernetes_validate(&[path]);
}

#[tokio::test]
async fn a_pod_that_cannot_start_or_runs_out_of_memory_fails_its_job_in_words() {
    let (app, cluster, worker) = kiln_with_cluster().await;

    // An image the cluster cannot pull: the job fails saying so, and its Job is deleted.
    cluster.set_kubelet(Kubelet::ImagePullBackOff);
    let job_id = text_job(&app, "bad image", 1, json!({})).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), worker.try_run_next())
        .await
        .expect("the job ends")
        .unwrap();
    let error = app.failure_of(outcome, &job_id).await;
    assert!(
        error.starts_with(&format!(
            "the job's pod could not start: its image {IMAGE} could not be pulled (ImagePullBackOff"
        )),
        "{error}"
    );
    assert_eq!(app.job(&job_id).await["attempts"], 1);
    assert!(cluster.job_names().is_empty(), "the failed Job is deleted");
    assert!(cluster.requests().iter().any(|r| r.starts_with(&format!(
        "DELETE /apis/batch/v1/namespaces/{NAMESPACE}/jobs/kiln-{job_id}-a1"
    ))),);

    // A container killed at its memory limit: the job fails for memory, naming its limit, and is
    // not run again.
    cluster.set_kubelet(Kubelet::Run);
    let job_id = text_job(&app, "greedy", 500, json!({ "memoryGb": 1 })).await;
    let running = {
        let worker = Arc::new(worker);
        let runs = worker.clone();
        (
            tokio::spawn(async move { runs.try_run_next().await.unwrap() }),
            worker,
        )
    };
    app.wait_until_training(&job_id).await;
    cluster.oom_kill(&format!("kiln-{job_id}-a1"));
    let outcome = tokio::time::timeout(Duration::from_secs(60), running.0)
        .await
        .expect("the job ends")
        .unwrap();
    let error = app.failure_of(outcome, &job_id).await;
    assert!(
        error.starts_with(
            "the job ran out of memory: Kubernetes killed its container at its memory limit of 1 GiB (OOMKilled)"
        ),
        "{error}"
    );
    assert!(error.contains("batchSize ≤ 2"), "{error}");
    let job = app.job(&job_id).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(
        running.1.try_run_next().await.unwrap(),
        Outcome::Empty,
        "not retried"
    );
}

#[tokio::test]
async fn a_cancel_reaches_the_pod_and_a_vanished_pod_goes_back_to_the_queue() {
    let (app, cluster, worker) = kiln_with_cluster().await;
    let worker = Arc::new(worker);

    // A cancel reaches the job's pod through Redis; it stops and writes CANCELLED itself.
    let job_id = text_job(&app, "cancelled", 500, json!({})).await;
    let runs = worker.clone();
    let run = tokio::spawn(async move { runs.try_run_next().await.unwrap() });
    app.wait_until_training(&job_id).await;
    app.cancel_jobs(&[&job_id]).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the job stops")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Cancelled
        }
    );

    // Its Job deleted from outside kiln while it trains: the attempt ends and the job is queued
    // again, to go on from its checkpoint.
    let job_id = text_job(&app, "deleted", 500, json!({})).await;
    let runs = worker.clone();
    let run = tokio::spawn(async move { runs.try_run_next().await.unwrap() });
    app.wait_until_training(&job_id).await;
    let name = format!("kiln-{job_id}-a1");
    let client = reqwest::Client::new();
    let deleted = client
        .delete(format!(
            "{}/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}",
            cluster.url
        ))
        .json(&json!({ "propagationPolicy": "Background" }))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the attempt ends")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Queued
        }
    );
    let job = app.job(&job_id).await;
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("its Kubernetes Job was deleted from outside kiln"),
        "{job}"
    );
    assert!(!cluster.job_names().contains(&name));
    app.cancel_jobs(&[&job_id]).await;
    assert_eq!(app.job(&job_id).await["status"], "CANCELLED");
}
