//! A tabular classifier: standardised numeric features → two ReLU hidden layers → logits.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::params::{Params, dropout};

/// Width of each hidden layer.
pub const HIDDEN: usize = 64;
const DROPOUT: f32 = 0.1;

/// Per-feature mean and standard deviation, computed on the training split and stored with the model so
/// inference applies the same transform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardizer {
    pub fn fit(rows: &[&Vec<f32>]) -> Self {
        let width = rows.first().map(|r| r.len()).unwrap_or(0);
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; width];
        for row in rows {
            for (m, v) in mean.iter_mut().zip(row.iter()) {
                *m += *v as f64 / n;
            }
        }
        let mut var = vec![0f64; width];
        for row in rows {
            for ((s, v), m) in var.iter_mut().zip(row.iter()).zip(&mean) {
                *s += (*v as f64 - m).powi(2) / n;
            }
        }
        Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            // A constant column gets std 1 so it maps to 0 rather than dividing by zero.
            std: var
                .iter()
                .map(|v| if *v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
                .collect(),
        }
    }

    pub fn tensor(&self, rows: &[&Vec<f32>], device: &Device) -> Result<Tensor> {
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
}

impl Mlp {
    pub fn new(params: &mut Params, inputs: usize, num_labels: usize) -> Result<Self> {
        let mut layers = Vec::new();
        let sizes = [inputs, HIDDEN, HIDDEN, num_labels];
        for (i, pair) in sizes.windows(2).enumerate() {
            // PyTorch's default initialisation for nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (pair[0] as f32).sqrt();
            let w = params.uniform(&format!("layers.{i}.weight"), &[pair[1], pair[0]], bound)?;
            let b = params.uniform(&format!("layers.{i}.bias"), &[pair[1]], bound)?;
            layers.push(Linear::new(w, Some(b)));
        }
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor, mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let mut x = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i < last {
                x = x.relu()?;
                if let Some(rng) = rng.as_deref_mut() {
                    x = dropout(&x, DROPOUT, rng)?;
                }
            }
        }
        Ok(x)
    }
}
