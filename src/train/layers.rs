//! The layers kiln's models are made of, written so that their parameters' gradients are matrix
//! products: candle computes the gradient of a broadcast bias or scale as a strided sum over every row,
//! which took a third of BERT's backward pass (docs/perf.md). Here a bias is added as `1 · b` (a column
//! of ones times the bias row), so its gradient is `1ᵀ · grad`, one matrix product.

use anyhow::{Result, bail};
use candle_core::Tensor;

use rand::rngs::StdRng;

use super::params::{Params, dropout};

/// `(rows, last)` of a shape: the product of the leading dimensions, and the last one.
fn rows_and_width(dims: &[usize], what: &str) -> Result<(usize, usize)> {
    match dims.split_last() {
        Some((last, leading)) => Ok((leading.iter().product(), *last)),
        None => bail!("a {what} needs at least one dimension"),
    }
}

/// `row` (a vector) repeated for `rows` rows, as the product of a column of ones and the row, so that
/// its gradient is one matrix product.
fn repeat_rows(row: &Tensor, rows: usize) -> Result<Tensor> {
    let ones = Tensor::ones((rows, 1), row.dtype(), row.device())?;
    Ok(ones.matmul(&row.unsqueeze(0)?)?)
}

/// Layer normalisation over the last dimension: candle-nn's `layer_norm_slow`, term for term, with
/// the scale and shift applied as full matrices.
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn new(params: &mut Params, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: params.constant(&format!("{name}.weight"), &[size], 1.0)?,
            beta: params.constant(&format!("{name}.bias"), &[size], 0.0)?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (rows, hidden) = rows_and_width(&dims, "layer norm")?;
        let x = x.reshape((rows, hidden))?;
        let mean = (x.sum_keepdim(1)? / hidden as f64)?;
        let centered = x.broadcast_sub(&mean)?;
        let variance = (centered.sqr()?.sum_keepdim(1)? / hidden as f64)?;
        let normed = centered.broadcast_div(&(variance + self.eps as f64)?.sqrt()?)?;
        let scale = repeat_rows(&self.gamma, rows)?;
        let shift = repeat_rows(&self.beta, rows)?;
        Ok(normed.mul(&scale)?.add(&shift)?.reshape(dims)?)
    }
}

/// A linear layer named like HuggingFace's (`<name>.weight`, `<name>.bias`), weights N(0, std),
/// bias 0.
pub fn linear(
    params: &mut Params,
    name: &str,
    inputs: usize,
    outputs: usize,
    std: f32,
) -> Result<Linear> {
    let weight = params.normal(&format!("{name}.weight"), &[outputs, inputs], std)?;
    let bias = params.constant(&format!("{name}.bias"), &[outputs], 0.0)?;
    Ok(Linear::new(weight, bias))
}

/// `x · Wᵀ + b` over the last dimension, plus a LoRA adapter's `scale · dropout(x) · Aᵀ · Bᵀ` when it
/// has one.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    adapter: Option<Adapter>,
}

/// A low-rank adapter: `a` is `(rank, inputs)`, `b` is `(outputs, rank)`.
pub struct Adapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
}

impl Linear {
    /// A layer over existing weight `(outputs, inputs)` and bias `(outputs)` tensors.
    pub fn new(weight: Tensor, bias: Tensor) -> Self {
        Self {
            weight,
            bias,
            adapter: None,
        }
    }

    pub fn set_adapter(&mut self, adapter: Adapter) {
        self.adapter = Some(adapter);
    }

    /// `(outputs, inputs)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[0], d[1])
    }

    /// Without dropout in the adapter (evaluation, or a layer without one).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &mut None)
    }

    /// With the adapter's dropout drawn from `rng` while training.
    pub fn forward_with(&self, x: &Tensor, rng: &mut Option<&mut StdRng>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (rows, inputs) = rows_and_width(&dims, "linear layer")?;
        let x = x.reshape((rows, inputs))?;
        let mut y = x
            .matmul(&self.weight.t()?)?
            .add(&repeat_rows(&self.bias, rows)?)?;
        if let Some(adapter) = &self.adapter {
            let dropped = match rng {
                Some(rng) => dropout(&x, adapter.dropout, rng)?,
                None => x.clone(),
            };
            let low = dropped.matmul(&adapter.a.t()?)?.matmul(&adapter.b.t()?)?;
            y = y.add(&(low * adapter.scale)?)?;
        }
        let mut out = dims;
        *out.last_mut().expect("checked above") = self.weight.dim(0)?;
        Ok(y.reshape(out)?)
    }
}
