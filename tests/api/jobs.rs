use std::time::Duration;

use kiln::domain::{JobStatus, ModelArchitecture, ModelManifest, ModelName, TaskKind, now_ms};
use kiln::objects::keys;
use kiln::runner::Outcome;
use serde_json::{Value, json};

use crate::helpers::{
    Db, Objects, WsMessage, epochs, execute_sql, on_storage, separable_text_jsonl, spawn_app,
    statuses,
};

fn text_job(dataset_id: &str) -> Value {
    json!({
        "name": "injection detector",
        "modelName": "pi-detector",
        "task": "TEXT_CLASSIFICATION",
        "datasetId": dataset_id,
        "hyperparameters": { "epochs": 4, "batchSize": 16, "learningRate": 0.002, "seed": 7, "maxSeqLength": 32 },
    })
}

#[tokio::test]
async fn each_invalid_field_is_refused_by_name_and_nothing_is_queued() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let tabular = app
        .ready_dataset("t.csv", crate::helpers::separable_tabular_csv(20, 3))
        .await;
    let hp = |extra: Value| {
        let mut job = text_job(&dataset);
        for (k, v) in extra.as_object().unwrap() {
            job["hyperparameters"][k] = v.clone();
        }
        job
    };
    let with = |key: &str, value: Value| {
        let mut job = text_job(&dataset);
        job[key] = value;
        job
    };
    let cases = [
        (with("datasetId", json!("no-such-dataset")), "datasetId"),
        (with("datasetId", json!(tabular)), "datasetId"),
        (with("name", json!("  ")), "name"),
        (with("modelName", json!("../escape")), "modelName"),
        (with("baseModel", json!("/no/such/dir")), "baseModel"),
        (
            with("modelConfig", json!({ "hiddenSize": 30, "numHeads": 4 })),
            "modelConfig.numHeads",
        ),
        (hp(json!({ "epochs": 0 })), "hyperparameters.epochs"),
        (
            hp(json!({ "learningRate": 0.0 })),
            "hyperparameters.learningRate",
        ),
        (
            hp(json!({ "learningRate": -1.0 })),
            "hyperparameters.learningRate",
        ),
        (
            hp(json!({ "validationSplit": 0.0 })),
            "hyperparameters.validationSplit",
        ),
        (
            hp(json!({ "validationSplit": 1.0 })),
            "hyperparameters.validationSplit",
        ),
        (hp(json!({ "batchSize": 0 })), "hyperparameters.batchSize"),
        (
            hp(json!({ "maxSeqLength": 100000 })),
            "hyperparameters.maxSeqLength",
        ),
        (hp(json!({ "momentum": 0.9 })), "hyperparameters.momentum"),
        (
            hp(json!({ "optimizer": "SGD", "momentum": 1.5 })),
            "hyperparameters.momentum",
        ),
        (
            hp(json!({ "weightDecay": -0.1 })),
            "hyperparameters.weightDecay",
        ),
        (
            hp(json!({ "warmupRatio": 1.0 })),
            "hyperparameters.warmupRatio",
        ),
        (
            hp(json!({ "gradientClipNorm": 0.0 })),
            "hyperparameters.gradientClipNorm",
        ),
        (
            hp(json!({ "gradientAccumulationSteps": 0 })),
            "hyperparameters.gradientAccumulationSteps",
        ),
        (
            hp(
                json!({ "classWeights": { "balanced": true, "weights": [{ "label": "benign", "weight": 1.0 }] } }),
            ),
            "hyperparameters.classWeights",
        ),
        (
            hp(json!({ "classWeights": { "weights": [{ "label": "nope", "weight": 2.0 }] } })),
            "hyperparameters.classWeights",
        ),
        (
            hp(json!({ "classWeights": { "weights": [{ "label": "benign", "weight": 0.0 }] } })),
            "hyperparameters.classWeights.weights[0].weight",
        ),
        (
            hp(json!({ "earlyStoppingMetric": "F1" })),
            "hyperparameters.earlyStoppingMetric",
        ),
        (
            hp(json!({ "earlyStoppingPatience": 0 })),
            "hyperparameters.earlyStoppingPatience",
        ),
        (
            hp(json!({ "freezeLayers": 100 })),
            "hyperparameters.freezeLayers",
        ),
        (hp(json!({ "dropout": 1.0 })), "hyperparameters.dropout"),
        (
            hp(json!({ "hiddenSizes": [32] })),
            "hyperparameters.hiddenSizes",
        ),
        (
            with("customization", json!({ "method": "LORA" })),
            "customization.method",
        ),
        (
            with("customization", json!({ "rank": 4 })),
            "customization.rank",
        ),
    ];
    for (input, field) in cases {
        let body = app.submit_job(input.clone()).await;
        let error = &body["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "BAD_USER_INPUT",
            "{input} → {body}"
        );
        assert_eq!(error["extensions"]["field"], field, "{input} → {body}");
        assert!(
            error["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    assert_eq!(app.job_count().await, 0, "a refused job was queued");

    // Defaults are filled in and documented values hold.
    let body = app.submit_job(json!({ "name": "d", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset })).await;
    let h = &body["data"]["submitJob"]["hyperparameters"];
    assert_eq!(
        *h,
        json!({ "epochs": 3, "batchSize": 16, "learningRate": 0.001, "validationSplit": 0.2, "seed": "42", "maxSeqLength": 128 })
    );
    assert_eq!(body["data"]["submitJob"]["priority"], "NORMAL");
    assert_eq!(body["data"]["submitJob"]["status"], "QUEUED");
}

/// The whole spine: upload → submit → subscribe → train → every epoch live → COMPLETED → model version
/// registered → artifacts in the store.
async fn a_text_job_trains_live_and_registers_a_model(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("prompts.jsonl", separable_text_jsonl(300, 11))
        .await;
    let job_id = app.queued_job(text_job(&dataset)).await;
    let mut sub = app.subscribe_job(&job_id).await;
    // The first event is the status at subscription time; after it, nothing can be missed.
    let first = sub.next(Duration::from_secs(10)).await;

    let outcome = app.run_next_job().await;
    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );

    let mut events = match first {
        WsMessage::Next(payload) => vec![payload["data"]["jobEvents"].clone()],
        other => panic!("expected the job's status, got {other:?}"),
    };
    events.extend(sub.collect_until_complete(Duration::from_secs(30)).await);
    assert_eq!(
        statuses(&events),
        vec!["QUEUED", "RUNNING", "COMPLETED"],
        "{events:?}"
    );
    assert_eq!(epochs(&events), vec![1, 2, 3, 4]);
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| e["__typename"] == "StepProgress")
        .collect();
    assert!(!steps.is_empty(), "no step progress was sent");
    // Each says how far along the run it is: step of totalSteps, epoch of totalEpochs.
    let total = steps[0]["totalSteps"].as_i64().unwrap();
    for step in &steps {
        assert_eq!(step["totalSteps"], total, "{step}");
        assert_eq!(step["totalEpochs"], 4, "{step}");
        assert!(step["step"].as_i64().unwrap() <= total, "{step}");
    }
    assert_eq!(
        steps.last().unwrap()["step"],
        total,
        "the last step is sent"
    );

    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "COMPLETED");
    // Where it trained: the tests' machines have no GPU (KILN_DEVICE is `auto`).
    assert_eq!(job["device"], "cpu");
    assert_eq!(job["epochs"].as_array().unwrap().len(), 4);
    let accuracy = job["epochs"][3]["accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.9,
        "validation accuracy {accuracy} < 0.9: {job}"
    );
    assert_eq!(job["progress"]["percent"], 100.0);
    let version = &job["modelVersion"];
    assert_eq!(version["version"], 1);
    assert_eq!(version["model"]["name"], "pi-detector");

    let model = app.data("{ model(name: \"pi-detector\") { name latestVersion { version } versions { version } } }", json!({})).await;
    assert_eq!(model["model"]["latestVersion"]["version"], 1);

    let prefix = app.model_run_dir("pi-detector", &job_id);
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "kiln.json",
    ] {
        let meta = std::fs::metadata(prefix.join(file))
            .unwrap_or_else(|_| panic!("{file} is missing in the store"));
        assert!(meta.len() > 0, "{file} is empty");
    }
    let manifest =
        ModelManifest::from_json(&std::fs::read(prefix.join("kiln.json")).unwrap()).unwrap();
    assert_eq!(manifest.labels, ["benign", "injection"]);
    assert_eq!(manifest.task, TaskKind::TextClassification);
    assert_eq!(manifest.metrics.epoch, 4);
    assert!(
        matches!(&manifest.architecture, ModelArchitecture::Bert { base_model, max_seq_length: 32, .. } if base_model == "random"),
        "{manifest:?}"
    );
    let uri = version["artifactUri"].as_str().unwrap();
    let key = keys::model_run(&ModelName::parse("m", "pi-detector").unwrap(), &job_id).unwrap();
    assert!(uri.ends_with(key.as_str()), "{uri}");
    if objects == Objects::S3 {
        assert!(uri.starts_with("s3://kiln-test/objects/"), "{uri}");
    }

    // A second run of the same model is version 2.
    let second = app
        .queued_job(
            json!({ "name": "again", "modelName": "pi-detector", "task": "TEXT_CLASSIFICATION",
        "datasetId": dataset, "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }),
        )
        .await;
    assert_eq!(app.job(&second).await["device"], Value::Null);
    app.run_next_job().await;
    assert_eq!(app.job(&second).await["modelVersion"]["version"], 2);
}

on_storage!(a_text_job_trains_live_and_registers_a_model: sqlite_local, sqlite_s3, postgres_local, postgres_s3);

#[tokio::test]
async fn a_misspelt_input_field_is_refused_with_the_nearest_name() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 1))
        .await;
    let mut input = text_job(&dataset);
    input["hyperparameters"] = json!({ "epochz": 1 });
    let body = app.submit_job(input).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown field \"epochz\"")
            && message.ends_with("Did you mean \"epochs\"?"),
        "{body}"
    );
    let mut input = text_job(&dataset);
    input["customization"] = json!({ "method": "LORA", "rnak": 4 });
    let body = app.submit_job(input).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.ends_with("Did you mean \"rank\"?"), "{body}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_tabular_job_learns_a_separable_rule() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("points.csv", crate::helpers::separable_tabular_csv(400, 5))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "points", "modelName": "points", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 8, "batchSize": 32, "learningRate": 0.01 } }))
        .await;

    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );

    let job = app.job(&job_id).await;
    let accuracy = job["epochs"][7]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "tabular accuracy {accuracy}: {job}");
    let prefix = app.model_run_dir("points", &job_id);
    let manifest =
        ModelManifest::from_json(&std::fs::read(prefix.join("kiln.json")).unwrap()).unwrap();
    let ModelArchitecture::Mlp {
        features,
        standardization,
        ..
    } = manifest.architecture
    else {
        panic!("a tabular model is an MLP: {:?}", manifest.architecture);
    };
    assert_eq!(features, ["x", "y", "noise"]);
    assert_eq!(standardization.mean.len(), 3);
}

#[tokio::test]
async fn a_queued_job_is_cancelled_at_once_and_never_runs() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let job_id = app.queued_job(text_job(&dataset)).await;

    let body = app
        .data(
            "mutation($id: ID!) { cancelJob(id: $id) { status finishedAt } }",
            json!({ "id": job_id }),
        )
        .await;

    assert_eq!(body["cancelJob"]["status"], "CANCELLED");
    assert!(body["cancelJob"]["finishedAt"].is_string());
    assert_eq!(app.run_next_job().await, Outcome::Empty);
    let again = app
        .graphql(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": job_id }),
        )
        .await;
    assert_eq!(
        again["data"]["cancelJob"]["status"], "CANCELLED",
        "cancelling twice is harmless: {again}"
    );
    let missing = app
        .graphql("mutation { cancelJob(id: \"nope\") { status } }", json!({}))
        .await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn a_running_job_stops_within_a_step_when_cancelled() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", crate::helpers::long_text_jsonl(200))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "slow", "modelName": "slow", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "modelConfig": { "hiddenSize": 256, "numLayers": 4, "numHeads": 4, "intermediateSize": 512 },
            "hyperparameters": { "epochs": 100, "batchSize": 16, "maxSeqLength": 64 } }))
        .await;
    let worker = app.run_next_job_in_background();
    app.wait_until_training(&job_id).await;

    let body = app
        .data(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": job_id }),
        )
        .await;
    let answered_at = now_ms();
    assert_eq!(
        body["cancelJob"]["status"], "RUNNING",
        "the answer shows the job still stopping"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the job stops promptly")
        .unwrap();

    assert_eq!(
        outcome,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Cancelled
        }
    );
    let steps = app
        .store()
        .job_metrics(&job_id, Some("train_loss"), 10_000)
        .await
        .unwrap();
    let finished_after_cancel: Vec<i64> = steps
        .iter()
        .filter(|p| p.created_at > answered_at)
        .map(|p| p.step)
        .collect();
    assert!(
        finished_after_cancel.len() <= 1,
        "only the step under way when the cancel was answered may finish; these did: {finished_after_cancel:?}"
    );
    let last_step = steps.last().unwrap().step;
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "CANCELLED");
    assert_eq!(
        job["progress"]["step"], last_step,
        "progress shows the last step trained"
    );
    assert!(last_step < job["progress"]["totalSteps"].as_i64().unwrap());
    assert!(job["modelVersion"].is_null());
}

#[tokio::test]
async fn a_failing_job_is_failed_with_a_readable_error() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    // A base model directory with the three files, none of them what it should be: the config is read
    // at submit and refused there.
    let dir = app.dir.path().join("models/broken-model");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.join(file), b"not what it should be").unwrap();
    }
    let mut input = text_job(&dataset);
    input["baseModel"] = json!(dir.display().to_string());
    let refused = app.submit_job(input.clone()).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "baseModel",
        "{refused}"
    );
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("the base model's config.json is not a BERT configuration kiln can read"),
        "{message}"
    );
    // With a good config, the broken tokenizer is found by the worker.
    std::fs::copy(
        crate::helpers::minilm_dir().join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let job_id = app.queued_job(input).await;

    let error = app.failure_of(app.run_next_job().await, &job_id).await;
    assert!(
        error.starts_with("the base model's tokenizer.json is not a tokenizer kiln can read"),
        "the message says what failed: {error}"
    );
    assert!(error.contains("(reference "), "{error}");
    assert!(
        !error.contains(&dir.display().to_string()),
        "no server path in the message: {error}"
    );
}

#[tokio::test]
async fn cancelling_a_finished_job_is_a_conflict() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let mut input = text_job(&dataset);
    input["hyperparameters"]["epochs"] = json!(1);
    let job_id = app.queued_job(input).await;
    app.run_next_job().await;

    let body = app
        .graphql(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": job_id }),
        )
        .await;

    assert_eq!(
        body["errors"][0]["extensions"]["code"], "CONFLICT",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["message"],
        "the job has already finished (COMPLETED)"
    );
    assert_eq!(app.job(&job_id).await["status"], "COMPLETED");
}

#[tokio::test]
async fn an_internal_error_is_answered_with_a_reference_and_no_internals() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let job_id = app.queued_job(text_job(&dataset)).await;
    // The row is damaged behind kiln's back: its stored hyperparameters are no longer JSON.
    execute_sql(
        &app,
        &format!("UPDATE jobs SET hyperparameters = 'garbage' WHERE id = '{job_id}'"),
    )
    .await;

    let body = app
        .graphql(
            "query($id: ID!) { job(id: $id) { id } }",
            json!({ "id": job_id }),
        )
        .await;

    let error = &body["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{body}"
    );
    let message = error["message"].as_str().unwrap();
    let reference = message
        .strip_prefix("internal error (reference ")
        .and_then(|rest| rest.strip_suffix("); see the server log"))
        .unwrap_or_else(|| panic!("unexpected message: {message}"));
    assert!(uuid::Uuid::parse_str(reference).is_ok(), "{message}");
    for internal in ["hyperparameters", "garbage", "stored", "SELECT", "expected"] {
        assert!(
            !body.to_string().contains(internal),
            "{internal} leaked: {body}"
        );
    }
}

async fn listing_jobs_costs_a_constant_number_of_round_trips(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    for i in 0..48 {
        app.queued_job(json!({ "name": format!("queued {i}"), "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset })).await;
    }
    // The two newest jobs run (URGENT goes first) so that every page holds versions and epochs.
    for i in 0..2 {
        app.queued_job(json!({ "name": format!("done {i}"), "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "priority": "URGENT", "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } })).await;
        app.run_next_job().await;
    }
    let query = "query($first: Int) { jobs(first: $first) { nodes { id name dataset { id name rowCount } \
                 modelVersion { id version } epochs { epoch accuracy } metrics(last: 5) { step value } } } }";

    let mut costs = Vec::new();
    for first in [50, 5] {
        let before = app.store().query_count();
        let data = app.data(query, json!({ "first": first })).await;
        costs.push(app.store().query_count() - before);
        assert_eq!(data["jobs"]["nodes"].as_array().unwrap().len(), first);
    }
    let data = app.data(query, json!({ "first": 50 })).await;
    let with_versions = data["jobs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| !j["modelVersion"].is_null())
        .count();
    assert_eq!(
        with_versions, 2,
        "the listing resolves the versions it should"
    );

    assert!(
        costs[0] <= 5,
        "listing 50 jobs took {} round trips",
        costs[0]
    );
    assert_eq!(
        costs[0], costs[1],
        "round trips grow with the page size: {costs:?}"
    );
}

on_storage!(listing_jobs_costs_a_constant_number_of_round_trips: sqlite_local, postgres_local);

#[tokio::test]
async fn jobs_are_paged_with_cursors_and_filtered() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let model = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(app.queued_job(json!({ "name": format!("j{i}"), "modelName": model, "task": "TEXT_CLASSIFICATION", "datasetId": dataset })).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let page = |after: Value| {
        let app = &app;
        async move {
            app.data("query($after: String) { jobs(first: 2, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after })).await["jobs"].clone()
        }
    };
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let p = page(after.clone()).await;
        assert_eq!(p["totalCount"], 5);
        seen.extend(
            p["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string()),
        );
        if p["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = p["pageInfo"]["endCursor"].clone();
    }
    ids.reverse();
    assert_eq!(seen, ids, "pages are newest first with no gap or repeat");

    let odd = app
        .data(
            "{ jobs(modelName: \"odd\") { totalCount nodes { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(odd["jobs"]["totalCount"], 2);
    let queued = app
        .data("{ jobs(status: QUEUED) { totalCount } }", json!({}))
        .await;
    assert_eq!(queued["jobs"]["totalCount"], 5);
    let bad = app
        .graphql("{ jobs(first: 1000) { totalCount } }", json!({}))
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["field"], "first");
}
