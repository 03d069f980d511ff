//! The training engine: candle only. No tokio, no sqlx, no axum — it takes a [`TrainSpec`], reports
//! through a [`ProgressSink`], stops when its [`Interrupt`] says so, and returns a [`TrainOutcome`].
//! It runs the same from the service's runner, the CLI or a test.
//!
//! Models: a BERT-family text classifier ([`bert`]) that fine-tunes every weight of a HuggingFace-format
//! directory or trains a small random-initialised one, and a tabular MLP ([`mlp`]). Both are plain
//! classifiers over a shared loop ([`fit`]): AdamW, cross-entropy, linear warm-up then linear decay of the
//! learning rate, a validation split held out with the seed, metrics after every epoch.

pub mod bert;
mod fit;
pub mod metrics;
pub mod mlp;
mod params;
pub mod tokenizer;

use std::path::PathBuf;

use candle_core::Device;

use crate::domain::{Hyperparams, ModelConfig, TaskKind};

pub use fit::run;
pub use metrics::EpochMetrics;

/// Examples to learn from, already parsed and checked by `data/`. Labels index into
/// [`TrainSpec::label_names`].
#[derive(Debug, Clone)]
pub enum TrainData {
    Text {
        texts: Vec<String>,
        labels: Vec<u32>,
    },
    Tabular {
        feature_names: Vec<String>,
        features: Vec<Vec<f32>>,
        labels: Vec<u32>,
    },
}

impl TrainData {
    pub fn len(&self) -> usize {
        match self {
            Self::Text { labels, .. } | Self::Tabular { labels, .. } => labels.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> &[u32] {
        match self {
            Self::Text { labels, .. } | Self::Tabular { labels, .. } => labels,
        }
    }
}

/// Where a text model's weights come from.
#[derive(Debug, Clone)]
pub enum BaseModel {
    /// A local HuggingFace-format directory: `config.json`, `tokenizer.json`, `model.safetensors`.
    Pretrained(PathBuf),
    /// A small BERT with random weights and a WordPiece tokenizer fitted on the training texts.
    Random(ModelConfig),
}

/// Everything one training run needs.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    pub task: TaskKind,
    pub data: TrainData,
    pub label_names: Vec<String>,
    pub hyper: Hyperparams,
    /// Ignored for tabular tasks.
    pub base: BaseModel,
    /// The trained model's files are written here.
    pub output_dir: PathBuf,
    pub device: Device,
}

/// Reported after every optimiser step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based, counted across epochs.
    pub step: u64,
    pub total_steps: u64,
    /// 1-based.
    pub epoch: u32,
    pub total_epochs: u32,
    pub loss: f64,
    pub learning_rate: f64,
    pub samples_per_second: f64,
    pub elapsed_seconds: f64,
}

/// Receives progress from the training thread. Implementations must not block for long: they run between
/// optimiser steps.
pub trait ProgressSink: Send {
    fn on_step(&mut self, report: &StepReport);
    fn on_epoch(&mut self, metrics: &EpochMetrics);
}

/// Asked before every step whether to stop (cancel, pause, shutdown).
pub trait Interrupt: Send + Sync {
    fn should_stop(&self) -> bool;
}

impl Interrupt for std::sync::atomic::AtomicBool {
    fn should_stop(&self) -> bool {
        self.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A finished model: its files are in [`TrainSpec::output_dir`].
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// File names written to the output directory.
    pub files: Vec<String>,
    pub final_metrics: EpochMetrics,
    pub parameter_count: usize,
}

#[derive(Debug, Clone)]
pub enum TrainOutcome {
    Completed(TrainedModel),
    Interrupted { epochs_done: u32 },
}

/// The device training runs on: the first CUDA GPU when kiln is built with `cuda` and one is present,
/// otherwise the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(device) = Device::new_cuda(0) {
            return device;
        }
    }
    Device::Cpu
}
