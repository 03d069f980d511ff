//! A trained model loaded back from its files for inference, through the same forward pass that
//! training evaluated with: `kiln.json` says how to build it, `model.safetensors` holds its weights and,
//! when a LoRA run kept its adapters apart, `adapter_model.safetensors` holds those.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{D, Device};

use super::bert::{BertClassifier, BertConfig, BertOptions, LORA_PREFIX};
use super::files::{ADAPTER_WEIGHTS, PEFT_PREFIX, WEIGHTS};
use super::memory;
use super::mlp::{Mlp, Standardizer};
use super::model::{Net, text_net};
use super::params::Params;
use crate::domain::{ModelArchitecture, ModelManifest};

pub struct LoadedModel {
    pub manifest: ModelManifest,
    net: Net,
    device: Device,
    /// What sizes its predictions' memory.
    shape: Shape,
}

/// The sizes a prediction's memory depends on.
enum Shape {
    /// A text model and the most tokens it reads of an input.
    Text { config: BertConfig, max_len: usize },
    /// The MLP's layer widths, inputs to labels.
    Rows { sizes: Vec<u64> },
}

impl LoadedModel {
    /// Reads a model folder a run exported.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join(ModelManifest::FILE_NAME);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest = ModelManifest::from_json(&bytes)?;
        let labels = manifest.labels.len();
        let mut params = Params::new(0, device);
        let (net, shape) = match &manifest.architecture {
            ModelArchitecture::Bert {
                pooling,
                max_seq_length,
                lora,
                ..
            } => {
                let config = BertConfig::read(&dir.join("config.json"))?;
                let max_len = (*max_seq_length as usize).min(config.max_position_embeddings);
                let shape = Shape::Text {
                    config: config.clone(),
                    max_len,
                };
                let tokenizer = super::tokenizer::load(&dir.join("tokenizer.json"), max_len)?;
                // Merged adapters are in the weights already.
                let apart = lora.clone().filter(|l| !l.merge_adapters);
                let options = BertOptions {
                    dropout: None,
                    pooling: *pooling,
                    lora: apart.clone(),
                };
                let model = BertClassifier::new(&mut params, config, labels, &options)?;
                params.load_prefixed(&dir.join(WEIGHTS), "", &|name: &str| {
                    name.starts_with(LORA_PREFIX)
                })?;
                if apart.is_some() {
                    let adapters =
                        candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), device)
                            .context("reading the model's LoRA adapters")?;
                    for (name, var) in params.named_vars() {
                        if let Some(rest) = name.strip_prefix(LORA_PREFIX) {
                            let key = format!("{PEFT_PREFIX}{rest}");
                            let tensor = adapters
                                .get(&key)
                                .with_context(|| format!("the adapters have no {key}"))?;
                            var.set(tensor)?;
                        }
                    }
                }
                (text_net(model, tokenizer)?, shape)
            }
            ModelArchitecture::Mlp {
                hidden_sizes,
                features,
                standardization,
            } => {
                let mut sizes = vec![features.len() as u64];
                sizes.extend(hidden_sizes.iter().map(|&h| h as u64));
                sizes.push(labels as u64);
                let model = Mlp::new(&mut params, features.len(), hidden_sizes, labels, 0.0)?;
                params.load_prefixed(&dir.join(WEIGHTS), "", &|_| false)?;
                let net = Net::Tabular {
                    model,
                    standardizer: Standardizer {
                        mean: standardization.mean.clone(),
                        std: standardization.std.clone(),
                    },
                    feature_names: features.clone(),
                };
                (net, Shape::Rows { sizes })
            }
        };
        let mut net = net;
        net.for_inference()?;
        Ok(Self {
            manifest,
            net,
            device: device.clone(),
            shape,
        })
    }

    /// At most how much memory predicting a batch of texts of `chars` characters each takes (the
    /// weights aside): each is read up to `maxSeqLength` tokens, at most one per character plus the
    /// two special ones, and the batch is padded to its longest.
    pub fn text_batch_memory(&self, chars: &[usize]) -> u64 {
        let Shape::Text { config, max_len } = &self.shape else {
            return 0;
        };
        let longest = chars
            .iter()
            .map(|&c| c.saturating_add(2))
            .max()
            .unwrap_or(1);
        let seq = longest.min(*max_len) as u64;
        let activations =
            memory::bert_prediction_per_example(config, seq).saturating_mul(chars.len() as u64);
        let encodings: u64 = chars.iter().map(|&c| memory::tokenizing(c as u64)).sum();
        activations.saturating_add(encodings)
    }

    /// At most how much memory predicting `rows` rows takes (the weights aside).
    pub fn row_batch_memory(&self, rows: usize) -> u64 {
        match &self.shape {
            Shape::Rows { sizes } => memory::mlp_prediction_per_row(sizes) * rows as u64,
            Shape::Text { .. } => 0,
        }
    }

    /// Logits `(inputs, labels)` of a text model.
    pub fn text_logits(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let logits = self.net.text_logits(texts.to_vec(), None, &self.device)?;
        Ok(logits.to_vec2()?)
    }

    /// Logits `(rows, labels)` of a tabular model.
    pub fn row_logits(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let logits = self.net.row_logits(rows, None, &self.device)?;
        Ok(logits.to_vec2()?)
    }

    /// Softmax probabilities of text inputs.
    pub fn text_probabilities(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let logits = self.net.text_logits(texts.to_vec(), None, &self.device)?;
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2()?)
    }
}
