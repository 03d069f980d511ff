//! A finished run's files: `model.safetensors` (HuggingFace names), `kiln.json` and, for text models,
//! the classifier's `config.json` and `tokenizer.json`. A LoRA run's adapters are merged into the base
//! weights (`W + (alpha / rank) · B A`), or kept apart in PEFT's layout: `adapter_model.safetensors`
//! (`base_model.model.<module>.lora_A.weight`, …, the head and pooler as modules to save) and
//! `adapter_config.json`, beside the unchanged base weights.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::bert::{KILN_MODEL_TYPE, LORA_PREFIX, POOLER};
use super::model::Net;
use super::params::Params;
use super::{TrainSpec, TrainedModel};
use crate::domain::{EpochMetrics, LoraSettings, ModelArchitecture, ModelManifest, ParameterCount};

pub use super::files::*;

const MODELING_KILN: &str = include_str!("modeling_kiln.py");

/// What the run ended with, besides its weights.
pub(super) struct Summary {
    /// The metrics of the epoch whose weights are exported.
    pub metrics: EpochMetrics,
    pub counts: ParameterCount,
    pub epochs_run: u32,
    /// With early stopping: the epoch kept.
    pub kept_epoch: Option<u32>,
}

pub(super) fn write(
    spec: &TrainSpec,
    net: &Net,
    params: &Params,
    summary: Summary,
) -> Result<TrainedModel> {
    let dir = &spec.output_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lora = spec.settings.lora.as_ref();
    let all: HashMap<String, Tensor> = params
        .named_vars()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().detach()))
        .collect();
    let mut weights: HashMap<String, Tensor> = all
        .iter()
        .filter(|(name, _)| !name.starts_with(LORA_PREFIX))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let mut files = vec![WEIGHTS.to_string()];
    if let (Some(lora), Net::Text { model, .. }) = (lora, net) {
        if lora.merge_adapters {
            super::bert::merge_lora(&mut weights, &all, lora, model.config.num_hidden_layers)?;
        } else {
            write_adapters(dir, spec, &all, lora)?;
            files.extend([ADAPTER_WEIGHTS.to_string(), ADAPTER_CONFIG.to_string()]);
        }
    }
    candle_core::safetensors::save(&weights, dir.join(WEIGHTS))
        .with_context(|| format!("writing {}", dir.join(WEIGHTS).display()))?;
    let hyper = &spec.settings.hyperparameters;
    let architecture = match net {
        Net::Text {
            model, tokenizer, ..
        } => {
            let separate = lora.is_some_and(|l| !l.merge_adapters);
            let config =
                model
                    .config
                    .for_classifier(spec.data.label_names(), hyper.pooling, separate);
            write_file(dir, "config.json", &serde_json::to_vec_pretty(&config)?)?;
            super::tokenizer::save(tokenizer, &dir.join("tokenizer.json"))?;
            let tokenizer_config = tokenizer_config(tokenizer, hyper.max_seq_length);
            write_file(
                dir,
                TOKENIZER_CONFIG,
                &serde_json::to_vec_pretty(&tokenizer_config)?,
            )?;
            files.extend([
                "config.json".to_string(),
                "tokenizer.json".to_string(),
                TOKENIZER_CONFIG.to_string(),
            ]);
            if config["model_type"] == KILN_MODEL_TYPE {
                write_file(dir, MODELING, MODELING_KILN.as_bytes())?;
                files.push(MODELING.to_string());
            }
            ModelArchitecture::Bert {
                pooling: hyper.pooling,
                base_model: spec
                    .settings
                    .base_model
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "random".into()),
                max_seq_length: hyper.max_seq_length,
                lora: lora.cloned(),
            }
        }
        Net::Tabular {
            standardizer,
            feature_names,
            ..
        } => ModelArchitecture::Mlp {
            hidden_sizes: hyper.tabular_hidden_sizes(),
            features: feature_names.clone(),
            standardization: standardizer.clone().into(),
        },
    };
    let counts = summary.counts;
    let manifest = ModelManifest {
        format_version: ModelManifest::FORMAT_VERSION,
        task: spec.settings.task,
        labels: spec.data.label_names().to_vec(),
        hyperparameters: hyper.clone(),
        metrics: summary.metrics,
        parameter_count: counts.total,
        trainable_parameter_count: (counts.trainable != counts.total).then_some(counts.trainable),
        epochs_run: Some(summary.epochs_run),
        kept_epoch: summary.kept_epoch,
        architecture,
    };
    write_file(dir, ModelManifest::FILE_NAME, &manifest.to_json())?;
    files.push(ModelManifest::FILE_NAME.to_string());
    write_file(dir, README, super::readme::for_model(&manifest).as_bytes())?;
    files.push(README.to_string());
    Ok(TrainedModel { files, manifest })
}

/// `adapter_model.safetensors` and `adapter_config.json` in PEFT's layout.
fn write_adapters(
    dir: &Path,
    spec: &TrainSpec,
    all: &HashMap<String, Tensor>,
    lora: &LoraSettings,
) -> Result<()> {
    let mut adapters = HashMap::new();
    for (name, tensor) in all {
        let peft_name = if let Some(rest) = name.strip_prefix(LORA_PREFIX) {
            format!("{PEFT_PREFIX}{rest}")
        } else if name.starts_with("classifier.") || name.starts_with(POOLER) {
            format!("{PEFT_PREFIX}{name}")
        } else {
            continue;
        };
        adapters.insert(peft_name, tensor.clone());
    }
    candle_core::safetensors::save(&adapters, dir.join(ADAPTER_WEIGHTS))
        .with_context(|| format!("writing {}", dir.join(ADAPTER_WEIGHTS).display()))?;
    let mut modules_to_save = vec!["classifier"];
    if all.keys().any(|n| n.starts_with(POOLER)) {
        modules_to_save.push("pooler");
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": spec.settings.base_model.as_ref().map(|b| b.to_string()),
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules.iter().map(|t| t.module()).collect::<Vec<_>>(),
        "modules_to_save": modules_to_save,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    write_file(dir, ADAPTER_CONFIG, &serde_json::to_vec_pretty(&config)?)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// `tokenizer_config.json`: the tokenizer as it is in `tokenizer.json` (no class that rebuilds its
/// normaliser), cutting at the run's `maxSeqLength`, with its special tokens named so that padding works.
fn tokenizer_config(tokenizer: &tokenizers::Tokenizer, max_seq_length: u32) -> serde_json::Value {
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_seq_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
    });
    for (key, token) in [
        ("pad_token", "[PAD]"),
        ("unk_token", "[UNK]"),
        ("cls_token", "[CLS]"),
        ("sep_token", "[SEP]"),
        ("mask_token", "[MASK]"),
    ] {
        if tokenizer.token_to_id(token).is_some() {
            config[key] = token.into();
        }
    }
    config
}
