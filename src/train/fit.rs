//! The training loop shared by every model: split, batches, AdamW, schedule, evaluation, checkpoints,
//! resumption, export.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokenizers::Tokenizer;

use super::bert::{BertClassifier, BertConfig};
use super::checkpoint::{self, Checkpoint, CheckpointManifest};
use super::memory;
use super::metrics::classification;
use super::mlp::{Mlp, Standardizer};
use super::optim::{Optimizer, OptimizerKind, check_kind};
use super::params::Params;
use super::{Interrupt, ProgressSink, StepReport, TrainOutcome, TrainSpec, TrainedModel};
use crate::domain::{
    EpochMetrics, ExampleKind, Examples, ModelArchitecture, ModelManifest, Pooling, UserError,
};

const WEIGHT_DECAY: f64 = 0.01;
/// Share of all steps spent warming the learning rate up from 0.
const WARMUP_SHARE: f64 = 0.1;

/// A model plus what turns examples into its input. Rows are read and encoded a batch at a time.
enum Net {
    Text {
        model: BertClassifier,
        /// As exported: pads each batch to its longest sequence.
        tokenizer: Box<Tokenizer>,
        /// The same without padding, for encoding batches.
        encoder: Box<Tokenizer>,
        pad_id: u32,
    },
    Tabular {
        model: Mlp,
        standardizer: Standardizer,
        feature_names: Vec<String>,
    },
}

impl Net {
    fn logits(
        &self,
        data: &dyn Examples,
        batch: &[usize],
        rng: Option<&mut StdRng>,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Net::Text {
                model,
                encoder,
                pad_id,
                ..
            } => {
                let texts = batch
                    .iter()
                    .map(|&i| data.text(i))
                    .collect::<Result<Vec<_>>>()?;
                let encodings = encoder
                    .encode_batch(texts, true)
                    .map_err(|e| anyhow::anyhow!("tokenizing a batch: {e}"))?;
                let seq = encodings
                    .iter()
                    .map(|e| e.get_ids().len())
                    .max()
                    .unwrap_or(1)
                    .max(1);
                let mut ids = Vec::with_capacity(batch.len() * seq);
                let mut mask = Vec::with_capacity(batch.len() * seq);
                for encoding in &encodings {
                    let row = encoding.get_ids();
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
                ..
            } => {
                let rows = batch
                    .iter()
                    .map(|&i| data.features(i))
                    .collect::<Result<Vec<_>>>()?;
                model.forward(&standardizer.tensor(&rows, device)?, rng)
            }
        }
    }
}

/// Trains the model `spec` describes, from the start or from `spec.resume`. Returns `Interrupted` as
/// soon as `interrupt` asks, checked before every step (writing a checkpoint first when it asks for
/// one); errors carry a readable chain ("reading config.json: …").
pub fn run(
    spec: &TrainSpec,
    sink: &mut dyn ProgressSink,
    interrupt: &dyn Interrupt,
) -> Result<TrainOutcome> {
    let data = spec.data.as_ref();
    let n = data.len();
    let num_labels = data.label_names().len();
    if n < 2 {
        bail!(UserError::new(format!(
            "the dataset has {n} examples; training needs at least 2"
        )));
    }
    if num_labels < 2 {
        bail!(UserError::new(format!(
            "the dataset has {num_labels} label(s); classification needs at least 2"
        )));
    }
    ensure!(
        data.labels().iter().all(|&l| (l as usize) < num_labels),
        "a label index is out of range"
    );
    let hyper = &spec.settings.hyperparameters;
    let device = &spec.device;

    // Hold out the validation split with the seed.
    let mut split_rng = StdRng::seed_from_u64(hyper.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut split_rng);
    let n_val = ((n as f64 * hyper.validation_split).round() as usize).clamp(1, n - 1);
    let (val_idx, train_idx) = order.split_at(n_val);
    let labels = data.labels();

    let mut params = Params::new(hyper.seed, device);
    let net = build(spec, &mut params, train_idx)?;
    let parameter_count = params.parameter_count();
    let mut opt = Optimizer::new(
        OptimizerKind::adamw(WEIGHT_DECAY),
        params.named_vars(),
        hyper.learning_rate,
    );
    let mut at = match &spec.resume {
        Some(checkpoint) => resume(checkpoint, spec, &params, &mut opt)?,
        None => Position::default(),
    };

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
    let every = hyper.checkpoint_every_steps.map(u64::from);
    let mut saver = Saver {
        spec,
        params: &params,
        last_step: spec.resume.as_ref().map(|c| c.manifest.step),
    };

    let (started, before) = (Instant::now(), at.elapsed_seconds);
    let elapsed = || before + started.elapsed().as_secs_f64();
    while at.epochs_done < hyper.epochs {
        let epoch = at.epochs_done + 1;
        let epoch_order = epoch_order(train_idx, hyper.seed, epoch);
        let batches = epoch_order
            .chunks(batch_size)
            .skip(at.batches_done as usize);
        for batch in batches {
            if interrupt.should_stop() {
                if interrupt.checkpoint_on_stop() {
                    saver.save(sink, &at, &opt)?;
                }
                return Ok(TrainOutcome::Interrupted {
                    epochs_done: at.epochs_done,
                });
            }
            let step_started = Instant::now();
            let step = at.step + 1;
            let mut rng = step_rng(hyper.seed, step);
            let logits = net.logits(data, batch, Some(&mut rng), device)?;
            let targets = label_tensor(labels, batch, device)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
            let lr = lr_at(step);
            opt.set_learning_rate(lr);
            opt.backward_step(&loss)?;
            let loss = loss.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                bail!(UserError::new(format!(
                    "the loss became {loss} at step {step} (epoch {epoch}); try a lower learning rate"
                )));
            }
            at.step = step;
            at.batches_done += 1;
            at.loss_sum += loss * batch.len() as f64;
            at.seen += batch.len() as u64;
            at.elapsed_seconds = elapsed();
            sink.on_step(&StepReport {
                step,
                total_steps,
                epoch,
                total_epochs: hyper.epochs,
                loss,
                learning_rate: lr,
                samples_per_second: batch.len() as f64
                    / step_started.elapsed().as_secs_f64().max(1e-9),
                elapsed_seconds: at.elapsed_seconds,
            });
            // The epoch's own checkpoint follows its last batch.
            if every.is_some_and(|k| step.is_multiple_of(k)) && at.batches_done < steps_per_epoch {
                saver.save(sink, &at, &opt)?;
            }
        }
        let (val_loss, accuracy, precision, recall, f1) =
            evaluate(&net, data, val_idx, num_labels, batch_size, device)?;
        let metrics = EpochMetrics {
            epoch,
            train_loss: at.loss_sum / at.seen.max(1) as f64,
            val_loss,
            accuracy,
            precision,
            recall,
            f1,
        };
        sink.on_epoch(&metrics);
        at = Position {
            step: at.step,
            epochs_done: epoch,
            last_epoch: Some(metrics),
            elapsed_seconds: elapsed(),
            ..Position::default()
        };
        saver.save(sink, &at, &opt)?;
    }
    let final_metrics = at.last_epoch.context("training ran no epoch")?;
    let model = export(spec, &net, &params, final_metrics, parameter_count)?;
    Ok(TrainOutcome::Completed(Box::new(model)))
}

/// Where a run is: the step, the data cursor and the current epoch's running sums.
#[derive(Debug, Clone, Default)]
struct Position {
    step: u64,
    epochs_done: u32,
    batches_done: u64,
    loss_sum: f64,
    seen: u64,
    last_epoch: Option<EpochMetrics>,
    elapsed_seconds: f64,
}

/// Restores the weights and the optimizer from a checkpoint of this run and returns its position.
fn resume(
    checkpoint: &Checkpoint,
    spec: &TrainSpec,
    params: &Params,
    opt: &mut Optimizer,
) -> Result<Position> {
    let m = &checkpoint.manifest;
    let data = spec.data.as_ref();
    let hyper = &spec.settings.hyperparameters;
    if m.seed != hyper.seed
        || m.examples != data.len() as u64
        || m.labels.as_slice() != data.label_names()
    {
        bail!(UserError::new(
            "the checkpoint belongs to another run (its seed, examples or labels differ); start \
             without it"
        ));
    }
    if m.epochs_done > hyper.epochs {
        bail!(UserError::new(format!(
            "the checkpoint is after epoch {}, beyond this run's {} epochs",
            m.epochs_done, hyper.epochs
        )));
    }
    check_kind(&m.optimizer, opt.kind())?;
    params.restore(&checkpoint.dir.join(checkpoint::WEIGHTS))?;
    let state =
        candle_core::safetensors::load(checkpoint.dir.join(checkpoint::OPTIMIZER), &Device::Cpu)
            .context("reading the checkpoint's optimizer state")?;
    opt.restore(&state, m.optimizer_steps)?;
    Ok(Position {
        step: m.step,
        epochs_done: m.epochs_done,
        batches_done: m.batches_done,
        loss_sum: m.epoch_loss_sum,
        seen: m.epoch_examples,
        last_epoch: m.last_epoch.clone(),
        elapsed_seconds: m.elapsed_seconds,
    })
}

/// Writes checkpoints into the spec's checkpoint folder (none without one), at most one per step.
struct Saver<'a> {
    spec: &'a TrainSpec,
    params: &'a Params,
    last_step: Option<u64>,
}

impl Saver<'_> {
    fn save(&mut self, sink: &mut dyn ProgressSink, at: &Position, opt: &Optimizer) -> Result<()> {
        let Some(root) = &self.spec.checkpoint_dir else {
            return Ok(());
        };
        if self.last_step == Some(at.step) {
            return Ok(());
        }
        let dir = root.join(Checkpoint::folder_name(at.step));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.params.save(&dir.join(checkpoint::WEIGHTS))?;
        candle_core::safetensors::save(&opt.state()?, dir.join(checkpoint::OPTIMIZER))
            .context("writing the optimizer state")?;
        let data = self.spec.data.as_ref();
        let manifest = CheckpointManifest {
            format_version: CheckpointManifest::FORMAT_VERSION,
            step: at.step,
            epochs_done: at.epochs_done,
            batches_done: at.batches_done,
            epoch_loss_sum: at.loss_sum,
            epoch_examples: at.seen,
            last_epoch: at.last_epoch.clone(),
            optimizer: opt.kind().name().to_string(),
            optimizer_steps: opt.steps(),
            seed: self.spec.settings.hyperparameters.seed,
            examples: data.len() as u64,
            labels: data.label_names().to_vec(),
            elapsed_seconds: at.elapsed_seconds,
            files: Vec::new(),
        };
        let written = checkpoint::publish(
            &dir,
            manifest,
            &[checkpoint::WEIGHTS, checkpoint::OPTIMIZER],
        )?;
        self.last_step = Some(at.step);
        sink.on_checkpoint(&written);
        Ok(())
    }
}

/// The order of the training examples in `epoch`: the split's order shuffled by a generator of its own,
/// so any epoch's order is known without replaying the ones before it.
fn epoch_order(train_idx: &[usize], seed: u64, epoch: u32) -> Vec<usize> {
    let mut order = train_idx.to_vec();
    order.shuffle(&mut derived_rng(seed, 1, epoch as u64));
    order
}

/// The generator of one step's dropout masks.
fn step_rng(seed: u64, step: u64) -> StdRng {
    derived_rng(seed, 2, step)
}

/// A generator for one use (`stream`) and one index of it, from the run's seed.
fn derived_rng(seed: u64, stream: u64, index: u64) -> StdRng {
    let mix = |mut z: u64| {
        // splitmix64's finaliser.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let key = mix(mix(mix(seed) ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ index);
    StdRng::seed_from_u64(key)
}

fn label_tensor(labels: &[u32], batch: &[usize], device: &Device) -> Result<Tensor> {
    let values: Vec<u32> = batch.iter().map(|&i| labels[i]).collect();
    Ok(Tensor::from_vec(values, batch.len(), device)?)
}

fn build(spec: &TrainSpec, params: &mut Params, train_idx: &[usize]) -> Result<Net> {
    let data = spec.data.as_ref();
    let num_labels = data.label_names().len();
    let max_len = spec.settings.hyperparameters.max_seq_length as usize;
    match data.kind() {
        ExampleKind::Text => {
            let (model, tokenizer) = match &spec.base_dir {
                Some(dir) => {
                    let config = BertConfig::read(&dir.join("config.json"))?;
                    fits_in_memory(spec, &config, "baseModel")?;
                    let max_len = max_len.min(config.max_position_embeddings);
                    let tokenizer = super::tokenizer::load(&dir.join("tokenizer.json"), max_len)?;
                    let model = BertClassifier::new(params, config, num_labels)?;
                    params.load_prefixed(&dir.join("model.safetensors"), "bert.")?;
                    (model, tokenizer)
                }
                None => {
                    let mut counts = super::tokenizer::WordCounts::default();
                    for &i in train_idx {
                        counts.add(&data.text(i)?)?;
                    }
                    let tokenizer = counts.into_tokenizer(max_len)?;
                    let size = spec.settings.model_config.unwrap_or_default();
                    let config = BertConfig::small(&size, tokenizer.get_vocab_size(true), max_len);
                    fits_in_memory(spec, &config, "modelConfig")?;
                    (BertClassifier::new(params, config, num_labels)?, tokenizer)
                }
            };
            if tokenizer.get_vocab_size(true) > model.config.vocab_size {
                bail!(UserError::new(format!(
                    "the base model's tokenizer.json has {} tokens but its vocabulary (config.json \
                     vocab_size) holds {}; the two files do not belong together",
                    tokenizer.get_vocab_size(true),
                    model.config.vocab_size
                )));
            }
            let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
            let mut encoder = tokenizer.clone();
            encoder.with_padding(None);
            Ok(Net::Text {
                model,
                tokenizer: Box::new(tokenizer),
                encoder: Box::new(encoder),
                pad_id,
            })
        }
        ExampleKind::Tabular { feature_names } => {
            if let Some(limit) = spec.max_memory {
                let batch = spec.settings.hyperparameters.batch_size as u64;
                let estimate = memory::mlp(feature_names.len(), num_labels, batch);
                refuse(memory::refusal(&estimate, limit, "datasetId"))?;
            }
            let standardizer = Standardizer::fit(train_idx.iter().map(|&i| data.features(i)))?;
            let model = Mlp::new(params, feature_names.len(), num_labels)?;
            Ok(Net::Tabular {
                model,
                standardizer,
                feature_names: feature_names.clone(),
            })
        }
    }
}

/// Refuses a BERT run whose estimated peak memory is above the spec's limit, before anything is
/// allocated for it.
fn fits_in_memory(spec: &TrainSpec, config: &BertConfig, model_field: &str) -> Result<()> {
    let Some(limit) = spec.max_memory else {
        return Ok(());
    };
    let h = &spec.settings.hyperparameters;
    let estimate = memory::bert(
        config,
        spec.data.label_names().len(),
        h.batch_size as u64,
        h.max_seq_length as u64,
    );
    refuse(memory::refusal(&estimate, limit, model_field))
}

fn refuse(refusal: Option<(String, String)>) -> Result<()> {
    match refusal {
        Some((field, message)) => bail!(UserError::new(format!("{field}: {message}"))),
        None => Ok(()),
    }
}

/// Validation loss (mean over examples) and metrics, without dropout.
fn evaluate(
    net: &Net,
    data: &dyn Examples,
    val_idx: &[usize],
    num_labels: usize,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64, f64, f64, f64)> {
    let labels = data.labels();
    let mut loss_sum = 0.0;
    let mut predicted = Vec::with_capacity(val_idx.len());
    let mut actual = Vec::with_capacity(val_idx.len());
    for batch in val_idx.chunks(batch_size) {
        let logits = net.logits(data, batch, None, device)?;
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

/// Writes the model's files to the output directory: weights, `kiln.json` and, for text models, the
/// classifier's `config.json` and the tokenizer.
fn export(
    spec: &TrainSpec,
    net: &Net,
    params: &Params,
    metrics: EpochMetrics,
    parameter_count: usize,
) -> Result<TrainedModel> {
    let dir = &spec.output_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    params.save(&dir.join("model.safetensors"))?;
    let mut files = vec!["model.safetensors".to_string()];
    let architecture = match net {
        Net::Text {
            model, tokenizer, ..
        } => {
            let config = model.config.for_classifier(spec.data.label_names());
            write_file(dir, "config.json", &serde_json::to_vec_pretty(&config)?)?;
            super::tokenizer::save(tokenizer, &dir.join("tokenizer.json"))?;
            files.extend(["config.json".to_string(), "tokenizer.json".to_string()]);
            ModelArchitecture::Bert {
                pooling: Pooling::Mean,
                base_model: spec
                    .settings
                    .base_model
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "random".into()),
                max_seq_length: spec.settings.hyperparameters.max_seq_length,
            }
        }
        Net::Tabular {
            standardizer,
            feature_names,
            ..
        } => ModelArchitecture::Mlp {
            hidden_sizes: vec![super::mlp::HIDDEN as u32; 2],
            features: feature_names.clone(),
            standardization: standardizer.clone().into(),
        },
    };
    let manifest = ModelManifest {
        format_version: ModelManifest::FORMAT_VERSION,
        task: spec.settings.task,
        labels: spec.data.label_names().to_vec(),
        hyperparameters: spec.settings.hyperparameters.clone(),
        metrics,
        parameter_count: parameter_count as u64,
        architecture,
    };
    write_file(dir, ModelManifest::FILE_NAME, &manifest.to_json())?;
    files.push(ModelManifest::FILE_NAME.to_string());
    Ok(TrainedModel { files, manifest })
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}
