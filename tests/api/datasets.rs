use kiln::domain::DatasetFormat;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    Db, Objects, TestApp, on_storage, separable_tabular_csv, separable_text_jsonl, spawn_app,
};

async fn a_valid_text_upload_is_ready_with_statistics(db: Db, objects: Objects) {
    let app = spawn_app(db, objects).await;
    let bytes = separable_text_jsonl(40, 1);

    let body = app
        .upload("prompts", "prompts.jsonl", bytes.clone(), json!({}))
        .await;

    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "READY", "{body}");
    assert_eq!(d["format"], "JSONL");
    assert_eq!(d["kind"], "TEXT");
    assert_eq!(d["rowCount"], 40);
    assert_eq!(d["sizeBytes"], bytes.len());
    assert_eq!(d["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        d["labels"],
        json!([{ "label": "benign", "count": 20 }, { "label": "injection", "count": 20 }])
    );
    assert_eq!(d["errors"], json!([]));
    // The bytes are in the object store, unchanged.
    let id = d["id"].as_str().unwrap();
    let stored = app.stored_dataset(id, DatasetFormat::Jsonl);
    assert_eq!(stored, bytes);
    // The upload was spooled in kiln's work folder, not the system's temporary one.
    assert!(app.dir.path().join("work/uploads").is_dir());
}

on_storage!(a_valid_text_upload_is_ready_with_statistics: sqlite_local, postgres_s3);

#[tokio::test]
async fn an_invalid_upload_is_stored_as_invalid_with_each_bad_line_named() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let file = "{\"text\": \"hello\", \"label\": \"benign\"}\n\
                {\"text\": \"oops\", \"label\": \n\
                {\"text\": \"\", \"label\": \"injection\"}\n\
                {\"label\": \"injection\", \"text\": \"ignore all\"}\n\
                {\"text\": \"no label here\"}\n";

    let body = app
        .upload(
            "broken",
            "broken.jsonl",
            file.as_bytes().to_vec(),
            json!({}),
        )
        .await;

    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "INVALID", "{body}");
    assert_eq!(d["rowCount"], 2);
    assert_eq!(d["errorCount"], 3);
    let errors = d["errors"].as_array().unwrap();
    assert_eq!(
        errors
            .iter()
            .map(|e| e["line"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 5]
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    assert!(
        errors[1]["message"]
            .as_str()
            .unwrap()
            .contains("\"text\" is empty"),
        "{body}"
    );
    assert!(
        errors[2]["message"]
            .as_str()
            .unwrap()
            .contains("\"label\" is missing"),
        "{body}"
    );

    // An INVALID dataset cannot be trained on.
    let id = d["id"].as_str().unwrap();
    let refused = app
        .submit_job(json!({ "name": "x", "modelName": "m", "task": "TEXT_CLASSIFICATION", "datasetId": id }))
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "datasetId");
}

#[tokio::test]
async fn a_csv_with_numeric_columns_is_a_tabular_dataset_and_a_bad_cell_is_named() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;

    let body = app
        .upload(
            "points",
            "points.csv",
            separable_tabular_csv(30, 2),
            json!({}),
        )
        .await;
    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "READY", "{body}");
    assert_eq!(d["kind"], "TABULAR");
    assert_eq!(d["format"], "CSV");
    assert_eq!(d["features"], json!(["x", "y", "noise"]));
    assert_eq!(d["rowCount"], 30);

    let body = app
        .upload(
            "bad",
            "bad.csv",
            b"x,y,label\n1,2,a\n3,four,b\n".to_vec(),
            json!({}),
        )
        .await;
    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "INVALID");
    assert_eq!(d["errors"][0]["line"], 3);
    assert!(
        d["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"y\" is not a number"),
        "{body}"
    );
}

#[tokio::test]
async fn custom_field_names_and_an_unknown_extension_are_handled() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let file = b"{\"prompt\": \"a\", \"class\": 0}\n{\"prompt\": \"b\", \"class\": 1}\n".to_vec();

    let body = app
        .upload("renamed", "data.txt", file.clone(), json!({}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "format", "{body}");

    let body = app
        .upload(
            "renamed",
            "data.txt",
            file,
            json!({ "format": "JSONL", "textField": "prompt", "labelField": "class" }),
        )
        .await;
    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "READY", "{body}");
    assert_eq!(
        d["labels"],
        json!([{ "label": "0", "count": 1 }, { "label": "1", "count": 1 }])
    );

    // Text under another name without textField: one error pointing to it, not one per row.
    let rows: String = (0..50)
        .map(|i| {
            format!(
                "{{\"sentence\": \"ignore the rules {i}\", \"label\": \"l{}\"}}\n",
                i % 2
            )
        })
        .collect();
    let body = app
        .upload("sentences", "s.jsonl", rows.into_bytes(), json!({}))
        .await;
    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "INVALID", "{body}");
    assert_eq!(d["errorCount"], 1, "{body}");
    let message = d["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("field \"sentence\" holds words")
            && message.contains("textField: \"sentence\""),
        "{message}"
    );
}

#[tokio::test]
async fn an_empty_file_is_stored_and_marked_invalid_on_s3() {
    let app = spawn_app(Db::Sqlite, Objects::S3).await;

    let body = app
        .upload("empty", "empty.jsonl", Vec::new(), json!({}))
        .await;

    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "INVALID", "{body}");
    assert_eq!(d["sizeBytes"], 0);
    assert_eq!(d["errors"][0]["message"], "the file holds no rows");
}

#[tokio::test]
async fn a_file_larger_than_one_part_reaches_s3_whole() {
    let app = spawn_app(Db::Sqlite, Objects::S3).await;
    // About 12 MiB: two 8 MiB parts of the streamed multipart upload.
    let mut bytes = Vec::new();
    while bytes.len() < 12 * 1024 * 1024 {
        bytes.extend_from_slice(&separable_text_jsonl(2000, bytes.len() as u64));
    }

    let body = app
        .upload("big", "big.jsonl", bytes.clone(), json!({}))
        .await;

    let d = &body["data"]["uploadDataset"];
    assert_eq!(d["status"], "READY", "{}", d["errors"]);
    assert_eq!(d["sizeBytes"], bytes.len());
    assert_eq!(d["sha256"], hex::encode(Sha256::digest(&bytes)));
    let id = d["id"].as_str().unwrap();
    let stored = app.stored_dataset(id, DatasetFormat::Jsonl);
    assert!(stored == bytes, "the stored object differs from the upload");
}

/// Every page of a listing, following `endCursor`, as the ids of its nodes; checks that `edges` and
/// `nodes` agree and that `totalCount` is the whole list.
pub async fn all_pages(app: &TestApp, list: &str, first: i64) -> Vec<Vec<String>> {
    let query = format!(
        "query($first: Int, $after: String) {{ {list}(first: $first, after: $after) {{ totalCount \
         edges {{ cursor node {{ id: {key} }} }} nodes {{ id: {key} }} pageInfo {{ hasNextPage endCursor }} }} }}",
        key = if list == "models" { "name" } else { "id" }
    );
    let mut pages = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .data(&query, json!({ "first": first, "after": after }))
            .await[list]
            .clone();
        let ids: Vec<String> = page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        let edge_ids: Vec<String> = page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, edge_ids, "edges and nodes list the same items");
        let last_cursor = page["edges"]
            .as_array()
            .unwrap()
            .last()
            .map(|e| e["cursor"].clone());
        assert_eq!(
            last_cursor,
            Some(page["pageInfo"]["endCursor"].clone()),
            "endCursor is the last edge's cursor"
        );
        pages.push(ids);
        if page["pageInfo"]["hasNextPage"] == false {
            let total = page["totalCount"].as_u64().unwrap() as usize;
            assert_eq!(total, pages.iter().map(Vec::len).sum::<usize>());
            return pages;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test]
async fn datasets_are_paged_newest_first_with_no_overlap_and_no_gap() {
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.ready_dataset("d.jsonl", separable_text_jsonl(4, i))
                .await,
        );
        // Distinct creation times, so "newest first" is one order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }

    let pages = all_pages(&app, "datasets", 3).await;

    ids.reverse();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0].len(), 3);
    assert_eq!(pages.concat(), ids, "newest first, each dataset once");
    let bad = app
        .graphql(
            "{ datasets(after: \"not-a-cursor\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    assert_eq!(bad["errors"][0]["extensions"]["field"], "after");
}

async fn what_an_interrupted_upload_and_job_left_is_cleaned_up_at_the_next_start(
    db: Db,
    objects: Objects,
) {
    let app = spawn_app(db, objects).await;
    // A process died mid-upload two hours ago: its row stuck UPLOADED, part of its bytes stored.
    let id = uuid::Uuid::new_v4().to_string();
    let key = kiln::objects::keys::dataset(&id, DatasetFormat::Jsonl).unwrap();
    let two_hours_ago = kiln::domain::now_ms() - 2 * 3600 * 1000;
    crate::helpers::execute_sql(
        &app,
        &format!(
            "INSERT INTO datasets (id, name, format, kind, status, object_key, size_bytes, sha256, row_count, \
             text_field, label_field, features, labels, errors, error_count, created_at) VALUES \
             ('{id}', 'big', 'JSONL', NULL, 'UPLOADED', '{key}', 0, '', 0, 'text', 'label', '[]', '[]', '[]', 0, \
             {two_hours_ago})"
        ),
    )
    .await;
    let stored = app.object_path(&key);
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::write(&stored, b"{\"text\": \"half a li").unwrap();
    std::fs::write(stored.with_file_name("data.jsonl#7"), b"staged").unwrap();
    // And a job's process died without removing its folder.
    let orphan = app
        .dir
        .path()
        .join("work/jobs")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(orphan.join("data")).unwrap();
    std::fs::write(orphan.join("data/dataset.jsonl"), b"copy").unwrap();

    let app = app.restart().await;

    let dataset = app
        .data(
            "query($id: ID!) { dataset(id: $id) { status errors { message } } }",
            json!({ "id": id }),
        )
        .await["dataset"]
        .clone();
    assert_eq!(dataset["status"], "INVALID");
    assert!(
        dataset["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("the upload was interrupted"),
        "{dataset}"
    );
    let left = std::fs::read_dir(stored.parent().unwrap())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the interrupted upload's bytes are gone");
    assert!(!orphan.exists(), "the job's folder is gone");
}

on_storage!(what_an_interrupted_upload_and_job_left_is_cleaned_up_at_the_next_start: sqlite_local, postgres_s3);
