//! A tabular classifier: standardised numeric features → ReLU hidden layers (two of 64 unless
//! `hiddenSizes` says otherwise) → logits.

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::layers::Linear;
use super::params::{Params, dropout};

/// Dropout after each hidden layer unless `dropout` says otherwise.
pub const DEFAULT_DROPOUT: f64 = 0.1;

/// Per-feature mean and standard deviation, computed on the training split and stored with the model so
/// inference applies the same transform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Mean and standard deviation of `rows`, read once (Welford's running update, in f64).
    pub fn fit(rows: impl IntoIterator<Item = Result<Vec<f32>>>) -> Result<Self> {
        let mut n = 0f64;
        let mut mean: Vec<f64> = Vec::new();
        let mut m2: Vec<f64> = Vec::new();
        for row in rows {
            let row = row?;
            if mean.is_empty() {
                mean = vec![0.0; row.len()];
                m2 = vec![0.0; row.len()];
            }
            n += 1.0;
            for ((m, s), v) in mean.iter_mut().zip(m2.iter_mut()).zip(&row) {
                let v = *v as f64;
                let delta = v - *m;
                *m += delta / n;
                *s += delta * (v - *m);
            }
        }
        let n = n.max(1.0);
        Ok(Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            // A constant column gets std 1 so it maps to 0 rather than dividing by zero.
            std: m2
                .iter()
                .map(|s| s / n)
                .map(|v| if v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
                .collect(),
        })
    }

    pub fn tensor(&self, rows: &[Vec<f32>], device: &Device) -> Result<Tensor> {
        let width = self.mean.len();
        let mut flat = Vec::with_capacity(rows.len() * width);
        for row in rows {
            flat.extend(
                row.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((v, m), s)| (v - m) / s),
            );
        }
        Ok(Tensor::from_vec(flat, (rows.len(), width), device)?)
    }
}

impl From<Standardizer> for crate::domain::Standardization {
    fn from(s: Standardizer) -> Self {
        Self {
            mean: s.mean,
            std: s.std,
        }
    }
}

pub struct Mlp {
    layers: Vec<Linear>,
    dropout: f32,
}

impl Mlp {
    /// Every layer's weight in the layout inference reads fastest ([`Linear::for_inference`]).
    pub fn for_inference(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(Linear::for_inference)
    }

    pub fn new(
        params: &mut Params,
        inputs: usize,
        hidden: &[u32],
        num_labels: usize,
        dropout: f64,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut sizes = vec![inputs];
        sizes.extend(hidden.iter().map(|&h| h as usize));
        sizes.push(num_labels);
        for (i, pair) in sizes.windows(2).enumerate() {
            // PyTorch's default initialisation for nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (pair[0] as f32).sqrt();
            let w = params.uniform(&format!("layers.{i}.weight"), &[pair[1], pair[0]], bound)?;
            let b = params.uniform(&format!("layers.{i}.bias"), &[pair[1]], bound)?;
            layers.push(Linear::new(w, b));
        }
        Ok(Self {
            layers,
            dropout: dropout as f32,
        })
    }

    /// `train`: gradients will be taken (dropout drawn from `rng` when there is one).
    pub fn forward(&self, x: &Tensor, mut rng: Option<&mut StdRng>, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, train)?;
            if i < last {
                x = x.relu()?;
                if let Some(rng) = rng.as_deref_mut() {
                    x = dropout(&x, self.dropout, rng)?;
                }
            }
        }
        Ok(x)
    }
}
