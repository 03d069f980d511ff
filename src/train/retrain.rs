//! A retrain: a run that starts from a registered version's own export (`kiln.json`,
//! `model.safetensors`, for a text model `config.json` and `tokenizer.json`, and the adapters a LoRA run
//! kept apart). Its weights are read whole, apart adapters merged in, and its head kept with its rows
//! reordered to the dataset's labels, or left out when the job resets the head.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};

use super::bert::{LORA_PREFIX, POOLER};
use super::files::{ADAPTER_WEIGHTS, PEFT_PREFIX, WEIGHTS};
use super::params::read_weights;
use crate::domain::{ModelArchitecture, ModelManifest, UserError};

/// The registered version a retrain starts from.
pub(super) struct Version {
    pub manifest: ModelManifest,
    /// Its weights under kiln's (HuggingFace's) names, adapters merged.
    pub weights: HashMap<String, Tensor>,
}

impl Version {
    pub fn read(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join(ModelManifest::FILE_NAME);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest = ModelManifest::from_json(&bytes)
            .map_err(|e| UserError::wrap("the registered version's kiln.json cannot be read", e))?;
        let mut weights = read_weights(&dir.join(WEIGHTS), device)?;
        if let ModelArchitecture::Bert {
            lora: Some(lora), ..
        } = &manifest.architecture
            && !lora.merge_adapters
        {
            let adapters = candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), device)
                .context("reading the registered version's LoRA adapters")?;
            let mut all = weights.clone();
            for (key, tensor) in adapters {
                if let Some(rest) = key.strip_prefix(PEFT_PREFIX) {
                    all.insert(format!("{LORA_PREFIX}{rest}"), tensor);
                }
            }
            let layers = (0..)
                .take_while(|l| {
                    weights.contains_key(&format!("bert.encoder.layer.{l}.output.dense.weight"))
                })
                .count();
            super::bert::merge_lora(&mut weights, &all, lora, layers)?;
        }
        Ok(Self { manifest, weights })
    }

    /// The names the head's tensors start with: the classifier of a text model, the last layer of an
    /// MLP.
    pub fn head_prefix(&self) -> String {
        match &self.manifest.architecture {
            ModelArchitecture::Bert { .. } => "classifier.".to_string(),
            ModelArchitecture::Mlp { hidden_sizes, .. } => {
                format!("layers.{}.", hidden_sizes.len())
            }
        }
    }

    /// Readies the head for `labels` (the dataset's, in the order the run numbers them): with `reset`,
    /// its tensors are dropped so the new head keeps its random start; otherwise the version's rows are
    /// reordered to `labels`, which must be the version's labels in any order.
    pub fn prepare_head(&mut self, labels: &[String], reset: bool) -> Result<()> {
        let prefix = self.head_prefix();
        if reset {
            self.weights.retain(|name, _| !name.starts_with(&prefix));
            return Ok(());
        }
        let old = &self.manifest.labels;
        let order: Option<Vec<u32>> = labels
            .iter()
            .map(|l| old.iter().position(|o| o == l).map(|i| i as u32))
            .collect();
        // TrainingSettings::check_retrain refused other labels with a message for the user.
        let Some(order) = order.filter(|_| labels.len() == old.len()) else {
            bail!("the dataset's labels are not the registered version's");
        };
        let device = self
            .weights
            .values()
            .next()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        let index = Tensor::new(order.as_slice(), &device)?;
        for suffix in ["weight", "bias"] {
            let name = format!("{prefix}{suffix}");
            let tensor = self
                .weights
                .get(&name)
                .with_context(|| format!("the registered version has no {name}"))?;
            let reordered = tensor.index_select(&index, 0)?;
            self.weights.insert(name, reordered);
        }
        Ok(())
    }

    /// Loads the version's weights into every variable the new model has, except those `optional`
    /// accepts when the version lacks them (a reset head, a pooler the version never had, new LoRA
    /// adapters).
    pub fn load_into(&self, params: &super::params::Params, reset_head: bool) -> Result<()> {
        let head = self.head_prefix();
        params.load_tensors(&self.weights, WEIGHTS, "", &|name: &str| {
            name.starts_with(LORA_PREFIX)
                || name.starts_with(POOLER)
                || (reset_head && name.starts_with(&head))
        })?;
        Ok(())
    }
}
