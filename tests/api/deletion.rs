//! Deleting jobs, model versions and models through the API: refused while something still needs them,
//! then gone with their rows and files, and a version's number never given again.

use std::path::Path;

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, TestApp, on_storage, spawn_app};
use crate::registry::{train_one, train_versions};

/// The error code and message of a refused request.
fn refusal(body: &Value) -> (String, String) {
    let error = &body["errors"][0];
    assert!(error.is_object(), "expected an error: {body}");
    (
        error["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        error["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Files under a folder of the object store (a local store, or the S3 server's folder).
fn stored_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                stored_files(&path)
            } else {
                1
            }
        })
        .sum()
}

async fn versions_of(app: &TestApp, model: &str) -> Value {
    app.data(
        "query($m: String!) { model(name: $m) { versions { version job { id } } } }",
        json!({ "m": model }),
    )
    .await["model"]["versions"]
        .clone()
}

async fn delete_version(app: &TestApp, model: &str, version: i64) -> Value {
    app.graphql(
        "mutation($m: String!, $v: Int!) { deleteModelVersion(model: $m, version: $v) { name versions { version } } }",
        json!({ "m": model, "v": version }),
    )
    .await
}

async fn delete_job(app: &TestApp, id: &str) -> Value {
    app.graphql(
        "mutation($id: ID!) { deleteJob(id: $id) }",
        json!({ "id": id }),
    )
    .await
}

async fn set_alias(app: &TestApp, model: &str, alias: &str, version: i64) {
    app.data(
        "mutation($m: String!, $a: String!, $v: Int) { setModelAlias(model: $m, alias: $a, version: $v) { name } }",
        json!({ "m": model, "a": alias, "v": version }),
    )
    .await;
}

async fn delete_alias(app: &TestApp, model: &str, alias: &str) {
    app.data(
        "mutation($m: String!, $a: String!) { deleteModelAlias(model: $m, alias: $a) { name } }",
        json!({ "m": model, "a": alias }),
    )
    .await;
}

async fn jobs_delete_versions_and_models_when_nothing_needs_them(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = train_versions(&app, "gone", 2).await;
    let versions = versions_of(&app, "gone").await;
    let job = |i: usize| versions[i]["job"]["id"].as_str().unwrap().to_string();
    let (job1, job2) = (job(0), job(1));
    assert!(stored_files(&app.model_run_dir("gone", &job2)) > 0);

    // A version an alias points to stays.
    set_alias(&app, "gone", "production", 2).await;
    let (code, message) = refusal(&delete_version(&app, "gone", 2).await);
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("alias production"), "{message}");
    // A job whose version exists stays.
    let (code, message) = refusal(&delete_job(&app, &job2).await);
    assert_eq!(code, "CONFLICT");
    assert!(
        message.contains("version 2 of model gone") && message.contains("deleteModelVersion"),
        "{message}"
    );
    let (code, _) = refusal(&delete_version(&app, "gone", 7).await);
    assert_eq!(code, "NOT_FOUND");

    // Once the alias has gone, the version goes with its files; its job stays, without a version.
    delete_alias(&app, "gone", "production").await;
    let body = delete_version(&app, "gone", 2).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(
        body["data"]["deleteModelVersion"]["versions"],
        json!([{ "version": 1 }])
    );
    assert_eq!(stored_files(&app.model_run_dir("gone", &job2)), 0);
    assert_eq!(app.job(&job2).await["modelVersion"], Value::Null);
    let download = app
        .client
        .get(app.url("/models/gone/versions/2/download"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 404);
    let body = app
        .graphql(
            "{ predict(model: \"gone\", version: 2, rows: [[1, 2, 3]]) { label } }",
            json!({}),
        )
        .await;
    let (code, message) = refusal(&body);
    assert_eq!(code, "BAD_USER_INPUT", "{body}");
    assert!(message.contains("has no version 2"), "{message}");

    // Its number is not given again.
    train_one(&app, "gone", &dataset, json!({ "epochs": 1 }), None).await;
    let numbers: Vec<i64> = versions_of(&app, "gone")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 3]);

    // The job goes with its epochs, metrics, log and checkpoints.
    let body = delete_job(&app, &job2).await;
    assert_eq!(body["data"]["deleteJob"], json!(job2), "{body}");
    let body = app
        .graphql(
            "query($id: ID!) { job(id: $id) { id } }",
            json!({ "id": job2 }),
        )
        .await;
    assert_eq!(body["data"]["job"], Value::Null, "{body}");
    assert_eq!(refusal(&delete_job(&app, &job2).await).0, "NOT_FOUND");

    // A job still waiting is cancelled first; so is a model with one.
    let queued = app
        .queued_job(
            json!({ "name": "later", "modelName": "gone", "task": "TABULAR_CLASSIFICATION",
            "datasetId": dataset }),
        )
        .await;
    let (code, message) = refusal(&delete_job(&app, &queued).await);
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("cancel it first"), "{message}");
    let delete_model = "mutation($m: String!) { deleteModel(model: $m) { name versions } }";
    let (code, message) = refusal(&app.graphql(delete_model, json!({ "m": "gone" })).await);
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("1 job queued"), "{message}");
    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": queued }),
    )
    .await;
    assert!(delete_job(&app, &queued).await.get("errors").is_none());

    // A model: admins only, and not while an alias points into it.
    let member = app
        .data(
            "mutation { createApiToken(name: \"member\") { token } }",
            json!({}),
        )
        .await["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let body = app
        .graphql_as(Some(&member), delete_model, json!({ "m": "gone" }))
        .await;
    assert_eq!(refusal(&body).0, "FORBIDDEN");
    set_alias(&app, "gone", "staging", 1).await;
    let (code, message) = refusal(&app.graphql(delete_model, json!({ "m": "gone" })).await);
    assert_eq!(code, "CONFLICT");
    assert!(message.contains("staging"), "{message}");
    delete_alias(&app, "gone", "staging").await;
    let body = app.graphql(delete_model, json!({ "m": "gone" })).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(
        body["data"]["deleteModel"],
        json!({ "name": "gone", "versions": [1, 3] })
    );
    assert_eq!(stored_files(&app.model_run_dir("gone", &job1)), 0);
    let body = app
        .graphql("{ model(name: \"gone\") { name } }", json!({}))
        .await;
    assert_eq!(body["data"]["model"], Value::Null, "{body}");
    // Its jobs stay, without versions, and can be deleted now.
    assert_eq!(app.job(&job1).await["modelVersion"], Value::Null);
    assert!(delete_job(&app, &job1).await.get("errors").is_none());
    let (code, _) = refusal(&app.graphql(delete_model, json!({ "m": "gone" })).await);
    assert_eq!(code, "NOT_FOUND");
}

on_storage!(jobs_delete_versions_and_models_when_nothing_needs_them: sqlite_local, postgres_s3);
