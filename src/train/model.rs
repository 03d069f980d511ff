//! The model a run trains and serves: a BERT classifier with its tokenizer, or an MLP with its
//! standardisation ([`Net`]), built from a spec ([`build`]) or from a registered version's files.

use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use tokenizers::Tokenizer;

use super::TrainSpec;
use super::bert::{BertClassifier, BertConfig, BertOptions, POOLER};
use super::memory;
use super::mlp::{self, Mlp, Standardizer};
use super::params::Params;
use super::retrain;
use crate::domain::{
    BaseModelRef, ExampleKind, Examples, Hyperparams, ModelArchitecture, UserError,
};

/// A model plus what turns examples into its input. Rows are read and encoded a batch at a time.
pub(super) enum Net {
    Text {
        model: Box<BertClassifier>,
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
    /// For a model that only predicts from now on ([`Linear::for_inference`](super::layers::Linear::for_inference)).
    pub(super) fn for_inference(&mut self) -> Result<()> {
        match self {
            Self::Text { model, .. } => model.for_inference(),
            Self::Tabular { model, .. } => model.for_inference(),
        }
    }

    /// Logits of `batch`'s rows; with `epoch`, a text row is read as that epoch trains on it
    /// ([`Examples::training_text`]).
    pub(super) fn logits(
        &self,
        data: &dyn Examples,
        batch: &[usize],
        epoch: Option<u32>,
        rng: Option<&mut StdRng>,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Net::Text { .. } => {
                let texts = batch
                    .iter()
                    .map(|&i| match epoch {
                        Some(epoch) => data.training_text(i, epoch),
                        None => data.text(i),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.text_logits(texts, rng, device)
            }
            Net::Tabular { .. } => {
                let rows = batch
                    .iter()
                    .map(|&i| data.features(i))
                    .collect::<Result<Vec<_>>>()?;
                self.row_logits(&rows, rng, device)
            }
        }
    }

    /// Logits of a text model for `texts`, each truncated to the model's length.
    pub(super) fn text_logits(
        &self,
        texts: Vec<String>,
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
                let rows = texts.len();
                let encodings = encoder
                    .encode_batch(texts, true)
                    .map_err(|e| anyhow::anyhow!("tokenizing a batch: {e}"))?;
                let seq = encodings
                    .iter()
                    .map(|e| e.get_ids().len())
                    .max()
                    .unwrap_or(1)
                    .max(1);
                let mut ids = Vec::with_capacity(rows * seq);
                let mut mask = Vec::with_capacity(rows * seq);
                for encoding in &encodings {
                    let row = encoding.get_ids();
                    ids.extend_from_slice(row);
                    ids.extend(std::iter::repeat_n(*pad_id, seq - row.len()));
                    mask.extend(std::iter::repeat_n(1u32, row.len()));
                    mask.extend(std::iter::repeat_n(0u32, seq - row.len()));
                }
                let ids = Tensor::from_vec(ids, (rows, seq), device)?;
                let mask = Tensor::from_vec(mask, (rows, seq), device)?;
                let train = rng.is_some();
                model.forward(&ids, &mask, rng, train)
            }
            Net::Tabular { .. } => bail!("a tabular model reads feature rows, not texts"),
        }
    }

    /// Logits of a tabular model for feature rows.
    pub(super) fn row_logits(
        &self,
        rows: &[Vec<f32>],
        rng: Option<&mut StdRng>,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Net::Tabular {
                model,
                standardizer,
                ..
            } => {
                let train = rng.is_some();
                model.forward(&standardizer.tensor(rows, device)?, rng, train)
            }
            Net::Text { .. } => bail!("a text model reads texts, not feature rows"),
        }
    }
}

/// The model `spec` asks for, its parameters in `params`: built fresh, read from a base model, or
/// (a retrain) from a registered version; refused before anything is allocated when it cannot fit.
pub(super) fn build(spec: &TrainSpec, params: &mut Params, train_idx: &[usize]) -> Result<Net> {
    let data = spec.data.as_ref();
    let num_labels = data.label_names().len();
    let hyper = &spec.settings.hyperparameters;
    let max_len = hyper.max_seq_length as usize;
    let reset_head = spec.settings.reset_head;
    // A retrain: the base folder is a registered version's export.
    let mut version = match (&spec.settings.base_model, &spec.base_dir) {
        (Some(BaseModelRef::Registered(_)), Some(dir)) => {
            let mut version = retrain::Version::read(dir, &spec.device)?;
            // submitJob checked these against the dataset's summary; the run checks what it reads.
            let features: &[String] = match data.kind() {
                ExampleKind::Tabular { feature_names } => feature_names,
                ExampleKind::Text => &[],
            };
            spec.settings
                .check_retrain(&version.manifest, features, data.label_names())
                .map_err(|e| UserError::new(format!("{}: {}", e.field, e.message)))?;
            version.prepare_head(data.label_names(), reset_head)?;
            Some(version)
        }
        _ => None,
    };
    match data.kind() {
        ExampleKind::Text => {
            let options = BertOptions {
                dropout: hyper.dropout,
                pooling: hyper.pooling,
                lora: spec.settings.lora.clone(),
            };
            if let Some(rule) = frozen_rule(spec)? {
                params.freeze_where(rule);
            }
            let (model, tokenizer) = match &spec.base_dir {
                Some(dir) => {
                    let config = BertConfig::read(&dir.join("config.json"))?;
                    check_freeze(hyper, &config)?;
                    fits_in_memory(spec, &config, "baseModel")?;
                    let max_len = max_len.min(config.max_position_embeddings);
                    let tokenizer = super::tokenizer::load(&dir.join("tokenizer.json"), max_len)?;
                    let model = BertClassifier::new(params, config, num_labels, &options)?;
                    match version.take() {
                        Some(version) => version.load_into(params, reset_head)?,
                        // A sentence-embedding checkpoint has no pooler: CLS pooling then starts it
                        // from random weights, like the head.
                        None => {
                            params.load_prefixed(
                                &dir.join("model.safetensors"),
                                "bert.",
                                &|name: &str| name.starts_with(POOLER),
                            )?;
                        }
                    }
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
                    check_freeze(hyper, &config)?;
                    fits_in_memory(spec, &config, "modelConfig")?;
                    let model = BertClassifier::new(params, config, num_labels, &options)?;
                    (model, tokenizer)
                }
            };
            text_net(model, tokenizer)
        }
        ExampleKind::Tabular { feature_names } => {
            // A retrain keeps the version's layers and its standardisation (its weights expect it).
            let start = match version.as_ref().map(|v| &v.manifest.architecture) {
                Some(ModelArchitecture::Mlp {
                    hidden_sizes,
                    standardization,
                    ..
                }) => {
                    let standardizer = Standardizer {
                        mean: standardization.mean.clone(),
                        std: standardization.std.clone(),
                    };
                    Some((hidden_sizes.clone(), standardizer))
                }
                // check_retrain refused a text version for a tabular run.
                Some(ModelArchitecture::Bert { .. }) | None => None,
            };
            let hidden = match &start {
                Some((hidden, _)) => hidden.clone(),
                None => hyper.tabular_hidden_sizes(),
            };
            if let Some(limit) = spec.max_memory {
                let batch = hyper.batch_size as u64;
                let estimate = memory::mlp(feature_names.len(), &hidden, num_labels, batch);
                refuse(memory::refusal(&estimate, limit, "datasetId"))?;
            }
            let standardizer = match start {
                Some((_, standardizer)) => standardizer,
                None => Standardizer::fit(train_idx.iter().map(|&i| data.features(i)))?,
            };
            let dropout = hyper.dropout.unwrap_or(mlp::DEFAULT_DROPOUT);
            let model = Mlp::new(params, feature_names.len(), &hidden, num_labels, dropout)?;
            if let Some(version) = &version {
                version.load_into(params, reset_head)?;
            }
            Ok(Net::Tabular {
                model,
                standardizer,
                feature_names: feature_names.clone(),
            })
        }
    }
}

/// A text model with its tokenizer, checked to belong together.
pub(super) fn text_net(model: BertClassifier, tokenizer: Tokenizer) -> Result<Net> {
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
        model: Box::new(model),
        tokenizer: Box::new(tokenizer),
        encoder: Box::new(encoder),
        pad_id,
    })
}

/// Which parameters a text run leaves alone: with LoRA every base weight (the adapters, the head and
/// the pooler train); with `freezeLayers = k` the embeddings and encoder layers `0..k`.
fn frozen_rule(spec: &TrainSpec) -> Result<Option<super::params::FrozenRule>> {
    if spec.settings.lora.is_some() {
        return Ok(Some(Box::new(|name: &str| {
            name.starts_with("bert.") && !name.starts_with(POOLER)
        })));
    }
    let Some(k) = spec.settings.hyperparameters.freeze_layers else {
        return Ok(None);
    };
    Ok(Some(Box::new(move |name: &str| {
        if name.starts_with("bert.embeddings.") {
            return true;
        }
        name.strip_prefix("bert.encoder.layer.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<u32>().ok())
            .is_some_and(|i| i < k)
    })))
}

fn check_freeze(hyper: &Hyperparams, config: &BertConfig) -> Result<()> {
    match hyper.freeze_layers {
        Some(k) if k as usize > config.num_hidden_layers => bail!(UserError::new(format!(
            "hyperparameters.freezeLayers: {k} is more than the model's {} encoder layers",
            config.num_hidden_layers
        ))),
        _ => Ok(()),
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
        memory::Trained::of(&spec.settings),
    );
    refuse(memory::refusal(&estimate, limit, model_field))
}

fn refuse(refusal: Option<(String, String)>) -> Result<()> {
    match refusal {
        Some((field, message)) => bail!(UserError::new(format!("{field}: {message}"))),
        None => Ok(()),
    }
}
