//! The training loop shared by every model: split, batches, AdamW, schedule, evaluation, export.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{D, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokenizers::Tokenizer;

use super::bert::{BertClassifier, BertConfig};
use super::metrics::{EpochMetrics, classification};
use super::mlp::{Mlp, Standardizer};
use super::params::Params;
use super::{
    BaseModel, Interrupt, ProgressSink, StepReport, TrainData, TrainOutcome, TrainSpec,
    TrainedModel,
};

const WEIGHT_DECAY: f64 = 0.01;
/// Share of all steps spent warming the learning rate up from 0.
const WARMUP_SHARE: f64 = 0.1;

/// A model plus what turns examples into its input.
enum Net {
    Text {
        model: BertClassifier,
        tokenizer: Box<Tokenizer>,
        token_ids: Vec<Vec<u32>>,
        pad_id: u32,
        base: String,
    },
    Tabular {
        model: Mlp,
        standardizer: Standardizer,
        feature_names: Vec<String>,
        features: Vec<Vec<f32>>,
    },
}

impl Net {
    fn logits(&self, batch: &[usize], rng: Option<&mut StdRng>, device: &Device) -> Result<Tensor> {
        match self {
            Net::Text {
                model,
                token_ids,
                pad_id,
                ..
            } => {
                let seq = batch
                    .iter()
                    .map(|&i| token_ids[i].len())
                    .max()
                    .unwrap_or(1)
                    .max(1);
                let mut ids = Vec::with_capacity(batch.len() * seq);
                let mut mask = Vec::with_capacity(batch.len() * seq);
                for &i in batch {
                    let row = &token_ids[i];
                    ids.extend_from_slice(row);
                    ids.extend(std::iter::repeat_n(*pad_id, seq - row.len()));
                    mask.extend(std::iter::repeat_n(1u32, row.len()));
                    mask.extend(std::iter::repeat_n(0u32, seq - row.len()));
                }
                let ids = Tensor::from_vec(ids, (batch.len(), seq), device)?;
                let mask = Tensor::from_vec(mask, (batch.len(), seq), device)?;
                model.forward(&ids, &mask, rng)
            }
            Net::Tabular {
                model,
                standardizer,
                features,
                ..
            } => {
                let rows: Vec<&Vec<f32>> = batch.iter().map(|&i| &features[i]).collect();
                model.forward(&standardizer.tensor(&rows, device)?, rng)
            }
        }
    }
}

/// Trains the model `spec` describes. Returns `Interrupted` as soon as `interrupt` asks, checked before
/// every step; errors carry a readable chain ("reading config.json: …").
pub fn run(
    spec: &TrainSpec,
    sink: &mut dyn ProgressSink,
    interrupt: &dyn Interrupt,
) -> Result<TrainOutcome> {
    let n = spec.data.len();
    let num_labels = spec.label_names.len();
    ensure!(
        n >= 2,
        "the dataset has {n} examples; training needs at least 2"
    );
    ensure!(
        num_labels >= 2,
        "the dataset has {num_labels} label(s); classification needs at least 2"
    );
    ensure!(
        spec.data
            .labels()
            .iter()
            .all(|&l| (l as usize) < num_labels),
        "a label index is out of range"
    );
    let hyper = &spec.hyper;
    let device = &spec.device;

    // Hold out the validation split with the seed.
    let mut rng = StdRng::seed_from_u64(hyper.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let n_val = ((n as f64 * hyper.validation_split).round() as usize).clamp(1, n - 1);
    let (val_idx, train_idx) = order.split_at(n_val);
    let (val_idx, mut train_idx) = (val_idx.to_vec(), train_idx.to_vec());
    let labels = spec.data.labels();

    let mut params = Params::new(hyper.seed, device);
    let net = build(spec, &mut params, &train_idx)?;
    let parameter_count = params.parameter_count();

    let mut opt = AdamW::new(
        params.all_vars(),
        ParamsAdamW {
            lr: hyper.learning_rate,
            weight_decay: WEIGHT_DECAY,
            ..Default::default()
        },
    )?;
    let batch_size = hyper.batch_size as usize;
    let steps_per_epoch = train_idx.len().div_ceil(batch_size) as u64;
    let total_steps = steps_per_epoch * hyper.epochs as u64;
    let warmup = ((total_steps as f64 * WARMUP_SHARE).round() as u64).max(1);
    let lr_at = |step: u64| -> f64 {
        if step <= warmup {
            hyper.learning_rate * step as f64 / warmup as f64
        } else {
            let remaining = (total_steps - step + 1) as f64 / (total_steps - warmup + 1) as f64;
            hyper.learning_rate * remaining
        }
    };

    let started = Instant::now();
    let mut step = 0u64;
    let mut last = None;
    for epoch in 1..=hyper.epochs {
        train_idx.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        for batch in train_idx.chunks(batch_size) {
            if interrupt.should_stop() {
                return Ok(TrainOutcome::Interrupted {
                    epochs_done: epoch - 1,
                });
            }
            let step_started = Instant::now();
            step += 1;
            let logits = net.logits(batch, Some(&mut rng), device)?;
            let targets = label_tensor(labels, batch, device)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let lr = lr_at(step);
            opt.set_learning_rate(lr);
            opt.backward_step(&loss)?;
            let loss = loss.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                bail!(
                    "the loss became {loss} at step {step} (epoch {epoch}); try a lower learning rate"
                );
            }
            loss_sum += loss * batch.len() as f64;
            seen += batch.len();
            sink.on_step(&StepReport {
                step,
                total_steps,
                epoch,
                total_epochs: hyper.epochs,
                loss,
                learning_rate: lr,
                samples_per_second: batch.len() as f64
                    / step_started.elapsed().as_secs_f64().max(1e-9),
                elapsed_seconds: started.elapsed().as_secs_f64(),
            });
        }
        let (val_loss, accuracy, precision, recall, f1) =
            evaluate(&net, &val_idx, labels, num_labels, batch_size, device)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss,
            accuracy,
            precision,
            recall,
            f1,
        };
        sink.on_epoch(&metrics);
        last = Some(metrics);
    }
    let final_metrics = last.context("training ran no epoch")?;
    let files = export(spec, &net, &params, &final_metrics, parameter_count)?;
    Ok(TrainOutcome::Completed(TrainedModel {
        files,
        final_metrics,
        parameter_count,
    }))
}

fn label_tensor(labels: &[u32], batch: &[usize], device: &Device) -> Result<Tensor> {
    let values: Vec<u32> = batch.iter().map(|&i| labels[i]).collect();
    Ok(Tensor::from_vec(values, batch.len(), device)?)
}

fn build(spec: &TrainSpec, params: &mut Params, train_idx: &[usize]) -> Result<Net> {
    let num_labels = spec.label_names.len();
    let max_len = spec.hyper.max_seq_length as usize;
    match &spec.data {
        TrainData::Text { texts, .. } => {
            let (model, tokenizer, base) = match &spec.base {
                BaseModel::Pretrained(dir) => {
                    let config = BertConfig::read(&dir.join("config.json"))?;
                    let max_len = max_len.min(config.max_position_embeddings);
                    let tokenizer = super::tokenizer::load(&dir.join("tokenizer.json"), max_len)?;
                    let model = BertClassifier::new(params, config, num_labels)?;
                    params.load_prefixed(&dir.join("model.safetensors"), "bert.")?;
                    (model, tokenizer, dir.display().to_string())
                }
                BaseModel::Random(size) => {
                    let tokenizer = super::tokenizer::fit(
                        train_idx.iter().map(|&i| texts[i].as_str()),
                        max_len,
                    )?;
                    let config = BertConfig::small(size, tokenizer.get_vocab_size(true), max_len);
                    (
                        BertClassifier::new(params, config, num_labels)?,
                        tokenizer,
                        "random".to_string(),
                    )
                }
            };
            ensure!(
                tokenizer.get_vocab_size(true) <= model.config.vocab_size,
                "the tokenizer has {} tokens but the model's vocabulary holds {}",
                tokenizer.get_vocab_size(true),
                model.config.vocab_size
            );
            let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
            let mut unpadded = tokenizer.clone();
            unpadded.with_padding(None);
            let token_ids = unpadded
                .encode_batch(texts.iter().map(|t| t.as_str()).collect::<Vec<_>>(), true)
                .map_err(|e| anyhow::anyhow!("tokenizing the texts: {e}"))?
                .into_iter()
                .map(|e| e.get_ids().to_vec())
                .collect();
            Ok(Net::Text {
                model,
                tokenizer: Box::new(tokenizer),
                token_ids,
                pad_id,
                base,
            })
        }
        TrainData::Tabular {
            feature_names,
            features,
            ..
        } => {
            let rows: Vec<&Vec<f32>> = train_idx.iter().map(|&i| &features[i]).collect();
            let standardizer = Standardizer::fit(&rows);
            let model = Mlp::new(params, feature_names.len(), num_labels)?;
            Ok(Net::Tabular {
                model,
                standardizer,
                feature_names: feature_names.clone(),
                features: features.clone(),
            })
        }
    }
}

/// Validation loss (mean over examples) and metrics, without dropout.
fn evaluate(
    net: &Net,
    val_idx: &[usize],
    labels: &[u32],
    num_labels: usize,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64, f64, f64, f64)> {
    let mut loss_sum = 0.0;
    let mut predicted = Vec::with_capacity(val_idx.len());
    let mut actual = Vec::with_capacity(val_idx.len());
    for batch in val_idx.chunks(batch_size) {
        let logits = net.logits(batch, None, device)?;
        let targets = label_tensor(labels, batch, device)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?.to_scalar::<f32>()? as f64;
        loss_sum += loss * batch.len() as f64;
        predicted.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        actual.extend(batch.iter().map(|&i| labels[i]));
    }
    let (accuracy, precision, recall, f1) = classification(&predicted, &actual, num_labels);
    Ok((
        loss_sum / val_idx.len().max(1) as f64,
        accuracy,
        precision,
        recall,
        f1,
    ))
}

/// Writes the model's files to the output directory and returns their names.
fn export(
    spec: &TrainSpec,
    net: &Net,
    params: &Params,
    metrics: &EpochMetrics,
    parameter_count: usize,
) -> Result<Vec<String>> {
    let dir = &spec.output_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    params.save(&dir.join("model.safetensors"))?;
    let mut files = vec!["model.safetensors".to_string()];
    let mut manifest = serde_json::json!({
        "formatVersion": 1,
        "task": spec.task,
        "labels": spec.label_names,
        "hyperparameters": spec.hyper,
        "metrics": metrics,
        "parameterCount": parameter_count,
    });
    match net {
        Net::Text {
            model,
            tokenizer,
            base,
            ..
        } => {
            write_json(
                dir,
                "config.json",
                &model.config.for_classifier(&spec.label_names),
            )?;
            super::tokenizer::save(tokenizer, &dir.join("tokenizer.json"))?;
            files.extend(["config.json".to_string(), "tokenizer.json".to_string()]);
            manifest["architecture"] = "bert".into();
            manifest["pooling"] = "mean".into();
            manifest["baseModel"] = base.clone().into();
            manifest["maxSeqLength"] = spec.hyper.max_seq_length.into();
        }
        Net::Tabular {
            standardizer,
            feature_names,
            ..
        } => {
            manifest["architecture"] = "mlp".into();
            manifest["hiddenSizes"] = serde_json::json!([super::mlp::HIDDEN, super::mlp::HIDDEN]);
            manifest["features"] = serde_json::json!(feature_names);
            manifest["standardization"] = serde_json::to_value(standardizer)?;
        }
    }
    write_json(dir, "kiln.json", &manifest)?;
    files.push("kiln.json".to_string());
    Ok(files)
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}
