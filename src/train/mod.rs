//! The training engine: candle only. No tokio, no sqlx, no axum — it takes a [`TrainSpec`], reports
//! through a [`ProgressSink`], stops when its [`Interrupt`] says so, and returns a [`TrainOutcome`].
//! It runs the same from the service's runner, the CLI or a test.
//!
//! Models: a BERT-family text classifier ([`bert`]) that fine-tunes a HuggingFace-format directory (every
//! weight, the layers above `freezeLayers`, or LoRA adapters) or trains a small random-initialised one,
//! and a tabular MLP ([`mlp`]). Either may start from a registered version's export instead (a retrain:
//! its weights, tokenizer, head and, for an MLP, its layers and standardisation; [`retrain`]). Both
//! are plain classifiers ([`model`]) over a shared loop ([`fit`]): AdamW or SGD
//! ([`optim`]), (class-weighted) cross-entropy, gradient accumulation and clipping, a warm-up then a
//! constant, linear or cosine learning rate ([`schedule`]), a validation split held out with the seed,
//! metrics after every epoch (per label too, with the confusion matrix), early stopping that keeps the
//! best epoch, and the export ([`export`], its file names in [`files`]).
//!
//! Failures a user can act on (an unreadable `config.json`, a loss that became NaN) are `UserError`s in
//! the returned chain; the rest is for the server log.

mod attention;
pub mod bench;
pub mod bert;
pub mod checkpoint;
pub mod device;
pub mod export;
pub mod files;
mod fit;
pub mod inference;
mod layers;
pub mod memory;
pub mod metrics;
pub mod mlp;
mod model;
pub mod optim;
mod params;
mod readme;
mod retrain;
mod schedule;
pub mod tokenizer;

use std::path::PathBuf;

use candle_core::Device;

use crate::domain::{ModelManifest, TrainingSettings};

pub use crate::domain::{EpochMetrics, TrainData};
pub use checkpoint::{Checkpoint, CheckpointManifest};
pub use device::{DeviceChoice, Placement};
pub use fit::run;
pub use params::MAX_WEIGHTS_BYTES;

/// Everything one training run needs.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    /// Task, base model reference, model size and hyperparameters.
    pub settings: TrainingSettings,
    /// The examples, read a batch at a time; their label names are the model's labels.
    pub data: TrainData,
    /// The local HuggingFace-format directory (`config.json`, `tokenizer.json`, `model.safetensors`) of
    /// the settings' base model, wherever it was fetched to; for a registered version, the folder of
    /// its export (`kiln.json` too). `None` without a base model: a text task
    /// then trains a small random-initialised BERT with a tokenizer fitted on the training texts.
    pub base_dir: Option<PathBuf>,
    /// The trained model's files are written here.
    pub output_dir: PathBuf,
    pub device: Device,
    /// Refuse to start when the run's estimated peak memory ([`memory`]) is above this many bytes.
    pub max_memory: Option<u64>,
    /// Checkpoints are written into folders here (none when `None`): after every epoch, every
    /// `checkpointEverySteps` steps, and when a stop asks for one ([`Interrupt::checkpoint_on_stop`]).
    pub checkpoint_dir: Option<PathBuf>,
    /// A checkpoint of this run to go on from, exactly where it was.
    pub resume: Option<Checkpoint>,
}

impl TrainSpec {
    /// A run on the default device ([`default_device`]).
    pub fn new(
        settings: TrainingSettings,
        data: TrainData,
        base_dir: Option<PathBuf>,
        output_dir: PathBuf,
    ) -> Self {
        Self {
            settings,
            data,
            base_dir,
            output_dir,
            device: default_device(),
            max_memory: None,
            checkpoint_dir: None,
            resume: None,
        }
    }
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
    /// The model is built: how many of its parameters the run trains.
    fn on_start(&mut self, _parameters: &crate::domain::ParameterCount) {}
    fn on_step(&mut self, report: &StepReport);
    fn on_epoch(&mut self, metrics: &EpochMetrics);
    /// A checkpoint was written (its manifest last). The folder is the receiver's: the loop never
    /// writes into it again.
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint) {}
}

/// Asked before every step whether to stop (cancel, pause, shutdown).
pub trait Interrupt: Send + Sync {
    fn should_stop(&self) -> bool;
    /// Whether the stop should leave a checkpoint of where the run is (a pause, say; not a cancel).
    fn checkpoint_on_stop(&self) -> bool {
        false
    }
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
    /// What `kiln.json` holds (final metrics included).
    pub manifest: ModelManifest,
}

#[derive(Debug, Clone)]
pub enum TrainOutcome {
    Completed(Box<TrainedModel>),
    Interrupted { epochs_done: u32 },
}

/// The device `auto` chooses ([`DeviceChoice::Auto`]): the first CUDA GPU when kiln is built with
/// `cuda` and one can be opened, otherwise the CPU.
pub fn default_device() -> Device {
    DeviceChoice::Auto
        .open()
        .map(|placement| placement.device)
        .unwrap_or(Device::Cpu)
}
