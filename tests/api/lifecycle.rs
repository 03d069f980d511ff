//! A dataset's life after its upload: FRESH until a job trains on it, then USED with its jobs listed;
//! downloaded as uploaded; archived (submitJob refuses it) and restored; deleted only when no job or
//! model version refers to it; cleaned up in bulk by an admin, with a dry run first.

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, TestApp, on_storage, separable_text_jsonl, spawn_app};

const DATASET: &str = "query($id: ID!) { dataset(id: $id) { id name lifecycle usedAt archivedAt \
    downloadUrl jobs(first: 5) { totalCount nodes { id name } } } }";

async fn dataset(app: &TestApp, id: &str) -> Value {
    app.data(DATASET, json!({ "id": id })).await["dataset"].clone()
}

/// Uploads a READY dataset named `name`: its id.
async fn named(app: &TestApp, name: &str, bytes: Vec<u8>) -> String {
    let body = app.upload(name, "rows.jsonl", bytes, json!({})).await;
    assert_eq!(body["data"]["uploadDataset"]["status"], "READY", "{body}");
    body["data"]["uploadDataset"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("")
}

async fn a_dataset_lives_from_fresh_to_used_archived_and_deleted(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let bytes = separable_text_jsonl(40, 3);
    let used = named(&app, "prompts", bytes.clone()).await;
    let fresh = named(&app, "spare", separable_text_jsonl(40, 4)).await;

    let seen = dataset(&app, &used).await;
    assert_eq!(seen["lifecycle"], "FRESH");
    assert_eq!(seen["usedAt"], Value::Null);
    assert_eq!(seen["jobs"]["totalCount"], 0);

    // Downloaded as uploaded, with the token only.
    let url = app.url(seen["downloadUrl"].as_str().unwrap());
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let response = app
        .client
        .get(&url)
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string()
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"prompts.jsonl\""),
    );
    assert_eq!(response.bytes().await.unwrap(), bytes);

    // A job trains on it: USED, with the job listed (here and in jobs(datasetId:)).
    let job = app
        .queued_job(
            json!({ "name": "first", "modelName": "guard", "task": "TEXT_CLASSIFICATION",
            "datasetId": used, "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }),
        )
        .await;
    assert_eq!(
        dataset(&app, &used).await["lifecycle"],
        "FRESH",
        "queued is not used yet"
    );
    app.run_next_job().await;
    assert_eq!(app.job(&job).await["status"], "COMPLETED");
    let seen = dataset(&app, &used).await;
    assert_eq!(seen["lifecycle"], "USED");
    assert!(seen["usedAt"].is_string());
    assert_eq!(
        seen["jobs"]["nodes"],
        json!([{ "id": job, "name": "first" }])
    );
    let listed = app
        .data(
            "query($d: ID!) { jobs(datasetId: $d) { totalCount } }",
            json!({ "d": used }),
        )
        .await;
    assert_eq!(listed["jobs"]["totalCount"], 1);

    // The version it trained keeps it from being deleted, and says so.
    let refused = app
        .graphql(
            "mutation($id: ID!) { deleteDataset(id: $id) }",
            json!({ "id": used }),
        )
        .await;
    assert_eq!(code(&refused), "CONFLICT", "{refused}");
    assert!(
        message(&refused).contains("lineage of model versions guard v1"),
        "{refused}"
    );

    // Archived: no new job may train on it, until it is restored.
    let archived = app
        .data(
            "mutation($id: ID!) { archiveDataset(id: $id) { lifecycle archivedAt } }",
            json!({ "id": used }),
        )
        .await;
    assert_eq!(archived["archiveDataset"]["lifecycle"], "ARCHIVED");
    let submit = app
        .submit_job(
            json!({ "name": "second", "modelName": "guard", "task": "TEXT_CLASSIFICATION",
            "datasetId": used }),
        )
        .await;
    assert_eq!(code(&submit), "BAD_USER_INPUT", "{submit}");
    assert_eq!(submit["errors"][0]["extensions"]["field"], "datasetId");
    assert!(message(&submit).contains("restoreDataset"), "{submit}");
    let restored = app
        .data(
            "mutation($id: ID!) { restoreDataset(id: $id) { lifecycle archivedAt } }",
            json!({ "id": used }),
        )
        .await;
    assert_eq!(
        restored["restoreDataset"],
        json!({ "lifecycle": "USED", "archivedAt": null })
    );

    // A dataset nothing refers to is deleted with its file.
    let file = app.object_root().join("datasets").join(&fresh);
    assert!(!crate::tus::files_under(&file).is_empty());
    let deleted = app
        .data(
            "mutation($id: ID!) { deleteDataset(id: $id) }",
            json!({ "id": fresh }),
        )
        .await;
    assert_eq!(deleted["deleteDataset"], fresh);
    assert_eq!(dataset(&app, &fresh).await, Value::Null);
    assert!(crate::tus::files_under(&file).is_empty());
    let again = app
        .graphql(
            "mutation($id: ID!) { deleteDataset(id: $id) }",
            json!({ "id": fresh }),
        )
        .await;
    assert_eq!(code(&again), "NOT_FOUND");
}

on_storage!(a_dataset_lives_from_fresh_to_used_archived_and_deleted: sqlite_local, postgres_s3);

const CLEANUP: &str = "mutation($days: Int!, $lifecycle: DatasetLifecycle, $dry: Boolean) { \
    cleanupDatasets(olderThanDays: $days, lifecycle: $lifecycle, dryRun: $dry) { dryRun \
    removed { id name } kept { dataset { id } reason } } }";

async fn a_cleanup_shows_what_it_would_remove_then_removes_only_what_nothing_needs(
    db: Db,
    objects: Objects,
) {
    let app = spawn_app(db, objects).await;
    let used = named(&app, "used", separable_text_jsonl(40, 5)).await;
    let queued_on = named(&app, "waiting", separable_text_jsonl(40, 6)).await;
    let spare = named(&app, "spare", separable_text_jsonl(40, 7)).await;
    let job = app
        .queued_job(
            json!({ "name": "j", "modelName": "m", "task": "TEXT_CLASSIFICATION",
            "datasetId": used, "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }),
        )
        .await;
    app.run_next_job().await;
    assert_eq!(app.job(&job).await["status"], "COMPLETED");
    let waiting = app
        .queued_job(
            json!({ "name": "w", "modelName": "m2", "task": "TEXT_CLASSIFICATION",
            "datasetId": queued_on }),
        )
        .await;

    // Members may not.
    let member = app
        .data(
            "mutation { createApiToken(name: \"m\") { token } }",
            json!({}),
        )
        .await["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let forbidden = app
        .graphql_as(Some(&member), CLEANUP, json!({ "days": 0 }))
        .await;
    assert_eq!(code(&forbidden), "FORBIDDEN");

    // Nothing is old enough yet.
    let none = app.data(CLEANUP, json!({ "days": 30 })).await;
    assert_eq!(
        none["cleanupDatasets"],
        json!({ "dryRun": true, "removed": [], "kept": [] })
    );

    // A dry run (the default) says what would go and what would stay, and why.
    let dry = app.data(CLEANUP, json!({ "days": 0 })).await["cleanupDatasets"].clone();
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["removed"], json!([{ "id": spare, "name": "spare" }]));
    let kept: Vec<(String, String)> = dry["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["dataset"]["id"].as_str().unwrap().to_string(),
                k["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kept.len(), 2, "{dry}");
    assert_eq!(kept[0].0, used);
    assert!(kept[0].1.contains("model versions m v1"), "{}", kept[0].1);
    assert_eq!(kept[1].0, queued_on);
    assert!(
        kept[1].1.contains(&format!("{waiting} (QUEUED)")),
        "{}",
        kept[1].1
    );
    assert_eq!(
        app.data("{ datasets { totalCount } }", json!({})).await["datasets"]["totalCount"],
        3,
        "a dry run deletes nothing"
    );

    // Only FRESH ones, for real.
    let done = app
        .data(
            CLEANUP,
            json!({ "days": 0, "lifecycle": "FRESH", "dry": false }),
        )
        .await["cleanupDatasets"]
        .clone();
    assert_eq!(done["dryRun"], false);
    assert_eq!(done["removed"], json!([{ "id": spare, "name": "spare" }]));
    assert_eq!(done["kept"][0]["dataset"]["id"], queued_on);
    assert_eq!(
        app.data("{ datasets { totalCount } }", json!({})).await["datasets"]["totalCount"],
        2
    );
}

on_storage!(
    a_cleanup_shows_what_it_would_remove_then_removes_only_what_nothing_needs: sqlite_local,
    postgres_s3
);
