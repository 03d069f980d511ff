//! What a request may cost: documents that would take exponential work, queries that multiply list
//! sizes, and the codes of errors the GraphQL layer raises itself.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Db, Objects, TestApp, spawn_app};

/// `fragment Fn on ApiToken { ...Fn-1 ...Fn-1 }`: 2^levels fields once expanded, in about 50 bytes a level.
fn fragment_bomb(levels: usize) -> String {
    let mut q = String::from("fragment F0 on ApiToken { id name }\n");
    for i in 1..=levels {
        q.push_str(&format!(
            "fragment F{i} on ApiToken {{ ...F{} ...F{} }}\n",
            i - 1,
            i - 1
        ));
    }
    q.push_str(&format!("{{ me {{ ...F{levels} }} }}"));
    q
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn healthz_latency(app: &TestApp) -> Duration {
    let started = Instant::now();
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    started.elapsed()
}

#[tokio::test]
async fn a_doubling_fragment_chain_is_refused_at_once_and_the_server_stays_responsive() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let bomb = fragment_bomb(26);
    assert!(bomb.len() < 1600, "{}", bomb.len());

    let started = Instant::now();
    let (first, second, health) = tokio::join!(
        app.graphql(&bomb, json!({})),
        app.graphql(&bomb, json!({})),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            healthz_latency(&app).await
        }
    );
    let elapsed = started.elapsed();

    for body in [&first, &second] {
        assert_eq!(code(body), "QUERY_TOO_COMPLEX", "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "two refusals took {elapsed:?}"
    );
    assert!(
        health < Duration::from_secs(1),
        "/healthz took {health:?} while they were refused"
    );
}

#[tokio::test]
async fn list_sizes_count_towards_a_querys_complexity() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let job = "query { jobs(first: 1) { nodes { metrics(last: 10000) { step value } } } }";
    let alone = app.graphql(job, json!({})).await;
    assert!(alone.get("errors").is_none(), "{alone}");

    let aliased: String = (0..1000)
        .map(|i| format!("m{i}: metrics(last: 10000) {{ step }} "))
        .collect();
    let body = app
        .graphql(
            &format!("{{ jobs(first: 1) {{ nodes {{ {aliased} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");

    let pages = |n: usize| -> String {
        (0..n)
            .map(|i| format!("j{i}: jobs(first: 100) {{ nodes {{ metrics {{ value }} }} }} "))
            .collect()
    };
    let body = app
        .graphql(&format!("{{ {} }}", pages(1250)), json!({}))
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    // Even a hundred such pages are far beyond the complexity limit.
    let body = app
        .graphql(&format!("{{ {} }}", pages(100)), json!({}))
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("first/last"), "{message}");
}

#[tokio::test]
async fn deeply_nested_documents_are_refused_before_parsing() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let deep = format!("{}{}", "{ me ".repeat(20_000), "}".repeat(20_000));

    let body = app.graphql(&deep, json!({})).await;

    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let values = format!(
        "{{ jobs(modelName: {}\"x\"{}) {{ totalCount }} }}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let body = app.graphql(&values, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(healthz_latency(&app).await < Duration::from_secs(1));
}

#[tokio::test]
async fn errors_raised_by_the_graphql_layer_carry_a_code_and_real_locations() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;

    let parse = app.graphql("{ jobs { totalCount }", json!({})).await;
    assert_eq!(code(&parse), "GRAPHQL_PARSE_FAILED", "{parse}");
    let line = parse["errors"][0]["locations"][0]["line"].as_i64().unwrap();
    assert!(line >= 1, "{parse}");

    let unknown = app.graphql("{ jobs { nope } }", json!({})).await;
    assert_eq!(code(&unknown), "GRAPHQL_VALIDATION_FAILED", "{unknown}");
    assert_eq!(unknown["errors"][0]["locations"][0]["line"], 1, "{unknown}");

    let overflow = app
        .graphql(
            "query($first: Int) { jobs(first: $first) { totalCount } }",
            json!({ "first": 99_999_999_999i64 }),
        )
        .await;
    // Variables are checked with the document.
    assert_eq!(code(&overflow), "GRAPHQL_VALIDATION_FAILED", "{overflow}");
    let message = overflow["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("2147483647"), "{message}");

    // Refused before the schema: no made-up position.
    let unauthenticated = app
        .graphql_as(None, "{ jobs { totalCount } }", json!({}))
        .await;
    assert_eq!(code(&unauthenticated), "UNAUTHENTICATED");
    assert!(
        unauthenticated["errors"][0].get("locations").is_none(),
        "{unauthenticated}"
    );
}

#[tokio::test]
async fn log_lines_and_compared_jobs_count_towards_a_querys_complexity() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let one = app
        .graphql(
            "{ jobs(first: 1) { nodes { logs(last: 1000) { seq message } } } }",
            json!({}),
        )
        .await;
    assert!(one.get("errors").is_none(), "{one}");
    // A page of jobs, each with a thousand lines: a hundred thousand lines.
    let page = app
        .graphql(
            "{ jobs(first: 100) { nodes { logs(last: 1000) { seq message } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&page), "QUERY_TOO_COMPLEX", "{page}");
    let aliased: String = (0..10)
        .map(|i| format!("l{i}: job(id: \"x\") {{ logs(last: 1000) {{ message }} }} "))
        .collect();
    let body = app.graphql(&format!("{{ {aliased} }}"), json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");

    let ids: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    let compare = |n: usize| {
        let fields: String = (0..n)
            .map(|i| {
                format!(
                    "c{i}: compareJobs(ids: $ids) {{ jobs {{ id name status }} \
                     hyperparameters {{ name values differs }} metrics {{ metric values deltas }} }} "
                )
            })
            .collect();
        format!("query($ids: [ID!]!) {{ {fields} }}")
    };
    let body = app.graphql(&compare(100), json!({ "ids": ids })).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    // One comparison is no more than it was: refused for its unknown jobs, not its cost.
    let body = app.graphql(&compare(1), json!({ "ids": ids })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
}

#[tokio::test]
async fn fields_come_back_in_the_order_the_document_asks_for_them() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", crate::helpers::separable_text_jsonl(20, 1))
        .await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(
            app.queued_job(
                json!({ "name": name, "modelName": "m", "task": "TEXT_CLASSIFICATION",
                "datasetId": dataset }),
            )
            .await,
        );
    }
    let query = "query($a: ID!, $b: ID!, $c: ID!) { zeta: job(id: $c) { name } alpha: job(id: $a) { name } \
                 count: jobs { totalCount } mid: job(id: $b) { name } me { name } beta: job(id: $a) { id } }";
    let text = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&app.token)
        .json(&json!({ "query": query, "variables": { "a": ids[0], "b": ids[1], "c": ids[2] } }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |key: &str| {
        text.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    let order = ["zeta", "alpha", "count", "mid", "me", "beta"].map(at);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}
