//! Inputs that would exhaust the machine: jobs too big for memory, hostile model configurations.

use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::{Value, json};

use crate::helpers::{
    Db, Objects, Options, TestApp, local_hub, minilm_dir, separable_text_jsonl, spawn_app,
    spawn_with,
};

fn refusal(body: &Value) -> (String, String) {
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    (
        error["extensions"]["field"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_job_too_big_for_the_memory_limit_is_refused_at_submit_naming_the_setting() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 1))
        .await;

    // The small BERT at 4096 × 512: the attention scores alone need about 8.6 GB a layer.
    let body = app
        .submit_job(json!({ "name": "huge", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "batchSize": 4096, "maxSeqLength": 512 } }))
        .await;

    let (field, message) = refusal(&body);
    assert_eq!(field, "hyperparameters.batchSize", "{message}");
    assert!(message.contains("KILN_MAX_TRAIN_MEMORY"), "{message}");
    assert!(message.contains("lower batchSize to"), "{message}");
    assert_eq!(app.job_count().await, 0, "nothing was queued");
}

#[tokio::test]
async fn a_pretrained_model_is_sized_from_its_config_against_the_servers_limit() {
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.max_train_memory = Some(1 << 30);
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(40, 1))
        .await;
    let job = |batch: i64| {
        json!({ "name": "minilm", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "baseModel": minilm_dir().display().to_string(),
            "hyperparameters": { "batchSize": batch, "maxSeqLength": 128 } })
    };

    let (field, message) = refusal(&app.submit_job(job(64)).await);
    assert_eq!(field, "hyperparameters.batchSize", "{message}");
    assert!(message.contains("1.0 GiB"), "{message}");
    let fits: i64 = message
        .split("lower batchSize to ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch size suggested: {message}"));
    assert!((1..64).contains(&fits), "{message}");

    // A retrain of a fine-tuned MiniLM is sized the same, from the version's config.json.
    let small = app
        .queued_job(
            json!({ "name": "small", "modelName": "m", "task": "TEXT_CLASSIFICATION",
            "datasetId": dataset, "baseModel": minilm_dir().display().to_string(),
            "hyperparameters": { "epochs": 1, "batchSize": 8, "maxSeqLength": 16 } }),
        )
        .await;
    app.run_next_job().await;
    assert_eq!(app.job(&small).await["status"], "COMPLETED");
    let mut retrain = job(64);
    retrain["baseModel"] = json!("model:m/1");
    let (field, again) = refusal(&app.submit_job(retrain).await);
    assert_eq!(field, "hyperparameters.batchSize", "{again}");
    assert!(
        again.contains(&format!("lower batchSize to {fits} ")),
        "{again}"
    );

    let accepted = app.submit_job(job(fits)).await;
    assert!(
        accepted.get("errors").is_none(),
        "the suggested batch size is accepted: {accepted}"
    );
}

/// A model folder whose config.json says `vocab_size` and the rest of the MiniLM's files.
fn model_with_vocab(dir: &std::path::Path, vocab_size: u64) -> std::path::PathBuf {
    let minilm = minilm_dir();
    std::fs::create_dir_all(dir).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(minilm.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = json!(vocab_size);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for file in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(minilm.join(file), dir.join(file)).unwrap();
    }
    dir.to_path_buf()
}

#[tokio::test]
async fn a_hostile_hub_config_fails_its_job_without_allocating_and_kiln_carries_on() {
    let scratch = tempfile::tempdir().unwrap();
    let evil = model_with_vocab(&scratch.path().join("bigvocab"), 2_000_000_000);
    let hub = local_hub(vec![("evil/bigvocab".into(), evil)]).await;
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.hf_endpoint = Some(hub.endpoint.clone());
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "evil", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "baseModel": "hf:evil/bigvocab", "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }))
        .await;

    let error = app.failure_of(app.run_next_job().await, &job_id).await;
    assert!(
        error.contains("vocab_size 2000000000; kiln accepts 1 to 300000"),
        "{error}"
    );
    assert_eq!(
        app.job(&job_id).await["attempts"],
        1,
        "the job is not run again"
    );
    assert_eq!(app.run_next_job().await, Outcome::Empty);
}

#[tokio::test]
async fn a_hostile_local_config_is_refused_at_submit() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let evil = model_with_vocab(&app.dir.path().join("models/bigvocab"), 2_000_000_000);

    let body = app
        .submit_job(json!({ "name": "evil", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "baseModel": evil.display().to_string() }))
        .await;

    let (field, message) = refusal(&body);
    assert_eq!(field, "baseModel");
    assert!(message.contains("vocab_size 2000000000"), "{message}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn local_base_models_come_only_from_the_model_roots_and_probes_learn_nothing() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let models = app.dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink("/etc", models.join("escape")).unwrap();
    std::os::unix::fs::symlink(minilm_dir(), models.join("minilm-link")).unwrap();
    let submit = |base: String| {
        let app = &app;
        let dataset = dataset.clone();
        async move {
            app.submit_job(
                json!({ "name": "probe", "modelName": "m", "task": "TEXT_CLASSIFICATION",
                "datasetId": dataset, "baseModel": base }),
            )
            .await
        }
    };

    let mut outside = Vec::new();
    for probe in [
        "/root/.ssh",
        "/etc",
        "/no/such/dir",
        "../../",
        "/proc/self/root/etc",
        "escape",
        "escape/ssl",
    ] {
        let (field, message) = refusal(&submit(probe.to_string()).await);
        assert_eq!(field, "baseModel", "{probe}");
        outside.push(message);
    }
    assert!(
        outside.windows(2).all(|w| w[0] == w[1]),
        "every refusal reads the same, whatever exists: {outside:?}"
    );
    assert!(outside[0].contains("KILN_MODEL_ROOTS"), "{}", outside[0]);

    let (_, missing) = refusal(&submit("not-there".into()).await);
    assert!(missing.contains("no model folder not-there"), "{missing}");
    let long = "x".repeat(5000);
    let (_, too_long) = refusal(&submit(long.clone()).await);
    assert!(!too_long.contains(&long[..200]), "the input is not echoed");
    // A link that stays inside the roots, and a name relative to them, are fine.
    for fine in [
        "minilm-link".to_string(),
        minilm_dir().display().to_string(),
    ] {
        let accepted = submit(fine.clone()).await;
        assert!(accepted.get("errors").is_none(), "{fine}: {accepted}");
    }
}

#[tokio::test]
async fn nul_characters_are_refused_as_bad_input_on_postgres_and_store_nothing() {
    let app = spawn_app(Db::Postgres, Objects::Local).await;

    let body = app
        .upload(
            "bad\u{0}name",
            "d.jsonl",
            separable_text_jsonl(20, 1),
            json!({}),
        )
        .await;
    let (field, _) = refusal(&body);
    assert_eq!(field, "name");
    let count = app.data("{ datasets { totalCount } }", json!({})).await;
    assert_eq!(count["datasets"]["totalCount"], 0);
    let stored = std::fs::read_dir(app.object_root().join("datasets"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stored, 0, "no object was left without its row");

    let filtered = app
        .graphql(
            "{ jobs(modelName: \"a\\u0000b\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(refusal(&filtered).0, "modelName");
    let lookup = app
        .data("{ job(id: \"a\\u0000b\") { id } dataset(id: \"\\u0000\") { id } model(name: \"\\u0000\") { name } }", json!({}))
        .await;
    assert!(lookup["job"].is_null() && lookup["dataset"].is_null() && lookup["model"].is_null());
    let cancel = app
        .graphql(
            "mutation { cancelJob(id: \"a\\u0000b\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        cancel["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{cancel}"
    );
    let token = app
        .graphql(
            "mutation { createApiToken(name: \"ci\\u0000\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(refusal(&token).0, "name");
}

async fn hub_app(serve: crate::helpers::Serve) -> (TestApp, crate::helpers::TestHub, String) {
    let hub =
        crate::helpers::local_hub_serving(vec![("odd/model".into(), minilm_dir(), serve)]).await;
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.hf_endpoint = Some(hub.endpoint.clone());
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    (app, hub, dataset)
}

fn hub_job(dataset: &str) -> Value {
    json!({ "name": "hub", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
        "baseModel": "hf:odd/model", "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } })
}

#[tokio::test]
async fn an_error_page_from_the_hub_is_refused_and_never_cached() {
    use std::sync::atomic::Ordering;
    let (app, hub, dataset) = hub_app(crate::helpers::Serve::HtmlConfig).await;

    for attempt in 1..=2 {
        let job_id = app.queued_job(hub_job(&dataset)).await;
        let error = app.failure_of(app.run_next_job().await, &job_id).await;
        assert!(
            error.contains(
                "config.json of odd/model@main from the hub cannot be used: it is not JSON"
            ),
            "{error}"
        );
        assert_eq!(
            hub.sent.load(Ordering::SeqCst),
            attempt,
            "the page was not cached: each job asks again"
        );
    }
}

#[tokio::test]
async fn a_hub_file_that_does_not_match_its_announced_sha256_is_refused() {
    let (app, _hub, dataset) = hub_app(crate::helpers::Serve::WrongSha).await;
    let job_id = app.queued_job(hub_job(&dataset)).await;

    let error = app.failure_of(app.run_next_job().await, &job_id).await;
    assert!(
        error.contains(
            "model.safetensors of odd/model@main from the hub cannot be used: its SHA-256 is"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn cancelling_during_a_slow_hub_download_cancels_the_job_and_leaves_no_part_file() {
    use std::sync::atomic::Ordering;
    let (app, hub, dataset) = hub_app(crate::helpers::Serve::TrickleWeights).await;
    let job_id = app.queued_job(hub_job(&dataset)).await;
    let worker = app.run_next_job_in_background();
    crate::helpers::eventually(
        std::time::Duration::from_secs(20),
        "the weights download to start",
        || async { hub.sent.load(Ordering::SeqCst) == 3 },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": job_id }),
    )
    .await;
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), worker)
        .await
        .expect("the download stops with its job")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Cancelled
        }
    );
    let cache = app.dir.path().join("work/hub/odd~model@main");
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n == "model.safetensors")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
