//! The training loop shared by every model ([`super::model`] builds them): split, batches, the
//! optimizer, the schedule, gradient accumulation and clipping, class weights, evaluation, early
//! stopping, checkpoints, resumption, export.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use candle_core::backprop::GradStore;
use candle_core::{D, Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::checkpoint::{self, Checkpoint, CheckpointManifest};
use super::export;
use super::metrics::classification;
use super::model::{Net, build};
use super::optim::{Optimizer, OptimizerKind, check_kind};
use super::params::Params;
use super::schedule::Schedule;
use super::{Interrupt, ProgressSink, StepReport, TrainOutcome, TrainSpec};
use crate::domain::{
    EarlyStopping, EpochMetrics, Examples, Hyperparams, OptimizerChoice, UserError,
};

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
    let class_weights = class_weights(hyper, data, train_idx, device)?;

    let mut params = Params::new(hyper.seed, device);
    let net = build(spec, &mut params, train_idx)?;
    let counts = params.counts();
    sink.on_start(&counts);
    let kind = match hyper.optimizer {
        OptimizerChoice::Adamw => OptimizerKind::adamw(hyper.weight_decay),
        OptimizerChoice::Sgd => OptimizerKind::Sgd {
            momentum: hyper.momentum,
            weight_decay: hyper.weight_decay,
        },
    };
    let trainable = params.trainable_vars();
    let grad_vars: Vec<Var> = trainable.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = Optimizer::new(kind, trainable.clone(), hyper.learning_rate)?
        .with_clip_norm(hyper.gradient_clip_norm);
    let mut best = Best::new(hyper.early_stopping, trainable);
    let mut at = match &spec.resume {
        Some(checkpoint) => resume(checkpoint, spec, &params, &mut opt, &mut best)?,
        None => Position::default(),
    };

    let batch_size = hyper.batch_size as usize;
    let accumulate = hyper.gradient_accumulation_steps as usize;
    let batches_per_epoch = train_idx.len().div_ceil(batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(accumulate) as u64;
    let total_steps = steps_per_epoch * hyper.epochs as u64;
    let schedule = Schedule::new(hyper, total_steps);
    let every = hyper.checkpoint_every_steps.map(u64::from);
    let mut saver = Saver {
        spec,
        params: &params,
        last_step: spec.resume.as_ref().map(|c| c.manifest.step),
    };

    let (started, before) = (Instant::now(), at.elapsed_seconds);
    let elapsed = || before + started.elapsed().as_secs_f64();
    while at.epochs_done < hyper.epochs && !best.exhausted(at.epochs_done) {
        let epoch = at.epochs_done + 1;
        let epoch_order = epoch_order(train_idx, hyper.seed, epoch);
        let batches: Vec<&[usize]> = epoch_order.chunks(batch_size).collect();
        // Checkpoints fall on step boundaries, so the cursor is a whole number of steps.
        let steps_done = (at.batches_done as usize).div_ceil(accumulate);
        for group in batches.chunks(accumulate).skip(steps_done) {
            if interrupt.should_stop() {
                if interrupt.checkpoint_on_stop() {
                    saver.save(sink, &at, &opt, &best)?;
                }
                return Ok(TrainOutcome::Interrupted {
                    epochs_done: at.epochs_done,
                });
            }
            let step_started = Instant::now();
            let step = at.step + 1;
            let mut rng = step_rng(hyper.seed, step);
            let examples: usize = group.iter().map(|b| b.len()).sum();
            let mut grads: Option<GradStore> = None;
            let mut step_loss = 0.0;
            for batch in group {
                let logits = net.logits(data, batch, Some(epoch), Some(&mut rng), device)?;
                let targets = label_tensor(labels, batch, device)?;
                let loss = loss_of(&logits, &targets, class_weights.as_ref())?;
                // The step's gradient is that of the mean loss over all its examples.
                let scaled = if group.len() == 1 {
                    loss.clone()
                } else {
                    (&loss * (batch.len() as f64 / examples as f64))?
                };
                let batch_grads = scaled.backward()?;
                grads = Some(match grads {
                    None => batch_grads,
                    Some(sum) => add_grads(sum, batch_grads, &grad_vars)?,
                });
                let loss = loss.to_scalar::<f32>()? as f64;
                if !loss.is_finite() {
                    bail!(UserError::new(format!(
                        "the loss became {loss} at step {step} (epoch {epoch}); try a lower \
                         learning rate"
                    )));
                }
                step_loss += loss * batch.len() as f64;
            }
            let lr = schedule.at(step);
            opt.set_learning_rate(lr);
            opt.step(&grads.context("a step without batches")?)?;
            at.step = step;
            at.batches_done += group.len() as u64;
            at.loss_sum += step_loss;
            at.seen += examples as u64;
            at.elapsed_seconds = elapsed();
            sink.on_step(&StepReport {
                step,
                total_steps,
                epoch,
                total_epochs: hyper.epochs,
                loss: step_loss / examples as f64,
                learning_rate: lr,
                samples_per_second: examples as f64
                    / step_started.elapsed().as_secs_f64().max(1e-9),
                elapsed_seconds: at.elapsed_seconds,
            });
            // The epoch's own checkpoint follows its last batch.
            if every.is_some_and(|k| step.is_multiple_of(k))
                && (at.batches_done as usize) < batches.len()
            {
                saver.save(sink, &at, &opt, &best)?;
            }
        }
        let metrics = evaluate(
            &net,
            data,
            val_idx,
            class_weights.as_ref(),
            batch_size,
            device,
            EpochSums {
                epoch,
                train_loss: at.loss_sum / at.seen.max(1) as f64,
            },
        )?;
        sink.on_epoch(&metrics);
        best.observe(&metrics)?;
        at = Position {
            step: at.step,
            epochs_done: epoch,
            last_epoch: Some(metrics),
            elapsed_seconds: elapsed(),
            ..Position::default()
        };
        saver.save(sink, &at, &opt, &best)?;
    }
    let last = at.last_epoch.context("training ran no epoch")?;
    let (metrics, kept_epoch) = match best.finish()? {
        Some(kept) => {
            let epoch = kept.epoch;
            (kept, Some(epoch))
        }
        None => (last, None),
    };
    let summary = export::Summary {
        metrics,
        counts,
        epochs_run: at.epochs_done,
        kept_epoch,
    };
    let model = export::write(spec, &net, &params, summary)?;
    Ok(TrainOutcome::Completed(Box::new(model)))
}

/// A step's loss: the (class-weighted) mean cross-entropy, as `torch.nn.CrossEntropyLoss(weight=…)`:
/// `Σ w[yᵢ]·nllᵢ / Σ w[yᵢ]`.
fn loss_of(logits: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let Some(weights) = weights else {
        return Ok(candle_nn::loss::cross_entropy(logits, targets)?);
    };
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let w = weights.index_select(targets, 0)?;
    let total = (picked * &w)?.sum_all()?.neg()?;
    Ok(total.broadcast_div(&w.sum_all()?)?)
}

/// The class weights as a tensor, resolved against the training split's label counts.
fn class_weights(
    hyper: &Hyperparams,
    data: &dyn Examples,
    train_idx: &[usize],
    device: &Device,
) -> Result<Option<Tensor>> {
    let Some(weights) = &hyper.class_weights else {
        return Ok(None);
    };
    let mut counts = vec![0u64; data.label_names().len()];
    for &i in train_idx {
        counts[data.labels()[i] as usize] += 1;
    }
    let resolved = weights
        .resolve(data.label_names(), &counts)
        .map_err(|e| UserError::new(e.to_string()))?;
    let values: Vec<f32> = resolved.iter().map(|&w| w as f32).collect();
    Ok(Some(Tensor::from_vec(
        values.clone(),
        values.len(),
        device,
    )?))
}

/// `sum + more`, parameter by parameter (gradient accumulation).
fn add_grads(mut sum: GradStore, more: GradStore, vars: &[Var]) -> Result<GradStore> {
    for var in vars {
        let Some(extra) = more.get(var.as_tensor()) else {
            continue;
        };
        let total = match sum.remove(var.as_tensor()) {
            Some(g) => (g + extra)?,
            None => extra.clone(),
        };
        sum.insert(var.as_tensor(), total);
    }
    Ok(sum)
}

/// Early stopping's memory: the best epoch so far and a copy of its trainable weights.
struct Best {
    rule: Option<EarlyStopping>,
    vars: Vec<(String, Var)>,
    epoch: Option<EpochMetrics>,
    weights: Option<std::collections::HashMap<String, Tensor>>,
}

impl Best {
    fn new(rule: Option<EarlyStopping>, vars: Vec<(String, Var)>) -> Self {
        Self {
            rule,
            vars,
            epoch: None,
            weights: None,
        }
    }

    /// Whether the run should stop before epoch `epochs_done + 1`: `patience` epochs have passed
    /// without improvement.
    fn exhausted(&self, epochs_done: u32) -> bool {
        match (&self.rule, &self.epoch) {
            (Some(rule), Some(best)) => epochs_done - best.epoch >= rule.patience,
            _ => false,
        }
    }

    /// Keeps `metrics`' epoch when it is better than the best so far (ties keep the earlier one).
    fn observe(&mut self, metrics: &EpochMetrics) -> Result<()> {
        let Some(rule) = self.rule else {
            return Ok(());
        };
        let better = self
            .epoch
            .as_ref()
            .is_none_or(|b| rule.metric.score(metrics) > rule.metric.score(b));
        if better {
            let mut weights = std::collections::HashMap::new();
            for (name, var) in &self.vars {
                weights.insert(name.clone(), var.as_tensor().copy()?);
            }
            self.weights = Some(weights);
            self.epoch = Some(metrics.clone());
        }
        Ok(())
    }

    /// Puts the best epoch's weights back and returns its metrics (`None` without early stopping).
    fn finish(&self) -> Result<Option<EpochMetrics>> {
        let (Some(epoch), Some(weights)) = (&self.epoch, &self.weights) else {
            return Ok(None);
        };
        for (name, var) in &self.vars {
            var.set(weights.get(name).context("a kept weight is missing")?)?;
        }
        Ok(Some(epoch.clone()))
    }
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
    best: &mut Best,
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
    if let Some(epoch) = &m.best_epoch {
        let weights =
            candle_core::safetensors::load(checkpoint.dir.join(checkpoint::BEST), &spec.device)
                .context("reading the checkpoint's best weights")?;
        best.epoch = Some(epoch.clone());
        best.weights = Some(weights);
    }
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
    fn save(
        &mut self,
        sink: &mut dyn ProgressSink,
        at: &Position,
        opt: &Optimizer,
        best: &Best,
    ) -> Result<()> {
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
        self.params.save_trainable(&dir.join(checkpoint::WEIGHTS))?;
        candle_core::safetensors::save(&opt.state()?, dir.join(checkpoint::OPTIMIZER))
            .context("writing the optimizer state")?;
        let mut files = vec![checkpoint::WEIGHTS, checkpoint::OPTIMIZER];
        if let Some(weights) = &best.weights {
            candle_core::safetensors::save(weights, dir.join(checkpoint::BEST))
                .context("writing the best epoch's weights")?;
            files.push(checkpoint::BEST);
        }
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
            best_epoch: best.epoch.clone(),
            files: Vec::new(),
        };
        let written = checkpoint::publish(&dir, manifest, &files)?;
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

/// An epoch's training side: its number and mean training loss.
struct EpochSums {
    epoch: u32,
    train_loss: f64,
}

/// The epoch's metrics on the validation split, without dropout: the (class-weighted) mean loss,
/// accuracy, macro and per-label precision/recall/F1, and the confusion matrix.
fn evaluate(
    net: &Net,
    data: &dyn Examples,
    val_idx: &[usize],
    class_weights: Option<&Tensor>,
    batch_size: usize,
    device: &Device,
    sums: EpochSums,
) -> Result<EpochMetrics> {
    let labels = data.labels();
    let (mut loss_sum, mut weight_sum) = (0.0, 0.0);
    let mut predicted = Vec::with_capacity(val_idx.len());
    let mut actual = Vec::with_capacity(val_idx.len());
    for batch in val_idx.chunks(batch_size) {
        let logits = net.logits(data, batch, None, None, device)?;
        let targets = label_tensor(labels, batch, device)?;
        let loss = loss_of(&logits, &targets, class_weights)?.to_scalar::<f32>()? as f64;
        // Batches combine as the loss over the whole split would: weighted by their total weight.
        let weight = match class_weights {
            Some(w) => w.index_select(&targets, 0)?.sum_all()?.to_scalar::<f32>()? as f64,
            None => batch.len() as f64,
        };
        loss_sum += loss * weight;
        weight_sum += weight;
        predicted.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        actual.extend(batch.iter().map(|&i| labels[i]));
    }
    let c = classification(&predicted, &actual, data.label_names());
    Ok(EpochMetrics {
        epoch: sums.epoch,
        train_loss: sums.train_loss,
        val_loss: loss_sum / weight_sum.max(f64::MIN_POSITIVE),
        accuracy: c.accuracy,
        precision: c.precision,
        recall: c.recall,
        f1: c.f1,
        per_label: c.per_label,
        confusion_matrix: c.confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class-weighted loss is `Σ w[y]·nll / Σ w[y]`, as PyTorch's weighted cross-entropy; equal
    /// weights give the plain mean.
    #[test]
    fn the_weighted_loss_is_the_weighted_mean_of_the_examples_losses() {
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[0u32, 0, 1], &Device::Cpu).unwrap();
        let nll = |row: [f32; 2], y: usize| {
            let log_z = (row[0].exp() + row[1].exp()).ln();
            log_z - row[y]
        };
        let per_example = [nll([2.0, 0.0], 0), nll([0.0, 1.0], 0), nll([1.0, 1.0], 1)];
        let weights = Tensor::new(&[1.0f32, 4.0], &Device::Cpu).unwrap();
        let weighted = loss_of(&logits, &targets, Some(&weights))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let expected = (per_example[0] + per_example[1] + 4.0 * per_example[2]) / 6.0;
        assert!(
            (weighted - expected).abs() < 1e-6,
            "{weighted} vs {expected}"
        );
        let ones = Tensor::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let even = loss_of(&logits, &targets, Some(&ones))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let plain = loss_of(&logits, &targets, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((even - plain).abs() < 1e-6);
    }
}
