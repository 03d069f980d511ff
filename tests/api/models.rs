//! The model registry as clients list it.

use serde_json::{Value, json};

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

async fn aliases_and_lineage_cost_the_same_round_trips_for_any_page(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    for model in ["m1", "m2", "m3"] {
        crate::registry::train_versions(&app, model, 1).await;
        app.data(
            "mutation($m: String!) { setModelAlias(model: $m, alias: \"production\", version: 1) { name } }",
            json!({ "m": model }),
        )
        .await;
    }
    app.data(
        "mutation { setPromotionPolicy(model: \"m1\", alias: \"production\", rules: [\"accuracy >= 0.5\"]) { name } \
         setModelTrainingDefaults(model: \"m1\", hyperparameters: { epochs: 2 }) { name } }",
        json!({}),
    )
    .await;
    let query = "query($first: Int) { models(first: $first) { nodes { aliases { alias version requests { version } } \
                 aliasHistory(last: 5) { alias toVersion } promotionPolicies { alias rules } \
                 trainingDefaults { hyperparameters { name value } } \
                 versions { aliases baseModel retrainedFrom { version } hyperparameters { epochs } job { id } } } } }";
    let mut costs = Vec::new();
    for first in [1, 3] {
        let before = app.store().query_count();
        let data = app.data(query, json!({ "first": first })).await;
        costs.push(app.store().query_count() - before);
        let nodes = data["models"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), first);
        assert_eq!(nodes[0]["versions"][0]["aliases"], json!(["production"]));
        assert_eq!(
            nodes[0]["aliasHistory"],
            json!([{ "alias": "production", "toVersion": 1 }])
        );
        assert_eq!(
            nodes[0]["promotionPolicies"],
            json!([{ "alias": "production", "rules": ["accuracy >= 0.5"] }])
        );
        assert_eq!(
            nodes[0]["trainingDefaults"]["hyperparameters"],
            json!([{ "name": "epochs", "value": "2" }])
        );
        if first == 3 {
            assert_eq!(nodes[1]["promotionPolicies"], json!([]));
            assert_eq!(nodes[1]["trainingDefaults"], Value::Null);
        }
    }
    assert_eq!(costs[0], costs[1], "round trips per page size: {costs:?}");
}

on_storage!(aliases_and_lineage_cost_the_same_round_trips_for_any_page: sqlite_local, postgres_local);
