//! The registry as a client uses it: aliases and their history, rollbacks, guarded promotion,
//! automatic promotion on submit, and comparing versions.

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, TestApp, on_storage, separable_tabular_csv, spawn_app};

/// Trains `n` versions of `model` (tabular, quick) on one dataset; returns the dataset's id.
pub async fn train_versions(app: &TestApp, model: &str, n: usize) -> String {
    let dataset = app
        .ready_dataset("rows.csv", separable_tabular_csv(200, 5))
        .await;
    for i in 0..n {
        train_one(
            app,
            model,
            &dataset,
            json!({ "seed": i as i64 + 1, "epochs": 2 + i as i64 }),
            None,
        )
        .await;
    }
    dataset
}

/// Trains one version; `auto_promote` names an alias to move to it.
pub async fn train_one(
    app: &TestApp,
    model: &str,
    dataset: &str,
    hyperparameters: Value,
    auto_promote: Option<&str>,
) -> String {
    let mut input = json!({ "name": "train", "modelName": model, "task": "TABULAR_CLASSIFICATION",
        "datasetId": dataset, "hyperparameters": hyperparameters });
    if let Some(alias) = auto_promote {
        input["autoPromote"] = json!(alias);
    }
    let job = app.queued_job(input).await;
    app.run_next_job().await;
    assert_eq!(app.job(&job).await["status"], "COMPLETED");
    job
}

const SET_ALIAS: &str = "mutation($model: String!, $alias: String!, $version: Int, $split: [SplitArmInput!], \
    $reason: String, $force: Boolean) { setModelAlias(model: $model, alias: $alias, version: $version, split: $split, \
    reason: $reason, force: $force) { aliases { alias version split { version weight } } } }";

async fn set_alias(app: &TestApp, token: &str, variables: Value) -> Value {
    app.graphql_as(Some(token), SET_ALIAS, variables).await
}

/// Where an alias points, as the API lists it (null when absent).
async fn alias_version(app: &TestApp, model: &str, alias: &str) -> Value {
    let data = app
        .data(
            "query($m: String!) { model(name: $m) { aliases { alias version } } }",
            json!({ "m": model }),
        )
        .await;
    data["model"]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alias"] == alias)
        .map(|a| a["version"].clone())
        .unwrap_or(Value::Null)
}

async fn history(app: &TestApp, model: &str) -> Vec<Value> {
    let data = app
        .data(
            "query($m: String!) { model(name: $m) { aliasHistory { alias fromVersion toVersion by reason \
             forced overriddenRules rollback at } } }",
            json!({ "m": model }),
        )
        .await;
    data["model"]["aliasHistory"].as_array().unwrap().clone()
}

/// Asserts that `body` is refused with `code` and a message saying `says`.
fn refused(body: &Value, expected: &str, says: &str) {
    assert_eq!(code(body), expected, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{body}");
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

async fn member_token(app: &TestApp) -> String {
    let data = app
        .data(
            "mutation { createApiToken(name: \"analyst\") { token } }",
            json!({}),
        )
        .await;
    data["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn aliases_move_keep_their_history_and_roll_back(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    train_versions(&app, "fraud", 3).await;
    let token = app.token.clone();
    for (version, reason) in [(1, "first release"), (2, "better recall"), (3, "retrained")] {
        let body = set_alias(
            &app,
            &token,
            json!({ "model": "fraud", "alias": "production", "version": version, "reason": reason }),
        )
        .await;
        assert_eq!(
            body["data"]["setModelAlias"]["aliases"],
            json!([{ "alias": "production", "version": version, "split": null }]),
            "{body}"
        );
    }
    let data = app
        .data(
            "{ model(name: \"fraud\") { versions { version aliases } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["model"]["versions"],
        json!([{ "version": 1, "aliases": [] }, { "version": 2, "aliases": [] },
               { "version": 3, "aliases": ["production"] }])
    );

    let moves = history(&app, "fraud").await;
    let summary: Vec<_> = moves
        .iter()
        .map(|m| {
            (
                m["fromVersion"].clone(),
                m["toVersion"].clone(),
                m["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!(2), json!(3), json!("retrained")),
            (json!(1), json!(2), json!("better recall")),
            (Value::Null, json!(1), json!("first release")),
        ]
    );
    assert!(
        moves
            .iter()
            .all(|m| m["by"] == "admin (KILN_ADMIN_TOKEN)" && m["forced"] == false),
        "{moves:?}"
    );

    // Rollbacks walk back one move at a time, then there is nothing left to go back to.
    let rollback = "mutation($r: String) { rollbackModelAlias(model: \"fraud\", alias: \"production\", reason: $r) \
                    { aliases { version } } }";
    let body = app.graphql(rollback, json!({ "r": "3 misfires" })).await;
    assert_eq!(
        body["data"]["rollbackModelAlias"]["aliases"][0]["version"], 2,
        "{body}"
    );
    let body = app.graphql(rollback, json!({})).await;
    assert_eq!(
        body["data"]["rollbackModelAlias"]["aliases"][0]["version"], 1,
        "{body}"
    );
    let body = app.graphql(rollback, json!({})).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(alias_version(&app, "fraud", "production").await, 1);
    let latest = &history(&app, "fraud").await[0];
    assert_eq!(
        (
            &latest["fromVersion"],
            &latest["toVersion"],
            &latest["rollback"]
        ),
        (&json!(2), &json!(1), &json!(true))
    );

    // Bad input names its field and changes nothing.
    for (variables, field) in [
        (
            json!({ "model": "fraud", "alias": "Production", "version": 2 }),
            "alias",
        ),
        (
            json!({ "model": "fraud", "alias": "production", "version": 9 }),
            "version",
        ),
        (
            json!({ "model": "fraud", "alias": "production" }),
            "version",
        ),
        (
            json!({ "model": "fraud", "alias": "production", "version": 2, "reason": "x".repeat(1001) }),
            "reason",
        ),
    ] {
        let body = set_alias(&app, &token, variables).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let body = set_alias(
        &app,
        &token,
        json!({ "model": "nope", "alias": "production", "version": 1 }),
    )
    .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(alias_version(&app, "fraud", "production").await, 1);

    let body = app
        .graphql(
            "mutation { deleteModelAlias(model: \"fraud\", alias: \"production\", reason: \"retired\") { aliases { alias } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["deleteModelAlias"]["aliases"],
        json!([]),
        "{body}"
    );
    let latest = &history(&app, "fraud").await[0];
    assert_eq!(
        (&latest["fromVersion"], &latest["toVersion"]),
        (&json!(1), &Value::Null)
    );
    let body = app
        .graphql(
            "mutation { deleteModelAlias(model: \"fraud\", alias: \"production\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
}

on_storage!(aliases_move_keep_their_history_and_roll_back: sqlite_local, postgres_local);

async fn guarded_aliases_take_only_versions_that_pass_their_rules(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = train_versions(&app, "spam", 2).await;
    let admin = app.token.clone();
    let member = member_token(&app).await;
    let set_policy = "mutation($alias: String!, $rules: [String!]!) { setPromotionPolicy(model: \"spam\", alias: $alias, \
                      rules: $rules) { promotionPolicies { alias rules } } }";
    let rules = json!([
        "accuracy >= 0",
        "f1 >= current + 2",
        "recall[positive] >= 0"
    ]);
    let body = app
        .graphql(set_policy, json!({ "alias": "production", "rules": rules }))
        .await;
    assert_eq!(
        body["data"]["setPromotionPolicy"]["promotionPolicies"],
        json!([{ "alias": "production", "rules": rules }]),
        "{body}"
    );

    // A malformed rule says which and where, and the policy stays as it was.
    let body = app
        .graphql(
            set_policy,
            json!({ "alias": "production", "rules": ["accuracy >= 0.5", "acc >= 1"] }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "rules[1]");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("at character 1: unknown metric `acc`"),
        "{message}"
    );
    // Numbers are written as in JSON; a label holds no control characters.
    for (rule, says) in [
        (
            ".5",
            "at character 13: expected a number written as in JSON",
        ),
        (
            "5.",
            "at character 13: expected a number written as in JSON",
        ),
        (
            "1e999",
            "at character 13: expected a number written as in JSON",
        ),
    ] {
        let body = app
            .graphql(
                set_policy,
                json!({ "alias": "staging", "rules": [format!("accuracy >= {rule}")] }),
            )
            .await;
        refused(&body, "BAD_USER_INPUT", says);
    }
    let body = app
        .graphql(
            set_policy,
            json!({ "alias": "staging", "rules": ["recall[pos\nitive] >= 0.5"] }),
        )
        .await;
    refused(&body, "BAD_USER_INPUT", "holds no control characters");
    let body = app
        .graphql(
            set_policy,
            json!({ "alias": "staging", "rules": ["val_loss <= 1e-5", "val_loss >= -1"] }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    app.data(set_policy, json!({ "alias": "staging", "rules": [] }))
        .await;
    // A retrain from an alias that is no alias says so.
    let body = app
        .submit_job(
            json!({ "name": "x", "modelName": "spam", "task": "TABULAR_CLASSIFICATION",
            "datasetId": dataset, "baseModel": "model:spam@../x" }),
        )
        .await;
    refused(
        &body,
        "BAD_USER_INPUT",
        "the alias must start with a lowercase letter",
    );
    let body = app
        .graphql_as(
            Some(&member),
            set_policy,
            json!({ "alias": "production", "rules": [] }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let data = app
        .data(
            "{ model(name: \"spam\") { promotionPolicies { rules } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["model"]["promotionPolicies"][0]["rules"], rules);

    // While the alias points nowhere, a rule against `current` has nothing to compare with: it fails
    // closed, and only an admin's force sets the first version.
    let first = json!({ "model": "spam", "alias": "production", "version": 1 });
    let body = set_alias(&app, &member, first.clone()).await;
    refused(
        &body,
        "FAILED_PRECONDITION",
        "f1 >= current + 2: the alias points to no version, so there is nothing to compare with",
    );
    let mut forced = first;
    forced["force"] = json!(true);
    let body = set_alias(&app, &admin, forced).await;
    assert!(body.get("errors").is_none(), "{body}");

    // Version 2 cannot beat the current f1 by 2: refused with the failed rule listed.
    let body = set_alias(
        &app,
        &member,
        json!({ "model": "spam", "alias": "production", "version": 2 }),
    )
    .await;
    assert_eq!(code(&body), "FAILED_PRECONDITION", "{body}");
    let failed = body["errors"][0]["extensions"]["failedRules"]
        .as_array()
        .unwrap();
    assert_eq!(failed.len(), 1, "{body}");
    assert!(
        failed[0]
            .as_str()
            .unwrap()
            .contains("version 2: f1 >= current + 2 (got"),
        "{body}"
    );
    assert_eq!(alias_version(&app, "spam", "production").await, 1);

    // Forcing is for admins, and the history says it was forced past which rule.
    let force = json!({ "model": "spam", "alias": "production", "version": 2, "force": true, "reason": "hotfix" });
    let body = set_alias(&app, &member, force.clone()).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = set_alias(&app, &admin, force).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(alias_version(&app, "spam", "production").await, 2);
    let latest = &history(&app, "spam").await[0];
    assert_eq!(latest["forced"], true);
    assert_eq!(latest["overriddenRules"], json!(failed));

    // Deleting a guarded alias and setting it afresh would step around its rules: a member may not
    // delete it, and a set without a current version fails closed.
    let delete =
        "mutation($alias: String!) { deleteModelAlias(model: \"spam\", alias: $alias) { name } }";
    let body = app
        .graphql_as(Some(&member), delete, json!({ "alias": "production" }))
        .await;
    refused(
        &body,
        "FORBIDDEN",
        "guarded by a promotion policy; only an admin token can delete it",
    );
    assert_eq!(alias_version(&app, "spam", "production").await, 2);
    let body = set_alias(
        &app,
        &member,
        json!({ "model": "spam", "alias": "production", "version": 1 }),
    )
    .await;
    assert_eq!(code(&body), "FAILED_PRECONDITION", "{body}");

    // autoPromote: refused by the guarded alias (the job still completes), taken by an unguarded one.
    let job = train_one(
        &app,
        "spam",
        &dataset,
        json!({ "epochs": 1 }),
        Some("production"),
    )
    .await;
    assert_eq!(alias_version(&app, "spam", "production").await, 2);
    let job = app.job(&job).await;
    assert_eq!(job["modelVersion"]["version"], 3);
    let job = train_one(
        &app,
        "spam",
        &dataset,
        json!({ "epochs": 1 }),
        Some("staging"),
    )
    .await;
    assert_eq!(alias_version(&app, "spam", "staging").await, 4);
    let latest = &history(&app, "spam").await[0];
    assert_eq!(latest["by"], format!("job {job}"));
    let body = app
        .submit_job(
            json!({ "name": "x", "modelName": "spam", "task": "TABULAR_CLASSIFICATION",
            "datasetId": dataset, "autoPromote": "Bad Alias" }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "autoPromote",
        "{body}"
    );

    // An admin may delete it; the history says the policy was overridden.
    app.data(delete, json!({ "alias": "production" })).await;
    let latest = &history(&app, "spam").await[0];
    assert_eq!(
        (
            &latest["toVersion"],
            &latest["forced"],
            &latest["overriddenRules"]
        ),
        (&json!(null), &json!(true), &rules),
        "{latest}"
    );
    let body = set_alias(
        &app,
        &member,
        json!({ "model": "spam", "alias": "production", "version": 2 }),
    )
    .await;
    assert_eq!(code(&body), "FAILED_PRECONDITION", "{body}");

    // A per-label rule on a label the version does not have fails, saying so.
    app.data(
        set_policy,
        json!({ "alias": "canary", "rules": ["recall[fraud] >= 0.5"] }),
    )
    .await;
    let body = set_alias(
        &app,
        &admin,
        json!({ "model": "spam", "alias": "canary", "version": 1 }),
    )
    .await;
    refused(&body, "FAILED_PRECONDITION", "no label `fraud`");
}

on_storage!(guarded_aliases_take_only_versions_that_pass_their_rules: sqlite_local, postgres_local);

async fn versions_compare_side_by_side_with_their_lineage(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = train_versions(&app, "churn", 2).await;
    let data = app
        .data(
            "{ compareModelVersions(model: \"churn\", versions: [2, 1]) { \
               versions { version datasetSha256 baseModel hyperparameters { epochs seed } dataset { id sha256 } } \
               metrics { metric values deltas } } }",
            json!({}),
        )
        .await;
    let comparison = &data["compareModelVersions"];
    let versions = comparison["versions"].as_array().unwrap();
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(
        versions[0]["hyperparameters"],
        json!({ "epochs": 3, "seed": "2" })
    );
    assert_eq!(
        versions[1]["hyperparameters"],
        json!({ "epochs": 2, "seed": "1" })
    );
    assert_eq!(versions[0]["dataset"]["id"], dataset);
    assert_eq!(
        versions[0]["datasetSha256"],
        versions[0]["dataset"]["sha256"]
    );
    assert_eq!(versions[0]["baseModel"], Value::Null);
    let metric = |name: &str| {
        comparison["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == name)
            .unwrap_or_else(|| panic!("no {name} in {comparison}"))
            .clone()
    };
    for name in [
        "accuracy",
        "f1",
        "valLoss",
        "recall[positive]",
        "precision[negative]",
    ] {
        let m = metric(name);
        let values: Vec<f64> = m["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let deltas: Vec<f64> = m["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(deltas[0], 0.0, "{m}");
        assert!((deltas[1] - (values[1] - values[0])).abs() < 1e-12, "{m}");
    }
    let stored = app
        .data(
            "{ model(name: \"churn\") { versions { metrics { accuracy } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        metric("accuracy")["values"],
        json!([
            stored["model"]["versions"][1]["metrics"]["accuracy"],
            stored["model"]["versions"][0]["metrics"]["accuracy"]
        ])
    );

    for (versions, field) in [
        (json!([1]), "versions"),
        (json!([1, 7]), "versions[1]"),
        (json!([1, 1]), "versions[1]"),
    ] {
        let body = app
            .graphql(
                "query($v: [Int!]!) { compareModelVersions(model: \"churn\", versions: $v) { metrics { metric } } }",
                json!({ "v": versions }),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
}

on_storage!(versions_compare_side_by_side_with_their_lineage: sqlite_local, postgres_local);

async fn a_models_training_defaults_fill_what_a_submission_leaves_out(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("rows.csv", separable_tabular_csv(60, 3))
        .await;
    let set = "mutation($h: HyperparametersInput!) { setModelTrainingDefaults(model: \"tab\", hyperparameters: $h) \
               { name trainingDefaults { hyperparameters { name value } } } }";
    let body = app
        .graphql(
            set,
            json!({ "h": { "epochs": 2, "learningRate": 0.005, "hiddenSizes": [8] } }),
        )
        .await;
    assert_eq!(
        body["data"]["setModelTrainingDefaults"]["trainingDefaults"]["hyperparameters"],
        json!([{ "name": "epochs", "value": "2" }, { "name": "hiddenSizes", "value": "[8]" },
               { "name": "learningRate", "value": "0.005" }]),
        "{body}"
    );
    // A bad default is refused like a bad submission, and the stored ones stay.
    let body = app.graphql(set, json!({ "h": { "epochs": 0 } })).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "hyperparameters.epochs",
        "{body}"
    );

    let used = |job: String| {
        let app = &app;
        async move {
            app.data(
                "query($id: ID!) { job(id: $id) { hyperparameters { epochs learningRate seed hiddenSizes } } }",
                json!({ "id": job }),
            )
            .await["job"]["hyperparameters"]
                .clone()
        }
    };
    let job = app
        .queued_job(json!({ "name": "a", "modelName": "tab", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "seed": 3 } }))
        .await;
    assert_eq!(
        used(job).await,
        json!({ "epochs": 2, "learningRate": 0.005, "seed": "3", "hiddenSizes": [8] })
    );
    let job = app
        .queued_job(json!({ "name": "b", "modelName": "tab", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset,
            "hyperparameters": { "epochs": 1 } }))
        .await;
    assert_eq!(
        used(job).await["epochs"],
        1,
        "the submission's own value wins"
    );
    let job = app
        .queued_job(json!({ "name": "c", "modelName": "other", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset }))
        .await;
    assert_eq!(
        used(job).await["epochs"],
        3,
        "another model gets kiln's defaults"
    );

    // A default that does not fit a job is refused on its field, saying where it came from.
    let body = app
        .submit_job(json!({ "name": "d", "modelName": "tab", "task": "TEXT_CLASSIFICATION", "datasetId": dataset }))
        .await;
    let error = &body["errors"][0];
    assert_eq!(
        error["extensions"]["field"], "hyperparameters.hiddenSizes",
        "{body}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("applies to TABULAR_CLASSIFICATION only")
            && message.contains("model tab's training defaults"),
        "{message}"
    );

    let body = app.graphql(set, json!({ "h": {} })).await;
    assert_eq!(
        body["data"]["setModelTrainingDefaults"]["trainingDefaults"],
        Value::Null,
        "{body}"
    );
}

on_storage!(a_models_training_defaults_fill_what_a_submission_leaves_out: sqlite_local, postgres_local);
