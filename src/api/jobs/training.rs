//! The GraphQL form of a job's training settings: hyperparameters and the LoRA customization, as sent
//! and as stored (defaults filled in).

use async_graphql::{InputObject, SimpleObject};

use crate::domain::{self, ClassWeights, ClassWeightsInput, CustomizationInput, HyperparamsInput};

mirror_enum!(
    /// The update rule.
    Optimizer => domain::OptimizerChoice { Adamw, Sgd }
);
mirror_enum!(
    /// How the learning rate moves after the warm-up: stays (CONSTANT), or falls to 0 at the last step
    /// in a line (LINEAR) or along a half cosine (COSINE).
    LrSchedule => domain::LrSchedule { Constant, Linear, Cosine }
);
mirror_enum!(
    /// What early stopping watches: the validation loss (lower is better), accuracy or macro F1.
    EarlyStoppingMetric => domain::EarlyStoppingMetric { ValLoss, Accuracy, F1 }
);
mirror_enum!(
    /// How a text model turns token states into one vector: their masked mean (MEAN), or BERT's
    /// pooler over the [CLS] token (CLS, as `BertForSequenceClassification`).
    Pooling => domain::Pooling { Mean, Cls }
);
mirror_enum!(
    /// How a base model is trained: every weight (FULL) or low-rank adapters (LORA).
    CustomizationMethod => domain::CustomizationMethod { Full, Lora }
);
mirror_enum!(
    /// An encoder layer's linear modules LoRA can adapt: the attention's QUERY, KEY, VALUE and
    /// ATTENTION_OUTPUT projections, and the feed-forward INTERMEDIATE and OUTPUT projections.
    LoraTarget => domain::LoraTarget { Query, Key, Value, AttentionOutput, Intermediate, Output }
);

/// One label's weight in the loss.
#[derive(InputObject, SimpleObject, Clone)]
#[graphql(input_name = "LabelWeightInput")]
pub struct LabelWeight {
    pub label: String,
    /// Greater than 0, at most 1000000.
    pub weight: f64,
}

/// Per-label weights of the loss: exactly one of `balanced: true` (each label weighs
/// `examples / (labels × its examples)` over the training split) or `weights` (named labels get their
/// weight, the others 1).
#[derive(InputObject)]
pub struct ClassWeightsInputGql {
    pub balanced: Option<bool>,
    /// 1 to 10000 labels, each named once.
    pub weights: Option<Vec<LabelWeight>>,
}

/// Training settings; every field is optional.
///
/// Defaults: epochs 3, batchSize 16; learningRate 5e-5 when fine-tuning a text `baseModel`, 2e-4 with
/// LoRA, 1e-3 from random weights and for a tabular model (retrained or not); validationSplit 0.2, seed 42, maxSeqLength 128; a checkpoint after every
/// epoch only, keepCheckpoints 2; optimizer ADAMW with weightDecay 0.01 (SGD: momentum 0, weightDecay
/// 0); lrSchedule LINEAR with warmupRatio 0.1; no gradient clipping; gradientAccumulationSteps 1; no
/// class weights; no early stopping (earlyStoppingMetric VAL_LOSS once a patience is given); nothing
/// frozen; dropout the base model's `hidden_dropout_prob` (text) or 0.1 (tabular); pooling MEAN;
/// hiddenSizes [64, 64] (tabular).
///
/// Limits: epochs 1–1000, batchSize 1–4096, learningRate in (0, 1], validationSplit in (0, 1),
/// maxSeqLength 8–512, checkpointEverySteps 1–1000000, keepCheckpoints 1–100, momentum in [0, 1),
/// weightDecay in [0, 1], warmupRatio in [0, 1), gradientClipNorm in (0, 1e6],
/// gradientAccumulationSteps 1–1024, earlyStoppingPatience 1–1000, freezeLayers 0–48 (and at most the
/// model's layers), dropout in [0, 0.9], hiddenSizes 1–8 layers of 1–4096.
#[derive(InputObject, Default)]
pub struct HyperparametersInput {
    pub epochs: Option<i32>,
    pub batch_size: Option<i32>,
    pub learning_rate: Option<f64>,
    pub validation_split: Option<f64>,
    /// The same seed gives the same split, initial weights, data order and dropout: on the CPU, the
    /// same metrics.
    pub seed: Option<i64>,
    /// Text tasks: tokens kept per example.
    pub max_seq_length: Option<i32>,
    /// Also checkpoint every this many steps (besides after every epoch).
    pub checkpoint_every_steps: Option<i32>,
    /// How many of the job's newest checkpoints are kept; older ones are deleted once a newer one is
    /// stored.
    pub keep_checkpoints: Option<i32>,
    pub optimizer: Option<Optimizer>,
    /// SGD only.
    pub momentum: Option<f64>,
    /// AdamW: decoupled weight decay; SGD: L2 penalty added to the gradient.
    pub weight_decay: Option<f64>,
    pub lr_schedule: Option<LrSchedule>,
    /// Share of all steps spent raising the learning rate linearly from 0.
    pub warmup_ratio: Option<f64>,
    /// Gradients are scaled down so that their global L2 norm is at most this.
    pub gradient_clip_norm: Option<f64>,
    /// Batches whose gradients are summed (as one batch this many times larger) into one optimizer
    /// step.
    pub gradient_accumulation_steps: Option<i32>,
    pub class_weights: Option<ClassWeightsInputGql>,
    /// Stop after this many epochs without improvement of `earlyStoppingMetric`; the best epoch's
    /// weights are the ones kept.
    pub early_stopping_patience: Option<i32>,
    pub early_stopping_metric: Option<EarlyStoppingMetric>,
    /// Text tasks: freeze the embeddings and the first this many encoder layers (0: the embeddings
    /// only).
    pub freeze_layers: Option<i32>,
    pub dropout: Option<f64>,
    /// Text tasks.
    pub pooling: Option<Pooling>,
    /// Tabular tasks: the widths of the hidden layers.
    pub hidden_sizes: Option<Vec<i32>>,
    /// Text tasks: augment every training text afresh each epoch with these techniques (each applied
    /// with its probability, so a text may also stay as it is), drawn from the job's seed, the epoch
    /// and the row: reproducible, and resumed exactly from a checkpoint. Validation texts are never
    /// augmented.
    pub augmentation: Option<crate::api::augment::AugmentationInput>,
}

impl From<HyperparametersInput> for HyperparamsInput {
    fn from(h: HyperparametersInput) -> Self {
        HyperparamsInput {
            epochs: h.epochs.map(Into::into),
            batch_size: h.batch_size.map(Into::into),
            learning_rate: h.learning_rate,
            validation_split: h.validation_split,
            seed: h.seed,
            max_seq_length: h.max_seq_length.map(Into::into),
            checkpoint_every_steps: h.checkpoint_every_steps.map(Into::into),
            keep_checkpoints: h.keep_checkpoints.map(Into::into),
            optimizer: h.optimizer.map(Into::into),
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            lr_schedule: h.lr_schedule.map(Into::into),
            warmup_ratio: h.warmup_ratio,
            gradient_clip_norm: h.gradient_clip_norm,
            gradient_accumulation_steps: h.gradient_accumulation_steps.map(Into::into),
            class_weights: h.class_weights.map(|c| ClassWeightsInput {
                balanced: c.balanced,
                weights: c.weights.map(|ws| {
                    ws.into_iter()
                        .map(|w| domain::LabelWeight {
                            label: w.label,
                            weight: w.weight,
                        })
                        .collect()
                }),
            }),
            early_stopping_patience: h.early_stopping_patience.map(Into::into),
            early_stopping_metric: h.early_stopping_metric.map(Into::into),
            freeze_layers: h.freeze_layers.map(Into::into),
            dropout: h.dropout,
            pooling: h.pooling.map(Into::into),
            hidden_sizes: h
                .hidden_sizes
                .map(|s| s.into_iter().map(Into::into).collect()),
            augmentation: h.augmentation.map(Into::into),
        }
    }
}

/// LoRA: the base weights stay as they are; low-rank adapters `B A` (scaled by `alpha / rank`) on the
/// `targetModules` of every encoder layer, the head and (with CLS pooling) the pooler are trained.
/// Text tasks with a `baseModel` only.
///
/// Defaults for LORA: rank 8, alpha 16, dropout 0.05, targetModules [QUERY, VALUE], mergeAdapters
/// true. Limits: rank 1–256 (and at most the adapted layer's smaller side), alpha in (0, 4096],
/// dropout in [0, 0.9].
#[derive(InputObject, Default)]
pub struct CustomizationInputGql {
    /// Default FULL (every weight trained); the other fields apply to LORA only.
    pub method: Option<CustomizationMethod>,
    pub rank: Option<i32>,
    pub alpha: Option<f64>,
    /// Dropout on each adapter's input.
    pub dropout: Option<f64>,
    pub target_modules: Option<Vec<LoraTarget>>,
    /// true: the exported `model.safetensors` has the adapters merged in, and loads anywhere a BERT
    /// loads. false: it keeps the base weights, and the adapters are written apart in PEFT's layout
    /// (`adapter_model.safetensors`, `adapter_config.json`).
    pub merge_adapters: Option<bool>,
}

impl From<CustomizationInputGql> for CustomizationInput {
    fn from(c: CustomizationInputGql) -> Self {
        CustomizationInput {
            method: c.method.map(Into::into),
            rank: c.rank.map(Into::into),
            alpha: c.alpha,
            dropout: c.dropout,
            target_modules: c
                .target_modules
                .map(|t| t.into_iter().map(Into::into).collect()),
            merge_adapters: c.merge_adapters,
        }
    }
}

/// Hyperparameters a job trains with, defaults filled in.
#[derive(SimpleObject)]
pub struct Hyperparameters {
    pub epochs: i32,
    pub batch_size: i32,
    pub learning_rate: f64,
    pub validation_split: f64,
    pub seed: String,
    pub max_seq_length: i32,
    /// A checkpoint every this many steps besides the one after each epoch; null: epochs only.
    pub checkpoint_every_steps: Option<i32>,
    pub keep_checkpoints: i32,
    pub optimizer: Optimizer,
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_ratio: f64,
    pub gradient_clip_norm: Option<f64>,
    pub gradient_accumulation_steps: i32,
    /// true when the weights are `balanced`; false with explicit `classWeights` or none.
    pub balanced_class_weights: bool,
    /// Explicit per-label weights, as given.
    pub class_weights: Option<Vec<LabelWeight>>,
    pub early_stopping_patience: Option<i32>,
    pub early_stopping_metric: Option<EarlyStoppingMetric>,
    pub freeze_layers: Option<i32>,
    /// null: the base model's own (text) or 0.1 (tabular).
    pub dropout: Option<f64>,
    pub pooling: Pooling,
    /// Tabular tasks.
    pub hidden_sizes: Option<Vec<i32>>,
    /// Text tasks: the techniques training texts are augmented with each epoch.
    pub augmentation: Option<crate::api::augment::TrainingAugmentation>,
}

impl From<&domain::Hyperparams> for Hyperparameters {
    fn from(h: &domain::Hyperparams) -> Self {
        Self {
            epochs: h.epochs as i32,
            batch_size: h.batch_size as i32,
            learning_rate: h.learning_rate,
            validation_split: h.validation_split,
            seed: h.seed.to_string(),
            max_seq_length: h.max_seq_length as i32,
            checkpoint_every_steps: h.checkpoint_every_steps.map(|s| s as i32),
            keep_checkpoints: h.keep_checkpoints as i32,
            optimizer: h.optimizer.into(),
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            lr_schedule: h.lr_schedule.into(),
            warmup_ratio: h.warmup_ratio,
            gradient_clip_norm: h.gradient_clip_norm,
            gradient_accumulation_steps: h.gradient_accumulation_steps as i32,
            balanced_class_weights: h.class_weights == Some(ClassWeights::Balanced),
            class_weights: match &h.class_weights {
                Some(ClassWeights::PerLabel(ws)) => Some(
                    ws.iter()
                        .map(|w| LabelWeight {
                            label: w.label.clone(),
                            weight: w.weight,
                        })
                        .collect(),
                ),
                _ => None,
            },
            early_stopping_patience: h.early_stopping.map(|e| e.patience as i32),
            early_stopping_metric: h.early_stopping.map(|e| e.metric.into()),
            freeze_layers: h.freeze_layers.map(|k| k as i32),
            dropout: h.dropout,
            pooling: h.pooling.into(),
            hidden_sizes: h
                .hidden_sizes
                .as_ref()
                .map(|s| s.iter().map(|&v| v as i32).collect()),
            augmentation: h.augmentation.as_ref().map(Into::into),
        }
    }
}

/// A job's LoRA settings.
#[derive(SimpleObject)]
pub struct Customization {
    pub method: CustomizationMethod,
    pub rank: i32,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<LoraTarget>,
    pub merge_adapters: bool,
}

impl From<&domain::LoraSettings> for Customization {
    fn from(l: &domain::LoraSettings) -> Self {
        Self {
            method: CustomizationMethod::Lora,
            rank: l.rank as i32,
            alpha: l.alpha,
            dropout: l.dropout,
            target_modules: l.target_modules.iter().map(|&t| t.into()).collect(),
            merge_adapters: l.merge_adapters,
        }
    }
}

/// How many parameters a job trains, of how many its model has.
#[derive(SimpleObject)]
pub struct ParameterCount {
    pub trainable: i64,
    pub total: i64,
}

impl From<domain::ParameterCount> for ParameterCount {
    fn from(p: domain::ParameterCount) -> Self {
        Self {
            trainable: p.trainable as i64,
            total: p.total as i64,
        }
    }
}
