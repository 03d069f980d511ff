//! The model registry as clients list it.

use serde_json::json;

use crate::datasets::all_pages;
use crate::helpers::{Db, Objects, on_storage, separable_text_jsonl, spawn_app};

async fn models_are_paged_by_name_with_no_overlap_and_no_gap(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 3))
        .await;
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    // Trained in an order that is not the name order.
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        app.queued_job(json!({ "name": name, "modelName": name, "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 1, "maxSeqLength": 16 } }))
            .await;
        app.run_next_job().await;
    }

    let pages = all_pages(&app, "models", 2).await;

    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), names, "by name, each model once");
    let data = app
        .data(
            "{ models(first: 1) { edges { node { latestVersion { version } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["models"]["edges"][0]["node"]["latestVersion"]["version"],
        1
    );
}

on_storage!(models_are_paged_by_name_with_no_overlap_and_no_gap: sqlite_local, postgres_local);
