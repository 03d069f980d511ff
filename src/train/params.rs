//! Named trainable parameters with deterministic initialisation.
//!
//! candle cannot seed its CPU random generator, so kiln draws initial weights itself from a seeded
//! generator: the same seed gives the same model, which exact resumption and reproducible runs need.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::domain::UserError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most parameters a model may have.
pub const MAX_PARAMETERS: u64 = 2_000_000_000;
/// The largest weights file read: [`MAX_PARAMETERS`] f32 parameters.
pub const MAX_WEIGHTS_BYTES: u64 = 4 * MAX_PARAMETERS;

/// Which parameters a run leaves as they are (frozen layers, a LoRA run's base weights).
pub type FrozenRule = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// A [`VarMap`] plus the generator that initialises new variables, and which of them are frozen.
pub struct Params {
    pub varmap: VarMap,
    rng: StdRng,
    device: Device,
    frozen_rule: Option<FrozenRule>,
    frozen: HashSet<String>,
}

impl Params {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            varmap: VarMap::new(),
            rng: StdRng::seed_from_u64(seed),
            device: device.clone(),
            frozen_rule: None,
            frozen: HashSet::new(),
        }
    }

    /// Parameters created from now on whose name `rule` accepts are frozen: the model reads them through
    /// a tensor that is not a variable, so no gradient is computed for them, and the optimizer never
    /// sees them ([`Params::trainable_vars`]). Loading and checkpoints still reach them.
    pub fn freeze_where(&mut self, rule: FrozenRule) {
        self.frozen_rule = Some(rule);
    }

    fn insert(&mut self, name: &str, values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let tensor = Tensor::from_vec(values, shape, &self.device)?;
        let var = Var::from_tensor(&tensor)?;
        let frozen = self.frozen_rule.as_ref().is_some_and(|rule| rule(name));
        // A detached tensor shares the variable's storage, so loading into the variable reaches it.
        let out = if frozen {
            self.frozen.insert(name.to_string());
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        };
        self.varmap
            .data()
            .lock()
            .expect("varmap lock")
            .insert(name.to_string(), var);
        Ok(out)
    }

    /// The variables the optimizer updates, with their names.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .filter(|(name, _)| !self.frozen.contains(name))
            .collect()
    }

    /// Trainable and total parameter counts.
    pub fn counts(&self) -> crate::domain::ParameterCount {
        let trainable = self
            .trainable_vars()
            .iter()
            .map(|(_, v)| v.elem_count() as u64)
            .sum();
        crate::domain::ParameterCount {
            trainable,
            total: self.parameter_count() as u64,
        }
    }

    /// Normal(0, std) initialised weights.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| std * standard_normal(&mut self.rng))
            .collect();
        self.insert(name, values, shape)
    }

    /// Uniform(-bound, bound) initialised weights (PyTorch's default for linear layers).
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| self.rng.random_range(-bound..=bound))
            .collect();
        self.insert(name, values, shape)
    }

    pub fn constant(&mut self, name: &str, shape: &[usize], value: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        self.insert(name, vec![value; n], shape)
    }

    pub fn all_vars(&self) -> Vec<Var> {
        self.varmap.all_vars()
    }

    /// Every variable with its name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    /// Overwrites every trainable variable with the tensor of the same name in a safetensors file
    /// [`Params::save_trainable`] wrote: a checkpoint's weights. Frozen ones are left as built (they
    /// come from the base model or the seed, the same in every run of these settings).
    pub fn restore(&self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .with_context(|| format!("reading weights from {}", path.display()))?;
        for (name, var) in self.trainable_vars() {
            let tensor = tensors
                .get(&name)
                .with_context(|| format!("{} has no tensor {name:?}", path.display()))?;
            anyhow::ensure!(
                tensor.dims() == var.dims(),
                "{name:?} in {} has shape {:?}, the model {:?}",
                path.display(),
                tensor.dims(),
                var.dims()
            );
            var.set(tensor)?;
        }
        Ok(())
    }

    pub fn parameter_count(&self) -> usize {
        self.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Overwrites every variable whose name starts with `prefix` with the tensor of the same name in a
    /// safetensors file, where the file's names may or may not carry `prefix` (sentence-transformers
    /// checkpoints name `embeddings.…`, `BertForSequenceClassification` names `bert.embeddings.…`).
    /// Every such variable must be present with the same shape, except those `optional` accepts (they
    /// keep their initial values); extra tensors in the file are ignored. Returns the names loaded.
    pub fn load_prefixed(
        &self,
        path: &Path,
        prefix: &str,
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<HashSet<String>> {
        let tensors = read_weights(path, &self.device)?;
        self.load_tensors(&tensors, &file_name(path), prefix, optional)
    }

    /// [`Params::load_prefixed`] from tensors already read (`file` names them in errors).
    pub fn load_tensors(
        &self,
        tensors: &HashMap<String, Tensor>,
        file: &str,
        prefix: &str,
        optional: &dyn Fn(&str) -> bool,
    ) -> Result<HashSet<String>> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut loaded = HashSet::new();
        for (name, var) in data.iter() {
            let Some(stripped) = name.strip_prefix(prefix) else {
                continue;
            };
            let Some(tensor) = tensors.get(name).or_else(|| tensors.get(stripped)) else {
                if optional(name) {
                    continue;
                }
                bail!(UserError::new(format!(
                    "the base model's {file} has no tensor named {stripped:?}"
                )));
            };
            if tensor.dims() != var.dims() {
                bail!(UserError::new(format!(
                    "tensor {stripped:?} in the base model's {file} has shape {:?}, but its \
                     config.json implies {:?}",
                    tensor.dims(),
                    var.dims()
                )));
            }
            var.set(&tensor.to_dtype(DType::F32)?)?;
            loaded.insert(name.clone());
        }
        Ok(loaded)
    }

    /// Writes every trainable variable to a safetensors file under its own name (a LoRA run's
    /// checkpoint holds its adapters and head, not the base model).
    pub fn save_trainable(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .trainable_vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().detach()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("writing weights to {}", path.display()))
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every tensor of a base model's safetensors file, refused (as the user's problem) when the file is
/// larger than [`MAX_WEIGHTS_BYTES`] or not safetensors.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let file = file_name(path);
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading weights from {}", path.display()))?
        .len();
    if size > MAX_WEIGHTS_BYTES {
        bail!(UserError::new(format!(
            "the base model's {file} is {size} bytes, more than the {MAX_WEIGHTS_BYTES} kiln reads"
        )));
    }
    candle_core::safetensors::load(path, device).map_err(|e| {
        UserError::wrap(
            format!("the base model's {file} is not a safetensors file kiln can read"),
            anyhow::Error::new(e).context(format!("reading weights from {}", path.display())),
        )
    })
}

/// One draw from N(0, 1) by the Box–Muller transform.
pub fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// Inverted dropout with a mask drawn from `rng`, so runs are reproducible.
pub fn dropout(x: &Tensor, p: f32, rng: &mut StdRng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = 1.0 / keep;
    let n = x.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}
