//! Multi-head self-attention as one CPU operation, forward and backward, over the projections'
//! own layout.
//!
//! Composed of candle's operations, attention splits each of `q`, `k` and `v` into heads with a
//! transpose and a copy, multiplies head by head (one parallel matrix product per head and batch
//! entry, each too small to share among threads), and transposes and copies the context back; its
//! backward pass does all of it again. Here every (batch entry, head) pair is one task on the thread
//! pool: its scores, softmax and context are computed with single-threaded matrix products that read
//! `q`, `k` and `v` where the projections wrote them (rows `hidden` apart, the head's columns) and
//! write the context straight into its columns of the output, which is what the output projection
//! reads. The backward pass recomputes each head's probabilities rather than keeping them.

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::layers::slice;

/// The attention context `(batch, seq, hidden)` of `q`, `k`, `v` (each `(batch, seq, hidden)`, heads
/// side by side in the last dimension) with an additive bias per key (`(batch, seq)`: 0 where
/// attended, a large negative number on padding): per head, `softmax(scale · q kᵀ + bias) v`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &[f32],
    heads: usize,
    scale: f64,
    train: bool,
) -> Result<Tensor> {
    let (batch, seq, hidden) = q.dims3()?;
    let op = Attention {
        batch,
        seq,
        heads,
        head_dim: hidden / heads,
        scale: scale as f32,
        bias: bias.to_vec(),
    };
    let flat = |t: &Tensor| t.reshape((batch * seq, hidden))?.contiguous();
    let (q, k, v) = (flat(q)?, flat(k)?, flat(v)?);
    let context = if train {
        q.apply_op3(&k, &v, op)?
    } else {
        q.apply_op3_no_bwd(&k, &v, &op)?
    };
    Ok(context.reshape((batch, seq, hidden))?)
}

struct Attention {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    /// `(batch, seq)`, row-major.
    bias: Vec<f32>,
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each task writes only its own (batch entry, head) columns; no two tasks touch one element.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `offset` places in (a method, so that closures capture the whole `Shared`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// A matrix in memory: a pointer and its row and column strides.
#[derive(Clone, Copy)]
struct Matrix {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Matrix {
    fn rows(ptr: *const f32, rs: usize) -> Self {
        Self {
            ptr,
            rs: rs as isize,
            cs: 1,
        }
    }

    /// The same memory read as the transpose.
    fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` on this thread.
///
/// SAFETY: every element the strides reach must be inside its allocation, and nothing else may
/// touch `dst`'s elements meanwhile.
unsafe fn product(m: usize, n: usize, k: usize, dst: Matrix, lhs: Matrix, rhs: Matrix) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr as *mut f32,
            dst.cs,
            dst.rs,
            false,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl Attention {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Where the head's block of a `(batch · seq, hidden)` buffer starts.
    fn offset(&self, task: usize) -> usize {
        let (b, h) = (task / self.heads, task % self.heads);
        b * self.seq * self.hidden() + h * self.head_dim
    }

    /// The task's probabilities `softmax(scale · q kᵀ + bias)` into `p` (`seq × seq`).
    fn probabilities(&self, task: usize, q: &[f32], k: &[f32], p: &mut [f32]) {
        let (s, d, hidden) = (self.seq, self.head_dim, self.hidden());
        let at = self.offset(task);
        // SAFETY: the head's rows of q and k lie in the `(batch · seq, hidden)` slices (checked by
        // the caller); `p` is this task's own `seq × seq` buffer.
        unsafe {
            product(
                s,
                s,
                d,
                Matrix::rows(p.as_mut_ptr(), s),
                Matrix::rows(q[at..].as_ptr(), hidden),
                Matrix::rows(k[at..].as_ptr(), hidden).t(),
            );
        }
        let b = task / self.heads;
        let bias = &self.bias[b * s..(b + 1) * s];
        for row in p.chunks_mut(s) {
            let mut max = f32::NEG_INFINITY;
            for (x, &m) in row.iter_mut().zip(bias) {
                *x = *x * self.scale + m;
                max = max.max(*x);
            }
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
    }

    fn check(&self, shapes: &[&Layout]) -> candle_core::Result<()> {
        for layout in shapes {
            if layout.dims() != [self.batch * self.seq, self.hidden()] {
                candle_core::bail!(
                    "attention: {:?} is not (batch · seq, hidden) = ({}, {})",
                    layout.shape(),
                    self.batch * self.seq,
                    self.hidden()
                );
            }
        }
        if self.bias.len() != self.batch * self.seq {
            candle_core::bail!("attention: the bias has {} values", self.bias.len());
        }
        Ok(())
    }
}

/// The contiguous f32 values of a CPU tensor's storage.
fn values<'a>(storage: &'a Storage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => slice(cpu, layout),
        _ => candle_core::bail!("kiln's fused attention runs on the CPU only"),
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "kiln-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.check(&[ql, kl, vl])?;
        let (q, k, v) = (slice(qs, ql)?, slice(ks, kl)?, slice(vs, vl)?);
        let (s, d, hidden) = (self.seq, self.head_dim, self.hidden());
        let mut context = vec![0f32; q.len()];
        let out = Shared(context.as_mut_ptr());
        (0..self.batch * self.heads).into_par_iter().for_each_init(
            || vec![0f32; s * s],
            |p, task| {
                self.probabilities(task, q, k, p);
                let at = self.offset(task);
                // SAFETY: this task alone writes the head's columns of its batch entry's rows.
                unsafe {
                    product(
                        s,
                        d,
                        s,
                        Matrix::rows(out.at(at), hidden),
                        Matrix::rows(p.as_ptr(), s),
                        Matrix::rows(v[at..].as_ptr(), hidden),
                    );
                }
            },
        );
        Ok((CpuStorage::F32(context), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _context: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Read in place: nothing writes these tensors while the guards are held.
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (qv, kv, vv, gv) = (
            values(&qs, ql)?,
            values(&ks, kl)?,
            values(&vs, vl)?,
            values(&gs, gl)?,
        );
        let (s, d, hidden) = (self.seq, self.head_dim, self.hidden());
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; qv.len()],
            vec![0f32; kv.len()],
            vec![0f32; vv.len()],
        );
        let (dq_out, dk_out, dv_out) = (
            Shared(dq.as_mut_ptr()),
            Shared(dk.as_mut_ptr()),
            Shared(dv.as_mut_ptr()),
        );
        (0..self.batch * self.heads).into_par_iter().for_each_init(
            || (vec![0f32; s * s], vec![0f32; s * s]),
            |(p, dp), task| {
                self.probabilities(task, qv, kv, p);
                let at = self.offset(task);
                let (dq_out, dk_out, dv_out) = (dq_out, dk_out, dv_out);
                let g = Matrix::rows(gv[at..].as_ptr(), hidden);
                let pm = Matrix::rows(p.as_ptr(), s);
                // SAFETY: reads stay in the (batch · seq, hidden) slices and this task's own
                // buffers; this task alone writes the head's columns of its rows in dq, dk, dv.
                unsafe {
                    // dP = dC · vᵀ, dV = Pᵀ · dC.
                    product(
                        s,
                        s,
                        d,
                        Matrix::rows(dp.as_mut_ptr(), s),
                        g,
                        Matrix::rows(vv[at..].as_ptr(), hidden).t(),
                    );
                    product(s, d, s, Matrix::rows(dv_out.at(at), hidden), pm.t(), g);
                }
                // dS = scale · P ∘ (dP − Σ dP ∘ P), row by row.
                for (dp, p) in dp.chunks_mut(s).zip(p.chunks(s)) {
                    let dot: f32 = dp.iter().zip(p.iter()).map(|(a, b)| a * b).sum();
                    for (x, &pv) in dp.iter_mut().zip(p.iter()) {
                        *x = self.scale * pv * (*x - dot);
                    }
                }
                let ds = Matrix::rows(dp.as_ptr(), s);
                // SAFETY: as above.
                unsafe {
                    // dq = dS · k, dk = dSᵀ · q.
                    product(
                        s,
                        d,
                        s,
                        Matrix::rows(dq_out.at(at), hidden),
                        ds,
                        Matrix::rows(kv[at..].as_ptr(), hidden),
                    );
                    product(
                        s,
                        d,
                        s,
                        Matrix::rows(dk_out.at(at), hidden),
                        ds.t(),
                        Matrix::rows(qv[at..].as_ptr(), hidden),
                    );
                }
            },
        );
        let shape = (self.batch * self.seq, hidden);
        let device = q.device();
        // What depends on nothing trained (a frozen layer's projection) gets no gradient.
        let keep = |t: &Tensor, g: Vec<f32>| -> candle_core::Result<Option<Tensor>> {
            t.track_op()
                .then(|| Tensor::from_vec(g, shape, device))
                .transpose()
        };
        Ok((keep(q, dq)?, keep(k, dk)?, keep(v, dv)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::layers::tests::{assert_close, flat, output_and_gradients};
    use candle_core::{D, Device, Var};

    /// The fused attention gives what candle's composed operations give, forward and backward, with
    /// padding in the mask and several heads and batch entries.
    #[test]
    fn the_fused_attention_matches_the_composed_one() {
        let device = Device::Cpu;
        let (batch, seq, heads, head_dim) = (3, 7, 4, 5);
        let hidden = heads * head_dim;
        let values = |k: f32| -> Vec<f32> {
            (0..batch * seq * hidden)
                .map(|i| (i as f32 * k).sin() * 1.5)
                .collect()
        };
        let var = |k: f32| Var::from_vec(values(k), (batch, seq, hidden), &device).unwrap();
        let (q, k, v) = (var(0.37), var(0.71), var(1.13));
        // The second entry has two padding positions, the third one.
        let mut mask = vec![1f32; batch * seq];
        mask[seq + seq - 2..2 * seq].fill(0.0);
        mask[3 * seq - 1] = 0.0;
        let bias: Vec<f32> = mask.iter().map(|m| (m - 1.0) * 1e4).collect();
        let scale = 1.0 / (head_dim as f64).sqrt();
        let weights = Tensor::from_vec(values(0.05), (batch, seq, hidden), &device).unwrap();

        let composed = || {
            let split = |t: &Tensor| {
                t.reshape((batch, seq, heads, head_dim))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qh, kh, vh) = (
                split(q.as_tensor()),
                split(k.as_tensor()),
                split(v.as_tensor()),
            );
            let bias = Tensor::from_vec(bias.clone(), (batch, 1, 1, seq), &device).unwrap();
            let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
            probs
                .matmul(&vh)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((batch, seq, hidden))
                .unwrap()
        };
        let fused = |train: bool| {
            attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &bias,
                heads,
                scale,
                train,
            )
            .unwrap()
        };
        let wrt = [q.as_tensor(), k.as_tensor(), v.as_tensor()];
        let a = output_and_gradients(&fused(true), &weights, &wrt);
        let b = output_and_gradients(&composed(), &weights, &wrt);
        assert_close(&["context", "dq", "dk", "dv"], &a, &b, 1e-5);
        let inference = fused(false);
        assert_eq!(
            flat(&inference),
            a[0],
            "inference computes the same context"
        );
    }
}
