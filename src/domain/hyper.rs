//! Hyperparameters and the LoRA customization: what a user may choose about how a model is trained,
//! as sent (`…Input`, every field optional) and as checked (defaults filled in). The rules between
//! these and the task or base model are in [`super::TrainingSettings::parse`].

use serde::{Deserialize, Serialize};

use super::{FieldError, Pooling};

/// The update rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OptimizerChoice {
    /// Adam with decoupled weight decay.
    #[default]
    Adamw,
    /// Stochastic gradient descent, with `momentum` (0 by default) and L2 weight decay.
    Sgd,
}

/// How the learning rate moves after the warm-up (a linear ramp from 0 over `warmupRatio` of the steps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LrSchedule {
    /// Stays at the learning rate.
    Constant,
    /// Falls linearly to 0 at the last step.
    #[default]
    Linear,
    /// Falls along a half cosine to 0 at the last step.
    Cosine,
}

/// What early stopping watches on the validation split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EarlyStoppingMetric {
    /// Lower is better.
    #[default]
    ValLoss,
    Accuracy,
    /// Macro F1.
    F1,
}

impl EarlyStoppingMetric {
    /// The metric's value in an epoch's results, signed so that higher is always better.
    pub fn score(self, m: &super::EpochMetrics) -> f64 {
        match self {
            Self::ValLoss => -m.val_loss,
            Self::Accuracy => m.accuracy,
            Self::F1 => m.f1,
        }
    }
}

/// Stop when the metric has not improved for `patience` epochs; the best epoch's weights are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopping {
    pub patience: u32,
    pub metric: EarlyStoppingMetric,
}

/// One label's weight in the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelWeight {
    pub label: String,
    pub weight: f64,
}

/// Per-label weights of the training loss (and the validation loss).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClassWeights {
    /// `examples / (labels × examples of the label)` over the training split, as scikit-learn's
    /// `class_weight="balanced"`.
    Balanced,
    /// Named labels get their weight; labels not named weigh 1.
    PerLabel(Vec<LabelWeight>),
}

impl ClassWeights {
    /// The weight of each label, in the model's label order, given how many training examples each has.
    /// A named label the data does not have is a `FieldError`.
    pub fn resolve(&self, labels: &[String], counts: &[u64]) -> Result<Vec<f64>, FieldError> {
        match self {
            Self::Balanced => {
                let total: u64 = counts.iter().sum();
                let k = labels.len() as f64;
                Ok(counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            1.0
                        } else {
                            total as f64 / (k * c as f64)
                        }
                    })
                    .collect())
            }
            Self::PerLabel(weights) => {
                let mut out = vec![1.0; labels.len()];
                for w in weights {
                    let Some(i) = labels.iter().position(|l| *l == w.label) else {
                        return Err(FieldError::new(
                            "hyperparameters.classWeights",
                            format!(
                                "label {:?} is not in the dataset (its labels: {})",
                                super::abbreviate(&w.label, 80),
                                super::abbreviate(&labels.join(", "), 200)
                            ),
                        ));
                    };
                    out[i] = w.weight;
                }
                Ok(out)
            }
        }
    }
}

/// Class weights as sent: exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassWeightsInput {
    pub balanced: Option<bool>,
    pub weights: Option<Vec<LabelWeight>>,
}

/// Reads `json` (what a user typed: `kiln train --hyperparameters`, `--customization`) as the input
/// `T`, whose top-level keys must be `T`'s own: an unknown one is refused on `group.key`, with the
/// nearest known name suggested, rather than ignored.
pub fn input_from_json<T>(group: &str, json: &str) -> Result<T, FieldError>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| FieldError::new(group, format!("is not valid JSON: {e}")))?;
    let serde_json::Value::Object(given) = &value else {
        return Err(FieldError::new(group, "must be a JSON object"));
    };
    let known = serde_json::to_value(T::default()).expect("an input serialises");
    let known: Vec<&str> = known
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for key in given.keys() {
        if !known.contains(&key.as_str()) {
            let hint = match super::closest(key, known.iter().copied()) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => format!("; known: {}", known.join(", ")),
            };
            return Err(FieldError::new(
                format!("{group}.{}", super::abbreviate(key, 40)),
                format!("is not a setting here{hint}"),
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| FieldError::new(group, e.to_string()))
}

/// Hyperparameters as a user sends them: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HyperparamsInput {
    pub epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub learning_rate: Option<f64>,
    pub validation_split: Option<f64>,
    pub seed: Option<i64>,
    pub max_seq_length: Option<i64>,
    pub checkpoint_every_steps: Option<i64>,
    pub keep_checkpoints: Option<i64>,
    pub optimizer: Option<OptimizerChoice>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub lr_schedule: Option<LrSchedule>,
    pub warmup_ratio: Option<f64>,
    pub gradient_clip_norm: Option<f64>,
    pub gradient_accumulation_steps: Option<i64>,
    pub class_weights: Option<ClassWeightsInput>,
    pub early_stopping_patience: Option<i64>,
    pub early_stopping_metric: Option<EarlyStoppingMetric>,
    pub freeze_layers: Option<i64>,
    pub dropout: Option<f64>,
    pub pooling: Option<Pooling>,
    pub hidden_sizes: Option<Vec<i64>>,
    pub augmentation: Option<super::AugmentationInput>,
}

impl HyperparamsInput {
    /// This input with what it leaves out taken from `defaults`.
    pub fn or(&self, defaults: &HyperparamsInput) -> HyperparamsInput {
        let mut mine = serde_json::to_value(self).expect("hyperparameters serialise");
        let theirs = serde_json::to_value(defaults).expect("hyperparameters serialise");
        if let (Some(mine), Some(theirs)) = (mine.as_object_mut(), theirs.as_object()) {
            for (name, value) in theirs {
                if mine.get(name).is_none_or(|v| v.is_null()) {
                    mine.insert(name.clone(), value.clone());
                }
            }
        }
        serde_json::from_value(mine).expect("merged hyperparameters read back")
    }

    /// The fields it sets, by name (camelCase), values as JSON text.
    pub fn set_fields(&self) -> Vec<(String, String)> {
        let value = serde_json::to_value(self).expect("hyperparameters serialise");
        value
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Checked hyperparameters with defaults filled in. Fields added after the first release have serde
/// defaults equal to what kiln did before they existed, so stored jobs read back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparams {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub validation_split: f64,
    pub seed: u64,
    pub max_seq_length: u32,
    /// A checkpoint every this many steps besides the one after each epoch (`None`: epochs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_steps: Option<u32>,
    /// How many of a job's newest checkpoints are kept.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: u32,
    #[serde(default)]
    pub optimizer: OptimizerChoice,
    /// SGD's momentum.
    #[serde(default)]
    pub momentum: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Share of all steps spent raising the learning rate from 0.
    #[serde(default = "default_warmup_ratio")]
    pub warmup_ratio: f64,
    /// Gradients are scaled down so that their global L2 norm is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_clip_norm: Option<f64>,
    /// Batches whose gradients are summed into one optimizer step.
    #[serde(default = "one")]
    pub gradient_accumulation_steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// Embeddings and the first this many encoder layers are not trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_layers: Option<u32>,
    /// Dropout probability; `None`: the base model's `hidden_dropout_prob` (text), 0.1 (tabular).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    #[serde(default)]
    pub pooling: Pooling,
    /// Widths of a tabular model's hidden layers; `None`: [`Hyperparams::DEFAULT_HIDDEN_SIZES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_sizes: Option<Vec<u32>>,
    /// Text tasks: every training example is augmented afresh each epoch, from the run's seed, the
    /// epoch and the row (validation examples never are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<super::Augmentation>,
}

fn default_keep_checkpoints() -> u32 {
    Hyperparams::DEFAULT_KEEP_CHECKPOINTS
}
fn default_weight_decay() -> f64 {
    Hyperparams::DEFAULT_WEIGHT_DECAY
}
fn default_warmup_ratio() -> f64 {
    Hyperparams::DEFAULT_WARMUP_RATIO
}
fn one() -> u32 {
    1
}

impl Hyperparams {
    pub const DEFAULT_EPOCHS: u32 = 3;
    pub const MAX_EPOCHS: i64 = 1000;
    pub const DEFAULT_BATCH_SIZE: u32 = 16;
    pub const MAX_BATCH_SIZE: i64 = 4096;
    /// Learning rate when fine-tuning every weight of a pretrained model.
    pub const DEFAULT_FINE_TUNE_LR: f64 = 5e-5;
    /// Learning rate when training LoRA adapters.
    pub const DEFAULT_LORA_LR: f64 = 2e-4;
    /// Learning rate when training from random weights (small BERT, MLP).
    pub const DEFAULT_FROM_SCRATCH_LR: f64 = 1e-3;
    pub const DEFAULT_VALIDATION_SPLIT: f64 = 0.2;
    pub const DEFAULT_SEED: u64 = 42;
    pub const DEFAULT_MAX_SEQ_LENGTH: u32 = 128;
    pub const MAX_SEQ_LENGTH: i64 = 512;
    pub const DEFAULT_KEEP_CHECKPOINTS: u32 = 2;
    pub const MAX_KEEP_CHECKPOINTS: i64 = 100;
    pub const MAX_CHECKPOINT_EVERY_STEPS: i64 = 1_000_000;
    /// AdamW's default; SGD's is 0.
    pub const DEFAULT_WEIGHT_DECAY: f64 = 0.01;
    pub const DEFAULT_WARMUP_RATIO: f64 = 0.1;
    pub const MAX_ACCUMULATION_STEPS: i64 = 1024;
    pub const MAX_PATIENCE: i64 = 1000;
    /// The most encoder layers a model has ([`crate::train::bert::LIMITS`]).
    pub const MAX_FREEZE_LAYERS: i64 = 48;
    pub const MAX_DROPOUT: f64 = 0.9;
    pub const DEFAULT_HIDDEN_SIZES: [u32; 2] = [64, 64];
    pub const MAX_HIDDEN_LAYERS: usize = 8;
    pub const MAX_HIDDEN_SIZE: i64 = 4096;
    /// The most labels `classWeights` may name, and the largest weight.
    pub const MAX_CLASS_WEIGHTS: usize = 10_000;
    pub const MAX_CLASS_WEIGHT: f64 = 1e6;
    pub const MAX_CLIP_NORM: f64 = 1e6;

    /// Parses user input with `default_learning_rate` for an absent learning rate. Field paths are
    /// reported under `prefix` (`hyperparameters`).
    pub fn parse(
        prefix: &str,
        input: &HyperparamsInput,
        default_learning_rate: f64,
    ) -> Result<Self, FieldError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let int_in = |name: &str, value: Option<i64>, default: i64, lo: i64, hi: i64| {
            let v = value.unwrap_or(default);
            if v < lo || v > hi {
                Err(FieldError::new(
                    field(name),
                    format!("must be between {lo} and {hi} (got {v})"),
                ))
            } else {
                Ok(v)
            }
        };
        // `lo` and `hi` inclusive unless marked open.
        let float_in = |name: &str, v: f64, lo: (f64, bool), hi: (f64, bool)| {
            let above = if lo.1 { v > lo.0 } else { v >= lo.0 };
            let below = if hi.1 { v < hi.0 } else { v <= hi.0 };
            if v.is_finite() && above && below {
                Ok(v)
            } else {
                let bound = |(b, open): (f64, bool), word: &str| {
                    format!("{word} {}{b}", if open { "than " } else { "or equal to " })
                };
                Err(FieldError::new(
                    field(name),
                    format!(
                        "must be {} and {} (got {v})",
                        bound(lo, "greater"),
                        bound(hi, "less")
                    ),
                ))
            }
        };
        let epochs = int_in(
            "epochs",
            input.epochs,
            Self::DEFAULT_EPOCHS as i64,
            1,
            Self::MAX_EPOCHS,
        )?;
        let batch_size = int_in(
            "batchSize",
            input.batch_size,
            Self::DEFAULT_BATCH_SIZE as i64,
            1,
            Self::MAX_BATCH_SIZE,
        )?;
        let learning_rate = input.learning_rate.unwrap_or(default_learning_rate);
        if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 1.0) {
            return Err(FieldError::new(
                field("learningRate"),
                format!("must be greater than 0 and at most 1 (got {learning_rate})"),
            ));
        }
        let validation_split = input
            .validation_split
            .unwrap_or(Self::DEFAULT_VALIDATION_SPLIT);
        if !(validation_split.is_finite() && validation_split > 0.0 && validation_split < 1.0) {
            return Err(FieldError::new(
                field("validationSplit"),
                format!("must be strictly between 0 and 1 (got {validation_split})"),
            ));
        }
        let seed = int_in("seed", input.seed, Self::DEFAULT_SEED as i64, 0, i64::MAX)?;
        let max_seq_length = int_in(
            "maxSeqLength",
            input.max_seq_length,
            Self::DEFAULT_MAX_SEQ_LENGTH as i64,
            8,
            Self::MAX_SEQ_LENGTH,
        )?;
        let checkpoint_every_steps = match input.checkpoint_every_steps {
            Some(v) => Some(int_in(
                "checkpointEverySteps",
                Some(v),
                1,
                1,
                Self::MAX_CHECKPOINT_EVERY_STEPS,
            )? as u32),
            None => None,
        };
        let keep_checkpoints = int_in(
            "keepCheckpoints",
            input.keep_checkpoints,
            Self::DEFAULT_KEEP_CHECKPOINTS as i64,
            1,
            Self::MAX_KEEP_CHECKPOINTS,
        )?;

        let optimizer = input.optimizer.unwrap_or_default();
        let momentum = match (input.momentum, optimizer) {
            (None, _) => 0.0,
            (Some(m), OptimizerChoice::Sgd) => float_in("momentum", m, (0.0, false), (1.0, true))?,
            (Some(_), OptimizerChoice::Adamw) => {
                return Err(FieldError::new(
                    field("momentum"),
                    "applies to optimizer SGD only (AdamW keeps its own moments)",
                ));
            }
        };
        let weight_decay = match input.weight_decay {
            Some(w) => float_in("weightDecay", w, (0.0, false), (1.0, false))?,
            None if optimizer == OptimizerChoice::Sgd => 0.0,
            None => Self::DEFAULT_WEIGHT_DECAY,
        };
        let warmup_ratio = float_in(
            "warmupRatio",
            input.warmup_ratio.unwrap_or(Self::DEFAULT_WARMUP_RATIO),
            (0.0, false),
            (1.0, true),
        )?;
        let gradient_clip_norm = input
            .gradient_clip_norm
            .map(|c| {
                float_in(
                    "gradientClipNorm",
                    c,
                    (0.0, true),
                    (Self::MAX_CLIP_NORM, false),
                )
            })
            .transpose()?;
        let gradient_accumulation_steps = int_in(
            "gradientAccumulationSteps",
            input.gradient_accumulation_steps,
            1,
            1,
            Self::MAX_ACCUMULATION_STEPS,
        )? as u32;
        let class_weights = input
            .class_weights
            .as_ref()
            .map(|c| Self::parse_class_weights(&field("classWeights"), c))
            .transpose()?;
        let early_stopping = match (input.early_stopping_patience, input.early_stopping_metric) {
            (Some(p), metric) => Some(EarlyStopping {
                patience: int_in("earlyStoppingPatience", Some(p), 1, 1, Self::MAX_PATIENCE)?
                    as u32,
                metric: metric.unwrap_or_default(),
            }),
            (None, Some(_)) => {
                return Err(FieldError::new(
                    field("earlyStoppingMetric"),
                    "needs earlyStoppingPatience (how many epochs without improvement to allow)",
                ));
            }
            (None, None) => None,
        };
        let freeze_layers = input
            .freeze_layers
            .map(|k| int_in("freezeLayers", Some(k), 0, 0, Self::MAX_FREEZE_LAYERS))
            .transpose()?
            .map(|k| k as u32);
        let dropout = input
            .dropout
            .map(|p| float_in("dropout", p, (0.0, false), (Self::MAX_DROPOUT, false)))
            .transpose()?;
        let hidden_sizes = match &input.hidden_sizes {
            None => None,
            Some(sizes) => {
                if sizes.is_empty() || sizes.len() > Self::MAX_HIDDEN_LAYERS {
                    return Err(FieldError::new(
                        field("hiddenSizes"),
                        format!(
                            "must list 1 to {} layer widths (got {})",
                            Self::MAX_HIDDEN_LAYERS,
                            sizes.len()
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(sizes.len());
                for (i, &s) in sizes.iter().enumerate() {
                    out.push(int_in(
                        &format!("hiddenSizes[{i}]"),
                        Some(s),
                        1,
                        1,
                        Self::MAX_HIDDEN_SIZE,
                    )? as u32);
                }
                Some(out)
            }
        };
        Ok(Self {
            epochs: epochs as u32,
            batch_size: batch_size as u32,
            learning_rate,
            validation_split,
            seed: seed as u64,
            max_seq_length: max_seq_length as u32,
            checkpoint_every_steps,
            keep_checkpoints: keep_checkpoints as u32,
            optimizer,
            momentum,
            weight_decay,
            lr_schedule: input.lr_schedule.unwrap_or_default(),
            warmup_ratio,
            gradient_clip_norm,
            gradient_accumulation_steps,
            class_weights,
            early_stopping,
            freeze_layers,
            dropout,
            pooling: input.pooling.unwrap_or_default(),
            hidden_sizes,
            augmentation: input
                .augmentation
                .as_ref()
                .map(|a| super::Augmentation::parse(&field("augmentation"), a))
                .transpose()?,
        })
    }

    fn parse_class_weights(
        field: &str,
        input: &ClassWeightsInput,
    ) -> Result<ClassWeights, FieldError> {
        match (input.balanced, &input.weights) {
            (Some(true), None) => Ok(ClassWeights::Balanced),
            (None | Some(false), Some(weights)) => {
                if weights.is_empty() || weights.len() > Self::MAX_CLASS_WEIGHTS {
                    return Err(FieldError::new(
                        format!("{field}.weights"),
                        format!(
                            "must name 1 to {} labels (got {})",
                            Self::MAX_CLASS_WEIGHTS,
                            weights.len()
                        ),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for (i, w) in weights.iter().enumerate() {
                    if !seen.insert(w.label.as_str()) {
                        return Err(FieldError::new(
                            format!("{field}.weights[{i}].label"),
                            format!("label {:?} is named twice", super::abbreviate(&w.label, 80)),
                        ));
                    }
                    if !(w.weight.is_finite()
                        && w.weight > 0.0
                        && w.weight <= Self::MAX_CLASS_WEIGHT)
                    {
                        return Err(FieldError::new(
                            format!("{field}.weights[{i}].weight"),
                            format!(
                                "must be greater than 0 and at most {} (got {})",
                                Self::MAX_CLASS_WEIGHT,
                                w.weight
                            ),
                        ));
                    }
                }
                Ok(ClassWeights::PerLabel(weights.clone()))
            }
            _ => Err(FieldError::new(
                field,
                "give exactly one of balanced: true or weights: [{label, weight}]",
            )),
        }
    }

    /// Hidden layer widths of a tabular model.
    pub fn tabular_hidden_sizes(&self) -> Vec<u32> {
        self.hidden_sizes
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_HIDDEN_SIZES.to_vec())
    }
}

/// Which linear layers of each encoder layer get LoRA adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoraTarget {
    Query,
    Key,
    Value,
    /// The attention block's output projection (`attention.output.dense`).
    AttentionOutput,
    /// The feed-forward block's first projection (`intermediate.dense`).
    Intermediate,
    /// The feed-forward block's second projection (`output.dense`).
    Output,
}

impl LoraTarget {
    /// The module's name inside an encoder layer, as HuggingFace and PEFT write it.
    pub fn module(self) -> &'static str {
        match self {
            Self::Query => "attention.self.query",
            Self::Key => "attention.self.key",
            Self::Value => "attention.self.value",
            Self::AttentionOutput => "attention.output.dense",
            Self::Intermediate => "intermediate.dense",
            Self::Output => "output.dense",
        }
    }
}

/// How a base model's weights are trained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomizationMethod {
    /// Every weight is trained.
    #[default]
    Full,
    /// The base weights are frozen; low-rank adapters and the head are trained.
    Lora,
}

/// A customization as sent: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomizationInput {
    pub method: Option<CustomizationMethod>,
    pub rank: Option<i64>,
    pub alpha: Option<f64>,
    pub dropout: Option<f64>,
    pub target_modules: Option<Vec<LoraTarget>>,
    pub merge_adapters: Option<bool>,
}

/// Checked LoRA settings: `W x` becomes `W x + (alpha / rank) · B A dropout(x)` for each target
/// module, with `A` (rank × in) and `B` (out × rank, zero at the start) trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoraSettings {
    pub rank: u32,
    pub alpha: f64,
    pub dropout: f64,
    /// Sorted, without repeats.
    pub target_modules: Vec<LoraTarget>,
    /// Export the adapters merged into the base weights (a plain BERT), or apart in PEFT's layout.
    pub merge_adapters: bool,
}

impl LoraSettings {
    pub const DEFAULT_RANK: u32 = 8;
    pub const MAX_RANK: i64 = 256;
    pub const DEFAULT_ALPHA: f64 = 16.0;
    pub const MAX_ALPHA: f64 = 4096.0;
    pub const DEFAULT_DROPOUT: f64 = 0.05;
    pub const DEFAULT_TARGETS: [LoraTarget; 2] = [LoraTarget::Query, LoraTarget::Value];

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// `None` for full fine-tuning.
    pub fn parse(prefix: &str, input: &CustomizationInput) -> Result<Option<Self>, FieldError> {
        let field = |name: &str| format!("{prefix}.{name}");
        if input.method.unwrap_or_default() == CustomizationMethod::Full {
            let given = [
                ("rank", input.rank.is_some()),
                ("alpha", input.alpha.is_some()),
                ("dropout", input.dropout.is_some()),
                ("targetModules", input.target_modules.is_some()),
                ("mergeAdapters", input.merge_adapters.is_some()),
            ];
            if let Some((name, _)) = given.iter().find(|(_, g)| *g) {
                return Err(FieldError::new(field(name), "applies to method LORA only"));
            }
            return Ok(None);
        }
        let rank = input.rank.unwrap_or(Self::DEFAULT_RANK as i64);
        if !(1..=Self::MAX_RANK).contains(&rank) {
            return Err(FieldError::new(
                field("rank"),
                format!("must be between 1 and {} (got {rank})", Self::MAX_RANK),
            ));
        }
        let alpha = input.alpha.unwrap_or(Self::DEFAULT_ALPHA);
        if !(alpha.is_finite() && alpha > 0.0 && alpha <= Self::MAX_ALPHA) {
            return Err(FieldError::new(
                field("alpha"),
                format!(
                    "must be greater than 0 and at most {} (got {alpha})",
                    Self::MAX_ALPHA
                ),
            ));
        }
        let dropout = input.dropout.unwrap_or(Self::DEFAULT_DROPOUT);
        if !(dropout.is_finite() && (0.0..=Hyperparams::MAX_DROPOUT).contains(&dropout)) {
            return Err(FieldError::new(
                field("dropout"),
                format!(
                    "must be between 0 and {} (got {dropout})",
                    Hyperparams::MAX_DROPOUT
                ),
            ));
        }
        let mut target_modules = input
            .target_modules
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_TARGETS.to_vec());
        target_modules.sort();
        target_modules.dedup();
        if target_modules.is_empty() {
            return Err(FieldError::new(
                field("targetModules"),
                "must name at least one module",
            ));
        }
        Ok(Some(Self {
            rank: rank as u32,
            alpha,
            dropout,
            target_modules,
            merge_adapters: input.merge_adapters.unwrap_or(true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: HyperparamsInput) -> Result<Hyperparams, FieldError> {
        Hyperparams::parse("hyperparameters", &input, 1e-3)
    }

    fn field_of(input: HyperparamsInput) -> String {
        parse(input).unwrap_err().field
    }

    #[test]
    fn hyperparameters_get_documented_defaults() {
        let h = Hyperparams::parse("hyperparameters", &HyperparamsInput::default(), 5e-5).unwrap();
        assert_eq!(h.epochs, 3);
        assert_eq!(h.batch_size, 16);
        assert_eq!(h.learning_rate, 5e-5);
        assert_eq!(h.validation_split, 0.2);
        assert_eq!(h.optimizer, OptimizerChoice::Adamw);
        assert_eq!(h.weight_decay, 0.01);
        assert_eq!(h.lr_schedule, LrSchedule::Linear);
        assert_eq!(h.warmup_ratio, 0.1);
        assert_eq!(h.gradient_accumulation_steps, 1);
        assert_eq!(h.pooling, Pooling::Mean);
        assert_eq!(h.tabular_hidden_sizes(), vec![64, 64]);
        let sgd = parse(HyperparamsInput {
            optimizer: Some(OptimizerChoice::Sgd),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((sgd.momentum, sgd.weight_decay), (0.0, 0.0));
    }

    #[test]
    fn stored_hyperparameters_from_before_the_options_read_back() {
        let old = r#"{"epochs":2,"batchSize":8,"learningRate":0.001,"validationSplit":0.2,
                      "seed":7,"maxSeqLength":64}"#;
        let h: Hyperparams = serde_json::from_str(old).unwrap();
        assert_eq!(h.weight_decay, 0.01);
        assert_eq!(h.warmup_ratio, 0.1);
        assert_eq!(h.gradient_accumulation_steps, 1);
        assert_eq!(h.keep_checkpoints, 2);
        assert_eq!(h.early_stopping, None);
    }

    #[test]
    fn bad_hyperparameters_name_their_field() {
        let cases: Vec<(HyperparamsInput, &str)> = vec![
            (
                HyperparamsInput {
                    epochs: Some(0),
                    ..Default::default()
                },
                "hyperparameters.epochs",
            ),
            (
                HyperparamsInput {
                    learning_rate: Some(0.0),
                    ..Default::default()
                },
                "hyperparameters.learningRate",
            ),
            (
                HyperparamsInput {
                    validation_split: Some(1.0),
                    ..Default::default()
                },
                "hyperparameters.validationSplit",
            ),
            (
                HyperparamsInput {
                    batch_size: Some(0),
                    ..Default::default()
                },
                "hyperparameters.batchSize",
            ),
            (
                HyperparamsInput {
                    momentum: Some(0.9),
                    ..Default::default()
                },
                "hyperparameters.momentum",
            ),
            (
                HyperparamsInput {
                    optimizer: Some(OptimizerChoice::Sgd),
                    momentum: Some(1.0),
                    ..Default::default()
                },
                "hyperparameters.momentum",
            ),
            (
                HyperparamsInput {
                    warmup_ratio: Some(1.0),
                    ..Default::default()
                },
                "hyperparameters.warmupRatio",
            ),
            (
                HyperparamsInput {
                    gradient_clip_norm: Some(0.0),
                    ..Default::default()
                },
                "hyperparameters.gradientClipNorm",
            ),
            (
                HyperparamsInput {
                    gradient_accumulation_steps: Some(0),
                    ..Default::default()
                },
                "hyperparameters.gradientAccumulationSteps",
            ),
            (
                HyperparamsInput {
                    early_stopping_metric: Some(EarlyStoppingMetric::F1),
                    ..Default::default()
                },
                "hyperparameters.earlyStoppingMetric",
            ),
            (
                HyperparamsInput {
                    dropout: Some(0.95),
                    ..Default::default()
                },
                "hyperparameters.dropout",
            ),
            (
                HyperparamsInput {
                    hidden_sizes: Some(vec![32, 0]),
                    ..Default::default()
                },
                "hyperparameters.hiddenSizes[1]",
            ),
            (
                HyperparamsInput {
                    class_weights: Some(ClassWeightsInput {
                        balanced: Some(true),
                        weights: Some(vec![]),
                    }),
                    ..Default::default()
                },
                "hyperparameters.classWeights",
            ),
            (
                HyperparamsInput {
                    class_weights: Some(ClassWeightsInput {
                        balanced: None,
                        weights: Some(vec![LabelWeight {
                            label: "a".into(),
                            weight: -1.0,
                        }]),
                    }),
                    ..Default::default()
                },
                "hyperparameters.classWeights.weights[0].weight",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(field_of(input.clone()), field, "{input:?}");
        }
    }

    #[test]
    fn class_weights_resolve_against_the_labels() {
        let labels = ["benign".to_string(), "injection".to_string()];
        let balanced = ClassWeights::Balanced.resolve(&labels, &[30, 10]).unwrap();
        assert_eq!(balanced, vec![40.0 / 60.0, 40.0 / 20.0]);
        let named = ClassWeights::PerLabel(vec![LabelWeight {
            label: "injection".into(),
            weight: 5.0,
        }]);
        assert_eq!(named.resolve(&labels, &[1, 1]).unwrap(), vec![1.0, 5.0]);
        let unknown = ClassWeights::PerLabel(vec![LabelWeight {
            label: "pii".into(),
            weight: 2.0,
        }]);
        let error = unknown.resolve(&labels, &[1, 1]).unwrap_err();
        assert!(error.message.contains("\"pii\""), "{}", error.message);
    }

    #[test]
    fn lora_settings_default_and_refuse_what_does_not_apply() {
        let lora = LoraSettings::parse(
            "customization",
            &CustomizationInput {
                method: Some(CustomizationMethod::Lora),
                target_modules: Some(vec![
                    LoraTarget::Value,
                    LoraTarget::Query,
                    LoraTarget::Value,
                ]),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(lora.rank, 8);
        assert_eq!(lora.scale(), 2.0);
        assert_eq!(
            lora.target_modules,
            vec![LoraTarget::Query, LoraTarget::Value]
        );
        assert!(lora.merge_adapters);
        let full_with_rank = CustomizationInput {
            rank: Some(4),
            ..Default::default()
        };
        assert_eq!(
            LoraSettings::parse("customization", &full_with_rank)
                .unwrap_err()
                .field,
            "customization.rank"
        );
        let zero = CustomizationInput {
            method: Some(CustomizationMethod::Lora),
            rank: Some(0),
            ..Default::default()
        };
        assert_eq!(
            LoraSettings::parse("customization", &zero)
                .unwrap_err()
                .field,
            "customization.rank"
        );
    }
}
