//! Exact resumption: a run stopped at a checkpoint and continued gives the same step losses, the same
//! epoch metrics and the same model bytes as a run that was never interrupted.
//!
//! Here the engine itself (`kiln::train::run`) is stopped and resumed; `jobs_resume.rs` does it through
//! the service: pause and resume, and a worker killed with SIGKILL.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln::data::{FieldNames, ReadOptions};
use kiln::domain::{
    DatasetFormat, EpochMetrics, HyperparamsInput, TaskKind, TrainData, TrainingInput,
    TrainingSettings,
};
use kiln::service::training::index_file;
use kiln::train::{
    Checkpoint, Interrupt, ProgressSink, StepReport, TrainOutcome, TrainSpec, checkpoint,
};

use crate::helpers::{separable_tabular_csv, separable_text_jsonl};

/// What a run reported, and the checkpoints it wrote.
#[derive(Default)]
pub struct Record {
    pub losses: Vec<(u64, u64)>,
    pub epochs: Vec<EpochMetrics>,
    pub checkpoints: Vec<u64>,
    pub parameters: Option<kiln::domain::ParameterCount>,
    pub learning_rates: Vec<f64>,
}

impl ProgressSink for Record {
    fn on_start(&mut self, parameters: &kiln::domain::ParameterCount) {
        self.parameters = Some(*parameters);
    }
    fn on_step(&mut self, r: &StepReport) {
        self.losses.push((r.step, r.loss.to_bits()));
        self.learning_rates.push(r.learning_rate);
    }
    fn on_epoch(&mut self, m: &EpochMetrics) {
        self.epochs.push(m.clone());
    }
    fn on_checkpoint(&mut self, c: &Checkpoint) {
        self.checkpoints.push(c.manifest.step);
    }
}

/// Stops before step `at` (counting the steps this run makes), leaving a checkpoint.
pub struct StopBefore {
    pub at: u64,
    pub asked: AtomicU64,
}

impl Interrupt for StopBefore {
    fn should_stop(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst) + 1 >= self.at
    }
    fn checkpoint_on_stop(&self) -> bool {
        true
    }
}

pub struct Never;
impl Interrupt for Never {
    fn should_stop(&self) -> bool {
        false
    }
}

pub fn data(dir: &Path, name: &str, bytes: Vec<u8>, format: DatasetFormat) -> TrainData {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let names = FieldNames::default();
    index_file(&path, &ReadOptions::new(format, names))
        .unwrap()
        .unwrap_or_else(|summary| panic!("invalid test data: {:?}", summary.errors))
}

fn settings(task: TaskKind, every: Option<i64>) -> TrainingSettings {
    TrainingSettings::parse(&TrainingInput {
        task: Some(task),
        base_model: None,
        model_config: None,
        hyperparameters: HyperparamsInput {
            epochs: Some(3),
            batch_size: Some(8),
            seed: Some(11),
            max_seq_length: Some(16),
            checkpoint_every_steps: every,
            keep_checkpoints: Some(100),
            ..Default::default()
        },
        customization: None,
        reset_head: false,
    })
    .unwrap()
}

/// Runs to the end (from `resume` when given) and returns what it reported and the model's bytes.
pub fn run(spec: &TrainSpec, interrupt: &dyn Interrupt, record: &mut Record) -> Option<Vec<u8>> {
    match kiln::train::run(spec, record, interrupt).unwrap() {
        TrainOutcome::Completed(_) => {
            Some(std::fs::read(spec.output_dir.join("model.safetensors")).unwrap())
        }
        TrainOutcome::Interrupted { .. } => None,
    }
}

pub fn spec(root: &Path, name: &str, settings: &TrainingSettings, data: &TrainData) -> TrainSpec {
    let mut spec = TrainSpec::new(
        settings.clone(),
        data.clone(),
        None,
        root.join(name).join("model"),
    );
    spec.device = candle_core::Device::Cpu;
    spec.checkpoint_dir = Some(root.join(name).join("checkpoints"));
    spec
}

/// The uninterrupted run, then for each stop point a run stopped there and one resumed from its
/// newest checkpoint: together they must report exactly what the uninterrupted run did.
fn assert_exact_resume(data: TrainData, task: TaskKind, stops: &[u64]) {
    assert_exact_resume_with(data, &settings(task, Some(3)), None, stops);
}

/// The same for any settings (they must checkpoint every 3 steps), from `base_dir`'s weights when
/// given.
pub fn assert_exact_resume_with(
    data: TrainData,
    settings: &TrainingSettings,
    base_dir: Option<&Path>,
    stops: &[u64],
) {
    let root = tempfile::tempdir().unwrap();
    let spec = |root: &Path, name: &str, settings: &TrainingSettings, data: &TrainData| {
        let mut s = spec(root, name, settings, data);
        s.base_dir = base_dir.map(Path::to_path_buf);
        s
    };
    let settings = settings.clone();
    let mut straight = Record::default();
    let reference = spec(root.path(), "straight", &settings, &data);
    let model = run(&reference, &Never, &mut straight).expect("completes");
    assert!(
        straight.losses.len() as u64 > stops.iter().copied().max().unwrap_or(0) + 3,
        "{} steps",
        straight.losses.len()
    );
    assert!(
        straight.checkpoints.len() > straight.epochs.len(),
        "checkpoints every 3 steps and after each epoch: {:?}",
        straight.checkpoints
    );

    for &stop in stops {
        let name = format!("stopped-{stop}");
        let mut first = Record::default();
        let stopped = spec(root.path(), &name, &settings, &data);
        let interrupt = StopBefore {
            at: stop,
            asked: AtomicU64::new(0),
        };
        assert!(run(&stopped, &interrupt, &mut first).is_none(), "stopped");
        assert_eq!(first.losses.len() as u64, stop - 1);
        let latest = Checkpoint::latest(stopped.checkpoint_dir.as_ref().unwrap())
            .unwrap()
            .expect("a checkpoint at the stop");
        assert_eq!(latest.manifest.step, stop - 1);

        let mut resumed = spec(root.path(), &name, &settings, &data);
        resumed.resume = Some(latest);
        let mut second = Record::default();
        let resumed_model = run(&resumed, &Never, &mut second).expect("completes");
        first.losses.extend(second.losses);
        first.epochs.extend(second.epochs);
        assert_eq!(first.losses, straight.losses, "step losses, stop at {stop}");
        assert_eq!(
            first.epochs, straight.epochs,
            "epoch metrics, stop at {stop}"
        );
        assert!(
            resumed_model == model,
            "model.safetensors bytes, stop at {stop}"
        );
        assert_eq!(
            std::fs::read(resumed.output_dir.join("kiln.json")).unwrap(),
            std::fs::read(reference.output_dir.join("kiln.json")).unwrap()
        );
    }

    // Any checkpoint the straight run left resumes to the same end too.
    let dir = reference.checkpoint_dir.as_ref().unwrap();
    let some_step = straight.checkpoints[1];
    let mut resumed = spec(root.path(), "from-straight", &settings, &data);
    resumed.resume = Some(Checkpoint::read(&dir.join(Checkpoint::folder_name(some_step))).unwrap());
    let mut rest = Record::default();
    assert!(run(&resumed, &Never, &mut rest).unwrap() == model);
    assert_eq!(rest.losses, straight.losses[some_step as usize..].to_vec());
}

#[test]
fn a_small_bert_resumed_from_a_checkpoint_ends_bit_for_bit_as_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(
        dir.path(),
        "text.jsonl",
        separable_text_jsonl(50, 5),
        DatasetFormat::Jsonl,
    );
    // Mid-epoch after a step checkpoint, mid-epoch between checkpoints, and at an epoch's start.
    assert_exact_resume(data, TaskKind::TextClassification, &[5, 8, 6]);
}

#[test]
fn a_run_that_augments_its_texts_each_epoch_resumes_exactly() {
    use kiln::domain::{Augmentation, Technique};
    let dir = tempfile::tempdir().unwrap();
    let plain = data(
        dir.path(),
        "text.jsonl",
        separable_text_jsonl(50, 5),
        DatasetFormat::Jsonl,
    );
    let mut settings = settings(TaskKind::TextClassification, Some(3));
    settings.hyperparameters.augmentation = Some(Augmentation::of(&[
        Technique::Swap,
        Technique::Leetspeak,
        Technique::ZeroWidth,
    ]));
    let augmented = kiln::service::training::augmented(plain.clone(), &settings.hyperparameters);
    // Each epoch trains on another draw of a text, the same draw every time it is asked for; the
    // text itself (what validation reads) stays.
    let first = augmented.training_text(0, 1).unwrap();
    assert_eq!(first, augmented.training_text(0, 1).unwrap());
    assert_ne!(first, augmented.training_text(0, 2).unwrap());
    assert_ne!(first, plain.text(0).unwrap());
    assert_eq!(augmented.text(0).unwrap(), plain.text(0).unwrap());
    assert_exact_resume_with(augmented, &settings, None, &[5, 8]);
}

#[test]
fn an_mlp_resumed_from_a_checkpoint_ends_bit_for_bit_as_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(
        dir.path(),
        "table.csv",
        separable_tabular_csv(60, 3),
        DatasetFormat::Csv,
    );
    assert_exact_resume(data, TaskKind::TabularClassification, &[4, 7, 13]);
}

#[test]
fn a_checkpoint_of_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(
        dir.path(),
        "table.csv",
        separable_tabular_csv(40, 3),
        DatasetFormat::Csv,
    );
    let settings = settings(TaskKind::TabularClassification, None);
    let first = spec(dir.path(), "first", &settings, &data);
    run(&first, &Never, &mut Record::default()).unwrap();
    let latest = Checkpoint::latest(first.checkpoint_dir.as_ref().unwrap())
        .unwrap()
        .unwrap();
    let other = self::data(
        dir.path(),
        "other.csv",
        separable_tabular_csv(30, 4),
        DatasetFormat::Csv,
    );
    let mut second = spec(dir.path(), "second", &settings, &other);
    second.resume = Some(latest);
    let err = kiln::train::run(&second, &mut Record::default(), &Never).unwrap_err();
    assert!(
        format!("{err:#}").contains("belongs to another run"),
        "{err:#}"
    );
    // Older checkpoints are pruned to keepCheckpoints by whoever keeps them.
    let root = first.checkpoint_dir.as_ref().unwrap();
    checkpoint::prune(root, 1).unwrap();
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 1);
}
