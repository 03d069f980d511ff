//! Analytics as a client reads them: one job's numbers, the jobs since a time, jobs compared.

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, on_storage, separable_tabular_csv, spawn_app};
use crate::registry::train_one;

async fn jobs_are_summarised_one_by_one_over_time_and_side_by_side(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let dataset = app
        .ready_dataset("rows.csv", separable_tabular_csv(120, 4))
        .await;
    let first = train_one(
        &app,
        "a",
        &dataset,
        json!({ "epochs": 3, "learningRate": 0.01 }),
        None,
    )
    .await;
    let second = train_one(
        &app,
        "a",
        &dataset,
        json!({ "epochs": 2, "learningRate": 0.002 }),
        None,
    )
    .await;
    train_one(&app, "b", &dataset, json!({ "epochs": 1 }), None).await;
    let cancelled = app
        .queued_job(json!({ "name": "c", "modelName": "b", "task": "TABULAR_CLASSIFICATION", "datasetId": dataset }))
        .await;
    app.data(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": cancelled }),
    )
    .await;

    // One job.
    let data = app
        .data(
            "query($id: ID!) { job(id: $id) { progress { totalSteps } epochs { epoch valLoss } \
               metrics(name: \"train_loss\", last: 10000) { step value } \
               analytics { queuedMs trainingMs samplesPerSecondMean samplesPerSecondP50 \
                 loss { points mean median first last min minStep } bestEpoch { epoch valLoss } } } }",
            json!({ "id": first }),
        )
        .await;
    let job = &data["job"];
    let analytics = &job["analytics"];
    assert!(analytics["queuedMs"].as_i64().unwrap() >= 0, "{analytics}");
    assert!(analytics["trainingMs"].as_i64().unwrap() > 0, "{analytics}");
    assert!(
        analytics["samplesPerSecondMean"].as_f64().unwrap() > 0.0,
        "{analytics}"
    );
    assert!(
        analytics["samplesPerSecondP50"].as_f64().unwrap() > 0.0,
        "{analytics}"
    );
    let points = job["metrics"].as_array().unwrap();
    let loss = &analytics["loss"];
    assert_eq!(
        loss["points"], job["progress"]["totalSteps"],
        "one point per step"
    );
    assert_eq!(loss["points"].as_u64().unwrap() as usize, points.len());
    assert_eq!(loss["first"], points[0]["value"]);
    assert_eq!(loss["last"], points[points.len() - 1]["value"]);
    let min = points
        .iter()
        .min_by(|a, b| {
            a["value"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["value"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(
        (&loss["min"], &loss["minStep"]),
        (&min["value"], &min["step"])
    );
    let best = job["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .min_by(|a, b| {
            a["valLoss"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["valLoss"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(analytics["bestEpoch"]["epoch"], best["epoch"]);

    // The whole series in fewer points: means of equal runs of steps, each at its last step.
    let series = app
        .data(
            "query($id: ID!) { job(id: $id) { all: metricSeries(name: \"train_loss\") { step value } \
               four: metricSeries(name: \"train_loss\", points: 4) { step value } } }",
            json!({ "id": first }),
        )
        .await;
    assert_eq!(
        series["job"]["all"].as_array().unwrap(),
        points,
        "short enough to come whole"
    );
    let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    let last_step = *steps.last().unwrap();
    let width = (last_step + 3) / 4;
    let four = series["job"]["four"].as_array().unwrap();
    assert!(four.len() <= 4 && four.len() > 1, "{four:?}");
    for (bucket, point) in four.iter().enumerate() {
        let members: Vec<f64> = points
            .iter()
            .filter(|p| (p["step"].as_i64().unwrap() - 1) / width == bucket as i64)
            .map(|p| p["value"].as_f64().unwrap())
            .collect();
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        assert!(
            (point["value"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{point} against {members:?}"
        );
        let end = ((bucket as i64 + 1) * width).min(last_step);
        assert_eq!(point["step"], end, "a run answers at its last step");
    }
    let body = app
        .graphql(
            "query($id: ID!) { job(id: $id) { metricSeries(name: \"train_loss\", points: 0) { step } } }",
            json!({ "id": first }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "points", "{body}");

    // Since a time.
    let summary = "query($since: String!) { jobsSummary(since: $since) { since all { total byStatus { status count } \
                   meanQueueWaitMs meanRunMs } perModel { modelName jobs { total byStatus { status count } meanRunMs } } } }";
    let data = app.data(summary, json!({ "since": "2000-01-01" })).await;
    let all = &data["jobsSummary"]["all"];
    assert_eq!(all["total"], 4);
    assert_eq!(
        all["byStatus"],
        json!([{ "status": "CANCELLED", "count": 1 }, { "status": "COMPLETED", "count": 3 }])
    );
    assert!(all["meanRunMs"].as_f64().unwrap() > 0.0, "{all}");
    assert!(all["meanQueueWaitMs"].as_f64().unwrap() >= 0.0, "{all}");
    let per_model: Vec<(Value, Value)> = data["jobsSummary"]["perModel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["modelName"].clone(), m["jobs"]["total"].clone()))
        .collect();
    assert_eq!(
        per_model,
        vec![(json!("a"), json!(2)), (json!("b"), json!(2))]
    );
    let data = app
        .data(summary, json!({ "since": "2999-01-01T00:00:00Z" }))
        .await;
    assert_eq!(data["jobsSummary"]["all"]["total"], 0);
    assert_eq!(data["jobsSummary"]["all"]["meanRunMs"], Value::Null);
    let body = app.graphql(summary, json!({ "since": "last week" })).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "since", "{body}");

    // Side by side.
    let compare = "query($ids: [ID!]!) { compareJobs(ids: $ids) { jobs { id } hyperparameters { name values differs } \
                   metrics { metric values deltas } } }";
    let data = app.data(compare, json!({ "ids": [first, second] })).await;
    let comparison = &data["compareJobs"];
    assert_eq!(
        comparison["jobs"],
        json!([{ "id": first }, { "id": second }])
    );
    let settings = comparison["hyperparameters"].as_array().unwrap();
    let setting = |name: &str| {
        settings
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(setting("epochs")["values"], json!(["3", "2"]));
    assert_eq!(setting("epochs")["differs"], true);
    assert_eq!(setting("learningRate")["differs"], true);
    assert_eq!(setting("batchSize")["differs"], false);
    let differing: Vec<bool> = settings
        .iter()
        .map(|s| s["differs"].as_bool().unwrap())
        .collect();
    assert!(
        differing.windows(2).all(|w| w[0] >= w[1]),
        "those that differ come first"
    );
    let accuracy = comparison["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "accuracy")
        .unwrap();
    assert_eq!(accuracy["deltas"][0], 0.0);

    // A job that never ran compares with no metrics.
    let data = app
        .data(compare, json!({ "ids": [first, cancelled] }))
        .await;
    let accuracy = data["compareJobs"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "accuracy")
        .unwrap()
        .clone();
    assert_eq!(accuracy["values"][1], Value::Null);
    for (ids, field) in [
        (json!([first]), "ids"),
        (json!([first, "nope"]), "ids[1]"),
        (json!([first, first]), "ids[1]"),
    ] {
        let body = app.graphql(compare, json!({ "ids": ids })).await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
}

on_storage!(jobs_are_summarised_one_by_one_over_time_and_side_by_side: sqlite_local, postgres_local);
