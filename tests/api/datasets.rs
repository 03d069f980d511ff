use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{Db, Objects, separable_tabular_csv, separable_text_jsonl, spawn_app};

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
    let stored = app.stored_dataset(id, "jsonl");
    assert_eq!(stored, bytes);
}

#[tokio::test]
async fn a_valid_text_upload_is_ready_with_statistics_on_sqlite_and_local_files() {
    a_valid_text_upload_is_ready_with_statistics(Db::Sqlite, Objects::Local).await;
}

#[tokio::test]
async fn a_valid_text_upload_is_ready_with_statistics_on_postgres_and_s3() {
    a_valid_text_upload_is_ready_with_statistics(Db::Postgres, Objects::S3).await;
}

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
    let stored = app.stored_dataset(id, "jsonl");
    assert!(stored == bytes, "the stored object differs from the upload");
}
