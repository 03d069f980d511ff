use serde_json::json;

use crate::helpers::{Db, Objects, spawn_app};

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_as_unauthenticated() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;

    for token in [None, Some("kiln_not_a_real_token")] {
        let body = app
            .graphql_as(token, "{ jobs { nodes { id } } }", json!({}))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{body}"
        );
        assert!(body["data"].is_null(), "{body}");
    }

    for token in [None, Some("kiln_wrong")] {
        let refused = app
            .connect_ws(token)
            .await
            .err()
            .expect("a WebSocket without a valid token is refused");
        // kiln's own refusal: a close frame whose reason carries the error code, not any failure.
        assert!(
            refused.starts_with("4403 UNAUTHENTICATED: "),
            "close frame for {token:?}: {refused:?}"
        );
    }
    assert!(
        app.connect_ws(Some(&app.token)).await.is_ok(),
        "the same socket with a valid token is accepted"
    );
}

#[tokio::test]
async fn an_admin_mints_a_token_that_then_works_and_is_stored_hashed() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;

    let data = app
        .data(
            "mutation { createApiToken(name: \"ci\") { token apiToken { id name role } } }",
            json!({}),
        )
        .await;
    let token = data["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(token.starts_with("kiln_") && token.len() > 40);
    assert_eq!(data["createApiToken"]["apiToken"]["role"], "member");

    let body = app
        .graphql_as(Some(&token), "{ me { name role } }", json!({}))
        .await;
    assert_eq!(body["data"]["me"]["name"], "ci", "{body}");

    // A member may not mint tokens.
    let body = app
        .graphql_as(
            Some(&token),
            "mutation { createApiToken(name: \"x\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );

    // Only the hash is in the database.
    let db = std::fs::read(app.dir.path().join("kiln.db")).unwrap();
    let needle = token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "the plain token is stored"
    );
}

#[tokio::test]
async fn an_oversized_request_body_is_refused_without_being_read() {
    let app = spawn_app(crate::helpers::Db::Sqlite, crate::helpers::Objects::Local).await;
    let huge = format!(
        "{{\"query\": \"{{ jobs {{ totalCount }} }}\", \"padding\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );

    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
}

#[tokio::test]
async fn a_replaced_admin_token_stops_working_and_a_short_one_is_refused_at_start() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let old = app.token.clone();
    let mut config = app.config.clone();
    let replacement = "kiln_replacement_admin_token_0123456789abcdef";
    config.admin_token = Some(kiln::config::Secret::new(replacement));
    let mut app = app.restart_with(config.clone()).await;

    let refused = app
        .graphql_as(Some(&old), "{ me { name } }", json!({}))
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    let accepted = app
        .graphql_as(Some(replacement), "{ me { role } }", json!({}))
        .await;
    assert_eq!(accepted["data"]["me"]["role"], "admin", "{accepted}");

    app.stop().await;
    config.admin_token = Some(kiln::config::Secret::new("short"));
    let error = kiln::app::App::build(config)
        .await
        .err()
        .expect("kiln refuses to start");
    assert!(
        format!("{error:#}").contains("KILN_ADMIN_TOKEN must be at least 32"),
        "{error:#}"
    );
}

#[tokio::test]
async fn the_dashboard_and_graphiql_are_served_whole_by_kiln() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    for path in ["/", "/graphiql"] {
        let page = app
            .client
            .get(app.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let assets: Vec<String> = page
            .split(['"', '\''])
            .filter(|s| s.ends_with(".js") || s.ends_with(".css"))
            .map(String::from)
            .collect();
        assert!(assets.len() >= 4, "{path}: {assets:?}");
        check_assets(&app, assets).await;
    }
}

/// Each asset is kiln's own and served; a JavaScript module's imports too.
async fn check_assets(app: &crate::helpers::TestApp, mut assets: Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    while let Some(asset) = assets.pop() {
        if !seen.insert(asset.clone()) {
            continue;
        }
        assert!(
            asset.starts_with("/playground/"),
            "{asset} is not kiln's own"
        );
        let response = app.client.get(app.url(&asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            kind.starts_with("text/javascript") || kind.starts_with("text/css"),
            "{asset}: {kind}"
        );
        if asset.ends_with(".js") {
            let text = response.text().await.unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let base = &asset[..asset.rfind('/').unwrap() + 1];
                let resolved = if spec.starts_with('/') {
                    spec.to_string()
                } else {
                    let mut parts: Vec<&str> = base.trim_end_matches('/').split('/').collect();
                    for piece in spec.split('/') {
                        match piece {
                            "." => {}
                            ".." => {
                                parts.pop();
                            }
                            other => parts.push(other),
                        }
                    }
                    parts.join("/")
                };
                assets.push(resolved);
            }
        }
    }
}
