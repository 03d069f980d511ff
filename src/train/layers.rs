//! The layers kiln's models are made of, written so that their parameters' gradients are cheap:
//! candle computes the gradient of a broadcast bias as a strided sum over every row, which took a third
//! of BERT's backward pass (docs/perf.md). Here a linear layer is one operation ([`LinearOp`]) whose
//! bias gradient is `1ᵀ · grad`, one matrix product, and whose frozen weights get no gradient; layer
//! normalisation and GELU are fused operations with hand-written backward passes (attention is one
//! too, in [`super::attention`]). On other devices than the CPU they are composed of candle's
//! operations. Inference
//! (`train: false`) skips the gradient bookkeeping: the same numbers.

use anyhow::{Result, bail};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rand::rngs::StdRng;
use rayon::prelude::*;

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

/// Layer normalisation over the last dimension, as `torch.nn.LayerNorm`:
/// `(x − mean) / √(var + eps) · γ + β`, with the variance over the row (two passes, not
/// `E[x²] − mean²`). On the CPU it is one fused operation each way; elsewhere it is composed of tensor
/// operations.
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

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (rows, hidden) = rows_and_width(&dims, "layer norm")?;
        let x = x.reshape((rows, hidden))?.contiguous()?;
        let op = LayerNormOp { eps: self.eps };
        let y = if !x.device().is_cpu() {
            self.composed(&x, rows)?
        } else if train {
            x.apply_op3(&self.gamma, &self.beta, op)?
        } else {
            x.apply_op3_no_bwd(&self.gamma, &self.beta, &op)?
        };
        Ok(y.reshape(dims)?)
    }

    /// The same from tensor operations (devices without the fused kernel; the tests' reference).
    fn composed(&self, x: &Tensor, rows: usize) -> Result<Tensor> {
        let hidden = x.dim(1)?;
        let mean = (x.sum_keepdim(1)? / hidden as f64)?;
        let centered = x.broadcast_sub(&mean)?;
        let variance = (centered.sqr()?.sum_keepdim(1)? / hidden as f64)?;
        let normed = centered.broadcast_div(&(variance + self.eps as f64)?.sqrt()?)?;
        let scale = repeat_rows(&self.gamma, rows)?;
        let shift = repeat_rows(&self.beta, rows)?;
        Ok(normed.mul(&scale)?.add(&shift)?)
    }
}

/// Rows per parallel task of the fused layer norm.
const ROWS_PER_TASK: usize = 32;

/// The fused layer norm over `(rows, hidden)`: `x`, `γ`, `β` in; its backward pass is
/// [`LayerNormGrad`].
#[derive(Clone, Copy)]
pub struct LayerNormOp {
    eps: f32,
}

/// A row's mean and `1 / √(var + eps)`.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The contiguous f32 slice of a CPU storage.
pub(super) fn slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("kiln's fused operations take f32 tensors only")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("kiln's fused operations take contiguous tensors only"),
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "kiln-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (slice(xs, xl)?, slice(gs, gl)?, slice(bs, bl)?);
        let hidden = gamma.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(hidden * ROWS_PER_TASK)
            .zip(x.par_chunks(hidden * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (o, row) in out.chunks_mut(hidden).zip(x.chunks(hidden)) {
                    let (mean, rstd) = row_stats(row, self.eps);
                    for (((o, v), g), b) in o.iter_mut().zip(row).zip(gamma).zip(beta) {
                        *o = (v - mean) * rstd * g + b;
                    }
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let rows = x.dim(0)?;
        let packed =
            x.apply_op3_no_bwd(&grad.contiguous()?, gamma, &LayerNormGrad { eps: self.eps })?;
        Ok((
            Some(packed.narrow(0, 0, rows)?),
            Some(packed.get(rows)?),
            Some(packed.get(rows + 1)?),
        ))
    }
}

/// The layer norm's backward pass in one sweep: from `x`, the output gradient `g` and `γ`, the rows of
/// `dx` followed by the rows `dγ = Σ g·x̂` and `dβ = Σ g`. With `x̂` the normalised row and `d = g·γ`:
/// `dx = rstd · (d − mean(d) − x̂ · mean(d·x̂))`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "kiln-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        gammas: &CpuStorage,
        gammal: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g, gamma) = (slice(xs, xl)?, slice(gs, gl)?, slice(gammas, gammal)?);
        let hidden = gamma.len();
        let rows = x.len() / hidden;
        let mut out = vec![0f32; (rows + 2) * hidden];
        let (dx, sums) = out.split_at_mut(rows * hidden);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(hidden * ROWS_PER_TASK)
            .zip(x.par_chunks(hidden * ROWS_PER_TASK))
            .zip(g.par_chunks(hidden * ROWS_PER_TASK))
            .map(|((dx, x), g)| {
                let mut dgamma = vec![0f32; hidden];
                let mut dbeta = vec![0f32; hidden];
                let mut xhat = vec![0f32; hidden];
                for ((dx, row), g) in dx
                    .chunks_mut(hidden)
                    .zip(x.chunks(hidden))
                    .zip(g.chunks(hidden))
                {
                    let (mean, rstd) = row_stats(row, self.eps);
                    let (mut sum_d, mut sum_dx) = (0f32, 0f32);
                    for j in 0..hidden {
                        xhat[j] = (row[j] - mean) * rstd;
                        let d = g[j] * gamma[j];
                        sum_d += d;
                        sum_dx += d * xhat[j];
                        dgamma[j] += g[j] * xhat[j];
                        dbeta[j] += g[j];
                    }
                    let (mean_d, mean_dx) = (sum_d / hidden as f32, sum_dx / hidden as f32);
                    for j in 0..hidden {
                        dx[j] = rstd * (g[j] * gamma[j] - mean_d - xhat[j] * mean_dx);
                    }
                }
                (dgamma, dbeta)
            })
            .collect();
        let (dgamma, dbeta) = sums.split_at_mut(hidden);
        for (pg, pb) in &partials {
            for j in 0..hidden {
                dgamma[j] += pg[j];
                dbeta[j] += pb[j];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, hidden))))
    }
}

/// GELU with the exact (erf) form, `x · Φ(x)`, as `torch.nn.functional.gelu`. On the CPU it is one
/// parallel pass each way with a hand-written backward (`Φ(x) + x · φ(x)`); candle's own runs `erf`
/// from libm one element at a time on one thread, and composes its backward from several operations.
pub fn gelu(x: &Tensor, train: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(x.gelu_erf()?);
    }
    let x = x.contiguous()?;
    Ok(if train {
        x.apply_op1(GeluOp)?
    } else {
        x.apply_op1_no_bwd(&GeluOp)?
    })
}

/// `erf`, Abramowitz and Stegun 7.1.26: absolute error at most 1.5·10⁻⁷, below f32's resolution
/// of `Φ` near 1.
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

/// `Φ(x)`, the standard normal's distribution function.
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Elements per parallel task of the element-wise operations.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "kiln-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(x.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|(out, x)| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v * normal_cdf(v);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

/// `g · (Φ(x) + x · φ(x))`.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "kiln-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(xs, xl)?, slice(gs, gl)?);
        // 1 / √(2π)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(x.par_chunks(ELEMENTS_PER_TASK))
            .zip(g.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|((out, x), g)| {
                for ((o, &v), &g) in out.iter_mut().zip(x).zip(g) {
                    let density = INV_SQRT_2PI * (-0.5 * v * v).exp();
                    *o = g * (normal_cdf(v) + v * density);
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// `x · Wᵀ + b` on the CPU as one operation: the output starts as the bias rows and the matrix product
/// is accumulated into it (one buffer, where `x · Wᵀ` then `+ b` writes two). Its backward pass gives
/// each input its gradient in that input's own layout: `dx = g · W`, `dW = gᵀ · x`, `db = 1ᵀ · g` (a
/// matrix product, where candle's gradient of a broadcast bias is a strided sum over every row).
struct LinearOp {
    /// The weight is stored transposed, `(inputs, outputs)` ([`Linear::for_inference`]).
    transposed: bool,
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "kiln-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let (rows, inputs) = xl.shape().dims2()?;
        let (outputs, w_inputs) = match wl.shape().dims2()? {
            (i, o) if self.transposed => (o, i),
            (o, i) => (o, i),
        };
        if w_inputs != inputs || b.len() != outputs {
            candle_core::bail!(
                "linear layer: x {:?}, weight {:?}, bias {:?} do not fit",
                xl.shape(),
                wl.shape(),
                bl.shape()
            );
        }
        let mut out = Vec::with_capacity(rows * outputs);
        for _ in 0..rows {
            out.extend_from_slice(b);
        }
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // The right-hand side is Wᵀ (inputs × outputs): read from W (outputs × inputs, row-major) with
        // row stride 1 and column stride `inputs`, or stored so, row-major, which gemm packs several
        // times faster when the rows are few (a prediction of one text: docs/perf.md).
        let (rhs_cs, rhs_rs) = if self.transposed {
            (1, outputs as isize)
        } else {
            (inputs as isize, 1)
        };
        // SAFETY: `out` is rows × outputs, row-major; `x` is rows × inputs, row-major; `w` holds
        // outputs × inputs values, laid out as the strides above say. Every index gemm touches is
        // inside those slices, whose sizes are checked above.
        unsafe {
            gemm::gemm(
                rows,
                outputs,
                inputs,
                out.as_mut_ptr(),
                1,
                outputs as isize,
                true,
                x.as_ptr(),
                1,
                inputs as isize,
                w.as_ptr(),
                rhs_cs,
                rhs_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // A frozen weight (LoRA, `freezeLayers`) or an input that depends on nothing trained gets no
        // gradient: candle's own matrix product computes both sides whatever they are.
        let grad = grad.contiguous()?;
        let dx = x.track_op().then(|| grad.matmul(w)).transpose()?;
        let dw = w.track_op().then(|| grad.t()?.matmul(x)).transpose()?;
        let db = b
            .track_op()
            .then(|| {
                let ones = Tensor::ones((1, grad.dim(0)?), grad.dtype(), grad.device())?;
                ones.matmul(&grad)?.squeeze(0)
            })
            .transpose()?;
        Ok((dx, dw, db))
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
    /// `(outputs, inputs)`, or `(inputs, outputs)` once [`Linear::for_inference`] transposed it.
    weight: Tensor,
    bias: Tensor,
    adapter: Option<Adapter>,
    transposed: bool,
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
            transposed: false,
        }
    }

    /// Stores the weight transposed, in the layout the CPU's matrix product reads fastest, for a
    /// model that only predicts from now on (a loaded version): training it afterwards is an error.
    pub fn for_inference(&mut self) -> Result<()> {
        if !self.transposed && self.weight.device().is_cpu() {
            self.weight = self.weight.t()?.contiguous()?;
            self.transposed = true;
        }
        Ok(())
    }

    pub fn set_adapter(&mut self, adapter: Adapter) {
        self.adapter = Some(adapter);
    }

    /// `(outputs, inputs)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.dims();
        if self.transposed {
            (d[1], d[0])
        } else {
            (d[0], d[1])
        }
    }

    /// Without dropout in the adapter.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, &mut None, train)
    }

    /// With the adapter's dropout drawn from `rng` when there is one.
    pub fn forward_with(
        &self,
        x: &Tensor,
        rng: &mut Option<&mut StdRng>,
        train: bool,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (rows, inputs) = rows_and_width(&dims, "linear layer")?;
        let x = x.reshape((rows, inputs))?;
        let mut y = if !x.device().is_cpu() {
            x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?
        } else {
            let x = x.contiguous()?;
            let op = LinearOp {
                transposed: self.transposed,
            };
            match (train, self.transposed) {
                (true, true) => bail!("a layer prepared for inference cannot train"),
                (true, false) => x.apply_op3(&self.weight, &self.bias, op)?,
                (false, _) => x.apply_op3_no_bwd(&self.weight, &self.bias, &op)?,
            }
        };
        if let Some(adapter) = &self.adapter {
            let dropped = match rng {
                Some(rng) => dropout(&x, adapter.dropout, rng)?,
                None => x.clone(),
            };
            let low = dropped.matmul(&adapter.a.t()?)?.matmul(&adapter.b.t()?)?;
            y = y.add(&(low * adapter.scale)?)?;
        }
        let mut out = dims;
        *out.last_mut().expect("checked above") = self.dims().0;
        Ok(y.reshape(out)?)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    pub(in crate::train) fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// `y`, then the gradients of `Σ y · weights` (a loss that weighs every output differently)
    /// with respect to each of `wrt`, flattened.
    pub(in crate::train) fn output_and_gradients(
        y: &Tensor,
        weights: &Tensor,
        wrt: &[&Tensor],
    ) -> Vec<Vec<f32>> {
        let grads = (y * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        std::iter::once(flat(y))
            .chain(wrt.iter().map(|t| flat(grads.get(t).unwrap())))
            .collect()
    }

    /// Each named pair of value lists agrees within `tolerance`, relative to `1 + |expected|`.
    pub(in crate::train) fn assert_close(
        names: &[&str],
        actual: &[Vec<f32>],
        expected: &[Vec<f32>],
        tolerance: f32,
    ) {
        for (what, (a, b)) in names.iter().zip(actual.iter().zip(expected)) {
            assert_eq!(a.len(), b.len(), "{what}");
            for (u, v) in a.iter().zip(b) {
                assert!(
                    (u - v).abs() <= tolerance * (1.0 + v.abs()),
                    "{what}: {u} vs {v}"
                );
            }
        }
    }

    /// The fused linear layer gives what candle's composed `x · Wᵀ + b` gives, forward and backward,
    /// on 3-D inputs as the encoder passes them; a frozen weight gets no gradient at all.
    #[test]
    fn the_fused_linear_layer_matches_the_composed_one() {
        let device = Device::Cpu;
        let (batch, seq, inputs, outputs) = (3, 7, 40, 24);
        let values = |n: usize, k: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 * k).sin() * 0.8) + 0.1).collect()
        };
        let x = Var::from_vec(
            values(batch * seq * inputs, 0.37),
            (batch, seq, inputs),
            &device,
        )
        .unwrap();
        let w = Var::from_vec(values(outputs * inputs, 1.3), (outputs, inputs), &device).unwrap();
        let b = Var::from_vec(values(outputs, 0.7), outputs, &device).unwrap();
        let weights = Tensor::from_vec(
            values(batch * seq * outputs, 0.11),
            (batch, seq, outputs),
            &device,
        )
        .unwrap();
        let run = |fused: bool| {
            let y = if fused {
                Linear::new(w.as_tensor().clone(), b.as_tensor().clone())
                    .forward(x.as_tensor(), true)
                    .unwrap()
            } else {
                x.as_tensor()
                    .broadcast_matmul(&w.as_tensor().t().unwrap())
                    .unwrap()
                    .broadcast_add(b.as_tensor())
                    .unwrap()
            };
            assert_eq!(y.dims(), [batch, seq, outputs]);
            output_and_gradients(&y, &weights, &[x.as_tensor(), w.as_tensor(), b.as_tensor()])
        };
        let (fused, composed) = (run(true), run(false));
        assert_close(&["y", "dx", "dW", "db"], &fused, &composed, 1e-5);
        let mut layer = Linear::new(w.as_tensor().clone(), b.as_tensor().clone());
        let inference = layer.forward(x.as_tensor(), false).unwrap();
        assert_eq!(
            flat(&inference),
            fused[0],
            "inference computes the same output"
        );
        // Prepared for inference (the weight stored transposed): the same outputs, no training.
        layer.for_inference().unwrap();
        assert_eq!(layer.dims(), (outputs, inputs));
        let prepared = layer.forward(x.as_tensor(), false).unwrap();
        assert_eq!(prepared.dims(), [batch, seq, outputs]);
        assert_close(&["prepared y"], &[flat(&prepared)], &fused[..1], 1e-6);
        let error = layer.forward(x.as_tensor(), true).unwrap_err().to_string();
        assert!(error.contains("cannot train"), "{error}");

        // Frozen: the weight and bias are plain tensors; only the input's gradient is computed.
        let (frozen_w, frozen_b) = (w.as_tensor().detach(), b.as_tensor().detach());
        let frozen = Linear::new(frozen_w.clone(), frozen_b.clone());
        let grads = (frozen.forward(x.as_tensor(), true).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(flat(grads.get(x.as_tensor()).unwrap()), fused[1]);
        assert!(grads.get(&frozen_w).is_none() && grads.get(&frozen_b).is_none());
    }

    /// The fused layer norm gives what the composed one gives, forward and backward, for the input,
    /// the scale and the shift.
    #[test]
    fn the_fused_layer_norm_matches_the_composed_one() {
        let device = Device::Cpu;
        let (rows, hidden) = (70, 48);
        let values = |n: usize, k: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 * k).sin() * 3.0) + 0.5).collect()
        };
        let x = Var::from_vec(values(rows * hidden, 0.37), (rows, hidden), &device).unwrap();
        let gamma = Var::from_vec(values(hidden, 1.3), hidden, &device).unwrap();
        let beta = Var::from_vec(values(hidden, 0.7), hidden, &device).unwrap();
        let norm = LayerNorm {
            gamma: gamma.as_tensor().clone(),
            beta: beta.as_tensor().clone(),
            eps: 1e-12,
        };
        // A loss that weighs every output differently.
        let weights =
            Tensor::from_vec(values(rows * hidden, 0.11), (rows, hidden), &device).unwrap();
        let run = |fused: bool| {
            let y = if fused {
                norm.forward(x.as_tensor(), true).unwrap()
            } else {
                norm.composed(x.as_tensor(), rows).unwrap()
            };
            output_and_gradients(
                &y,
                &weights,
                &[x.as_tensor(), gamma.as_tensor(), beta.as_tensor()],
            )
        };
        let (fused, composed) = (run(true), run(false));
        assert_close(&["y", "dx", "dγ", "dβ"], &fused, &composed, 1e-4);
        let inference = norm.forward(x.as_tensor(), false).unwrap();
        assert_eq!(
            flat(&inference),
            fused[0],
            "inference computes the same output"
        );
    }

    /// The fused GELU matches candle's erf GELU forward and backward.
    #[test]
    fn the_fused_gelu_matches_the_erf_gelu() {
        let device = Device::Cpu;
        let values: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 - 20_000.0) / 2000.0)
            .collect();
        let x = Var::from_vec(values.clone(), values.len(), &device).unwrap();
        let weights: Vec<f32> = (0..values.len()).map(|i| (i as f32 * 0.3).cos()).collect();
        let weights = Tensor::from_vec(weights, values.len(), &device).unwrap();
        let run = |fused: bool| {
            let y = if fused {
                gelu(x.as_tensor(), true).unwrap()
            } else {
                x.as_tensor().gelu_erf().unwrap()
            };
            let grads = (y.clone() * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                y.to_vec1::<f32>().unwrap(),
                grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        for (a, b) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let inference = gelu(x.as_tensor(), false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(inference, y1);
    }
}
