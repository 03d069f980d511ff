//! `kiln.json`, the manifest every trained model carries: what it was trained for and on, how its inputs
//! are prepared, and how well it did. Written at export, read back by whatever loads a model (inference,
//! downloads, retraining), always through [`ModelManifest`].
//!
//! The format is versioned: `formatVersion` is [`ModelManifest::FORMAT_VERSION`] for what this build
//! writes; a manifest from a newer kiln is refused with a clear error rather than half-read.

use serde::{Deserialize, Serialize};

use super::{EpochMetrics, Hyperparams, LoraSettings, ParameterCount, TaskKind, UserError};

/// The contents of `kiln.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelManifest {
    pub format_version: u32,
    pub task: TaskKind,
    /// Label names; the model's output `i` is `labels[i]`.
    pub labels: Vec<String>,
    pub hyperparameters: Hyperparams,
    /// The metrics of the epoch whose weights the model holds: the last one, or with early stopping
    /// the best one (`keptEpoch`).
    pub metrics: EpochMetrics,
    pub parameter_count: u64,
    /// Parameters trained, of `parameterCount`, when that was not all of them (frozen layers, LoRA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable_parameter_count: Option<u64>,
    /// Epochs run; fewer than `hyperparameters.epochs` when early stopping ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs_run: Option<u32>,
    /// With early stopping: the epoch whose weights were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_epoch: Option<u32>,
    #[serde(flatten)]
    pub architecture: ModelArchitecture,
}

/// The network and how inputs reach it, tagged by `architecture` in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "architecture",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum ModelArchitecture {
    /// A BERT-family text classifier (`model.safetensors` with HuggingFace names, `config.json`,
    /// `tokenizer.json`).
    Bert {
        pooling: Pooling,
        /// The reference the weights started from (`hf:org/name`, a directory), or `random`.
        base_model: String,
        max_seq_length: u32,
        /// The LoRA settings of a LoRA run (absent for a full fine-tune): with `mergeAdapters` the
        /// adapters are in `model.safetensors` already; without, they are apart in
        /// `adapter_model.safetensors` (PEFT's layout) and applied over the base weights.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lora: Option<LoraSettings>,
    },
    /// A tabular MLP over standardised numeric features.
    Mlp {
        hidden_sizes: Vec<u32>,
        /// Feature columns, in the order the model reads them.
        features: Vec<String>,
        standardization: Standardization,
    },
}

/// How a text classifier turns the encoder's outputs into one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean of the last hidden states over the attention mask.
    #[default]
    #[serde(alias = "MEAN")]
    Mean,
    /// BERT's pooler over the first token (`tanh(dense(h[CLS]))`), as `BertForSequenceClassification`.
    #[serde(alias = "CLS")]
    Cls,
}

/// Per-feature mean and standard deviation of the training split; inference applies `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ModelManifest {
    /// The format this build writes and the newest it reads.
    pub const FORMAT_VERSION: u32 = 1;
    pub const FILE_NAME: &str = "kiln.json";

    /// Trainable and total parameters.
    pub fn parameters(&self) -> ParameterCount {
        ParameterCount {
            trainable: self
                .trainable_parameter_count
                .unwrap_or(self.parameter_count),
            total: self.parameter_count,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, UserError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| UserError::new(format!("kiln.json has no formatVersion: {e}")))?;
        if version.format_version > Self::FORMAT_VERSION {
            return Err(UserError::new(format!(
                "kiln.json has format version {}, newer than this kiln reads ({}); upgrade kiln",
                version.format_version,
                Self::FORMAT_VERSION
            )));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| UserError::new(format!("kiln.json cannot be read: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> EpochMetrics {
        EpochMetrics {
            epoch: 3,
            train_loss: 0.1,
            val_loss: 0.2,
            accuracy: 0.9,
            precision: 0.9,
            recall: 0.9,
            f1: 0.9,
            per_label: Vec::new(),
            confusion_matrix: vec![vec![9, 1], vec![1, 9]],
        }
    }

    fn hyper() -> Hyperparams {
        Hyperparams::parse("h", &Default::default(), 1e-3).unwrap()
    }

    #[test]
    fn a_manifest_reads_back_what_was_written() {
        for architecture in [
            ModelArchitecture::Bert {
                pooling: Pooling::Mean,
                base_model: "hf:org/name".into(),
                max_seq_length: 128,
                lora: None,
            },
            ModelArchitecture::Mlp {
                hidden_sizes: vec![64, 64],
                features: vec!["x".into(), "y".into()],
                standardization: Standardization {
                    mean: vec![0.5, 1.0],
                    std: vec![1.0, 2.0],
                },
            },
        ] {
            let manifest = ModelManifest {
                format_version: ModelManifest::FORMAT_VERSION,
                task: TaskKind::TextClassification,
                labels: vec!["benign".into(), "injection".into()],
                hyperparameters: hyper(),
                metrics: metrics(),
                parameter_count: 1234,
                trainable_parameter_count: Some(34),
                epochs_run: Some(3),
                kept_epoch: Some(2),
                architecture,
            };
            let json = manifest.to_json();
            assert_eq!(ModelManifest::from_json(&json).unwrap(), manifest);
        }
    }

    #[test]
    fn the_json_keeps_its_documented_field_names() {
        let manifest = ModelManifest {
            format_version: 1,
            task: TaskKind::TabularClassification,
            labels: vec!["a".into(), "b".into()],
            hyperparameters: hyper(),
            metrics: metrics(),
            parameter_count: 10,
            trainable_parameter_count: None,
            epochs_run: None,
            kept_epoch: None,
            architecture: ModelArchitecture::Mlp {
                hidden_sizes: vec![64, 64],
                features: vec!["x".into()],
                standardization: Standardization {
                    mean: vec![0.0],
                    std: vec![1.0],
                },
            },
        };
        let value: serde_json::Value = serde_json::from_slice(&manifest.to_json()).unwrap();
        assert_eq!(value["formatVersion"], 1);
        assert_eq!(value["architecture"], "mlp");
        assert_eq!(value["hiddenSizes"], serde_json::json!([64, 64]));
        assert_eq!(value["standardization"]["mean"], serde_json::json!([0.0]));
        assert_eq!(value["task"], "TABULAR_CLASSIFICATION");
        assert_eq!(value["parameterCount"], 10);
    }

    #[test]
    fn a_manifest_from_a_newer_kiln_is_refused() {
        let newer = br#"{"formatVersion": 99, "task": "TEXT_CLASSIFICATION"}"#;
        let error = ModelManifest::from_json(newer).unwrap_err().to_string();
        assert!(error.contains("format version 99"), "{error}");
    }
}
