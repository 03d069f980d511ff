//! Checkpoints: everything a run needs to go on exactly as if it had never stopped.
//!
//! A checkpoint is a folder (`step-<step>/`) of three files:
//! - `weights.safetensors` — every trainable parameter under its own name (frozen ones, such as a
//!   LoRA run's base weights, come from the base model again);
//! - `optimizer.safetensors` — the optimizer's state buffers (`<parameter>.exp_avg`, …);
//! - with early stopping, `best.safetensors` — the trainable weights of the best epoch so far;
//! - `checkpoint.json` — [`CheckpointManifest`]: the step, the data cursor (epochs finished, batches of
//!   the current epoch done), the current epoch's running loss sum, the last finished epoch's metrics,
//!   the optimizer's rule and update count, the run's seed, the elapsed time, and each file's size and
//!   SHA-256.
//!
//! The manifest is written last (to a temporary name, then renamed), so a folder without one is an
//! unfinished checkpoint and is ignored; a file whose hash differs from the manifest's is refused.
//! The random state needs no bytes of its own: kiln draws each epoch's data order and each step's dropout
//! masks from generators seeded by `(seed, epoch)` and `(seed, step)`, so the cursor fixes them.
//! The learning-rate schedule is a function of the step.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::EpochMetrics;

pub const MANIFEST: &str = "checkpoint.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// With early stopping: the trainable weights of the best epoch so far.
pub const BEST: &str = "best.safetensors";

/// Where a run stands, as a checkpoint records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointManifest {
    pub format_version: u32,
    /// Optimizer steps done (1-based steps; 0 before the first).
    pub step: u64,
    /// Epochs finished, evaluation included.
    pub epochs_done: u32,
    /// Batches of epoch `epochs_done + 1` done.
    pub batches_done: u64,
    /// The sum of the current epoch's batch losses, each times its batch size, so far.
    pub epoch_loss_sum: f64,
    /// Examples the current epoch has trained on so far.
    pub epoch_examples: u64,
    /// The metrics of the last finished epoch.
    pub last_epoch: Option<EpochMetrics>,
    /// The optimizer's rule (`adamw`, `sgd`) and its update count.
    pub optimizer: String,
    pub optimizer_steps: u64,
    pub seed: u64,
    /// The run's examples and labels: a checkpoint only resumes the same data.
    pub examples: u64,
    pub labels: Vec<String>,
    /// Training time before this checkpoint, in seconds.
    pub elapsed_seconds: f64,
    /// With early stopping: the best epoch so far, whose trainable weights are in [`BEST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<EpochMetrics>,
    pub files: Vec<CheckpointFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl CheckpointManifest {
    pub const FORMAT_VERSION: u32 = 1;

    /// Bytes of the checkpoint's files, the manifest not counted.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The file names a checkpoint folder holds, the manifest last (the order to copy them in).
    pub fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.files.iter().map(|f| f.name.clone()).collect();
        names.push(MANIFEST.to_string());
        names
    }
}

/// A checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub manifest: CheckpointManifest,
}

impl Checkpoint {
    /// Reads a checkpoint folder and checks every file against its manifest.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let manifest: CheckpointManifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a checkpoint manifest", path.display()))?;
        if manifest.format_version > CheckpointManifest::FORMAT_VERSION {
            bail!(
                "{} has format version {}; this kiln reads up to {}",
                path.display(),
                manifest.format_version,
                CheckpointManifest::FORMAT_VERSION
            );
        }
        for file in &manifest.files {
            let (bytes, sha256) = digest(&dir.join(&file.name))?;
            ensure!(
                bytes == file.bytes && sha256 == file.sha256,
                "the checkpoint file {} does not match its manifest (damaged or incomplete)",
                dir.join(&file.name).display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The folder name of the checkpoint at `step`: zero-padded, so names sort by step.
    pub fn folder_name(step: u64) -> String {
        format!("step-{step:010}")
    }

    /// The newest complete checkpoint under `root` (folders named by [`Checkpoint::folder_name`]), or
    /// `root` itself when it is a checkpoint.
    pub fn latest(root: &Path) -> Result<Option<Self>> {
        if root.join(MANIFEST).is_file() {
            return Self::read(root).map(Some);
        }
        for dir in folders(root)?.into_iter().rev() {
            if dir.join(MANIFEST).is_file() {
                return Self::read(&dir).map(Some);
            }
        }
        Ok(None)
    }
}

/// Checkpoint folders under `root`, oldest first.
fn folders(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("step-") && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Keeps the newest `keep` complete checkpoints under `root` and removes older ones (and unfinished
/// ones older than the newest complete one). Call it only once the newest manifest is written.
pub fn prune(root: &Path, keep: usize) -> Result<()> {
    let dirs = folders(root)?;
    let complete: Vec<&PathBuf> = dirs.iter().filter(|d| d.join(MANIFEST).is_file()).collect();
    let Some(newest) = complete.last() else {
        return Ok(());
    };
    let kept: Vec<&PathBuf> = complete.iter().rev().take(keep.max(1)).copied().collect();
    for dir in &dirs {
        if !kept.contains(&dir) && dir.as_path() < newest.as_path() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes the manifest into `dir` after the files it names, which must be there: each is measured and
/// hashed, then the manifest is written to a temporary name and renamed into place.
pub fn publish(dir: &Path, mut manifest: CheckpointManifest, files: &[&str]) -> Result<Checkpoint> {
    manifest.files = files
        .iter()
        .map(|name| {
            let (bytes, sha256) = digest(&dir.join(name))?;
            Ok(CheckpointFile {
                name: name.to_string(),
                bytes,
                sha256,
            })
        })
        .collect::<Result<_>>()?;
    let text = serde_json::to_vec_pretty(&manifest)?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    sync(&tmp)?;
    std::fs::rename(&tmp, dir.join(MANIFEST))
        .with_context(|| format!("publishing the checkpoint in {}", dir.display()))?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        manifest,
    })
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Size and hex SHA-256 of a file, read in pieces.
pub fn digest(path: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(step: u64) -> CheckpointManifest {
        CheckpointManifest {
            format_version: 1,
            step,
            epochs_done: 0,
            batches_done: step,
            epoch_loss_sum: 0.1 + 0.2,
            epoch_examples: 3,
            last_epoch: None,
            optimizer: "adamw".into(),
            optimizer_steps: step,
            seed: 7,
            examples: 10,
            labels: vec!["a".into(), "b".into()],
            elapsed_seconds: 1.5,
            best_epoch: None,
            files: Vec::new(),
        }
    }

    fn write(root: &Path, step: u64) -> Checkpoint {
        let dir = root.join(Checkpoint::folder_name(step));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(WEIGHTS), format!("weights {step}")).unwrap();
        publish(&dir, manifest(step), &[WEIGHTS]).unwrap()
    }

    #[test]
    fn a_damaged_file_or_a_missing_manifest_is_not_a_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let first = write(root.path(), 1);
        let read = Checkpoint::read(&first.dir).unwrap();
        assert_eq!(
            read.manifest.epoch_loss_sum.to_bits(),
            (0.1f64 + 0.2).to_bits(),
            "floats round-trip exactly"
        );
        // A newer folder whose manifest was never published is skipped.
        let unfinished = root.path().join(Checkpoint::folder_name(2));
        std::fs::create_dir_all(&unfinished).unwrap();
        std::fs::write(unfinished.join(WEIGHTS), "half").unwrap();
        assert_eq!(
            Checkpoint::latest(root.path())
                .unwrap()
                .unwrap()
                .manifest
                .step,
            1
        );
        std::fs::write(first.dir.join(WEIGHTS), "weights 9").unwrap();
        let err = Checkpoint::read(&first.dir).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }

    /// A resumed epoch's train loss is its running sum read back from the manifest: every f64 must
    /// read back to the same bits (serde_json's `float_roundtrip`).
    #[test]
    fn running_sums_read_back_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100_000 {
            let value: f64 = rng.random_range(0.0..10.0) * 10f64.powi(rng.random_range(-3..4));
            let text = serde_json::to_string(&value).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), value.to_bits(), "{text}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_complete_checkpoints() {
        let root = tempfile::tempdir().unwrap();
        for step in [2, 4, 6] {
            write(root.path(), step);
        }
        prune(root.path(), 2).unwrap();
        let left: Vec<u64> = folders(root.path())
            .unwrap()
            .iter()
            .map(|d| Checkpoint::read(d).unwrap().manifest.step)
            .collect();
        assert_eq!(left, vec![4, 6]);
    }
}
