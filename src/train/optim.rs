//! kiln's own optimizers: AdamW and SGD with momentum, with their state in the open so a checkpoint can
//! save it and a resumed run can restore it exactly.
//!
//! Both follow PyTorch's CPU implementations (`torch.optim.AdamW`, `torch.optim.SGD`) term for term,
//! rounding included (a scalar divisor is a multiplication by its reciprocal, `x + a * y` is one fused
//! multiply-add where PyTorch's kernels fuse it), so the same gradients give the same parameters bit for
//! bit (the unit tests hold values PyTorch 2.15 computed, from
//! `benches/reference/optimizer_reference.py`). On the CPU each parameter is updated in place in one
//! pass over its buffer, with its moments, through a candle in-place op. On other devices (a GPU) the
//! moments live on the device beside the parameter and the update is the same arithmetic in tensor
//! operations there: nothing is copied to the host per step. It agrees with the CPU update to float
//! rounding (the multiply-adds are not fused), which a unit test holds on the CPU.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result, bail, ensure};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Device, InplaceOp2, Layout, Tensor, Var};

/// Which update rule, with its constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected as PyTorch does it.
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// SGD with (undampened) momentum and L2 weight decay added to the gradient, as `torch.optim.SGD`.
    Sgd { momentum: f64, weight_decay: f64 },
}

impl OptimizerKind {
    /// AdamW with PyTorch's defaults for the betas and epsilon.
    pub fn adamw(weight_decay: f64) -> Self {
        Self::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// The name a checkpoint records.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AdamW { .. } => "adamw",
            Self::Sgd { .. } => "sgd",
        }
    }

    /// The state buffers kept per parameter, by name.
    fn slots(&self) -> &'static [&'static str] {
        match self {
            Self::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
            Self::Sgd { .. } => &["momentum_buffer"],
        }
    }
}

/// One trainable parameter and its state buffers (same length as the parameter).
struct Slot {
    name: String,
    var: Var,
    state: State,
}

/// A parameter's state buffers: host vectors the in-place CPU update walks, or tensors on the
/// parameter's device for the tensor-op update.
enum State {
    Host(Vec<Vec<f32>>),
    Device(Vec<Tensor>),
}

/// An optimizer over named parameters. [`Optimizer::state`] and [`Optimizer::restore`] are what a
/// checkpoint saves and loads.
pub struct Optimizer {
    kind: OptimizerKind,
    slots: Vec<Slot>,
    /// Updates applied so far (AdamW's bias correction uses it; SGD's first update sets its buffers).
    steps: u64,
    learning_rate: f64,
    /// Gradients are scaled so that their global L2 norm is at most this.
    clip_norm: Option<f64>,
}

impl Optimizer {
    /// An optimizer over `vars` (name, variable); every state buffer starts at zero, on its
    /// parameter's device.
    pub fn new(kind: OptimizerKind, vars: Vec<(String, Var)>, learning_rate: f64) -> Result<Self> {
        Self::with_state_on_device(kind, vars, learning_rate, false)
    }

    /// As [`Optimizer::new`]; `tensor_update` keeps the state as tensors and updates with tensor
    /// operations even on the CPU (what a GPU does; tests compare the two).
    fn with_state_on_device(
        kind: OptimizerKind,
        mut vars: Vec<(String, Var)>,
        learning_rate: f64,
        tensor_update: bool,
    ) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let state = if var.device().is_cpu() && !tensor_update {
                    State::Host(
                        kind.slots()
                            .iter()
                            .map(|_| vec![0f32; var.elem_count()])
                            .collect(),
                    )
                } else {
                    let zeros = || var.as_tensor().zeros_like();
                    State::Device(
                        kind.slots()
                            .iter()
                            .map(|_| zeros())
                            .collect::<candle_core::Result<_>>()?,
                    )
                };
                Ok(Slot { name, var, state })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            kind,
            slots,
            steps: 0,
            learning_rate,
            clip_norm: None,
        })
    }

    /// Clips gradients to a global L2 norm of at most `max_norm` before each update, as
    /// `torch.nn.utils.clip_grad_norm_` (scale `max_norm / (norm + 1e-6)` when below 1).
    pub fn with_clip_norm(mut self, max_norm: Option<f64>) -> Self {
        self.clip_norm = max_norm;
        self
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Back-propagates `loss` and applies one update.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// The global L2 norm of the gradients of this optimizer's parameters. Squares of parameters on a
    /// device are summed there, so the norm costs one scalar read whatever their number.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0f64;
        let mut on_device: Option<Tensor> = None;
        for slot in &self.slots {
            if let Some(grad) = grads.get(slot.var.as_tensor()) {
                let squares = grad.sqr()?.sum_all()?;
                match &slot.state {
                    State::Host(_) => sum += squares.to_scalar::<f32>()? as f64,
                    State::Device(_) => {
                        on_device = Some(match on_device {
                            Some(total) => (total + squares)?,
                            None => squares,
                        });
                    }
                }
            }
        }
        if let Some(total) = on_device {
            sum += total.to_scalar::<f32>()? as f64;
        }
        Ok(sum.sqrt())
    }

    /// Applies one update from `grads`. A parameter without a gradient is left as it is.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let grad_scale = match self.clip_norm {
            Some(max_norm) => {
                let norm = self.grad_norm(grads)?;
                (max_norm / (norm + 1e-6)).min(1.0) as f32
            }
            None => 1.0,
        };
        self.steps += 1;
        let mut update = Update::new(self.kind, self.learning_rate, self.steps);
        update.grad_scale = grad_scale;
        for slot in &mut self.slots {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let grad = grad.contiguous()?;
            match &mut slot.state {
                State::Host(state) => {
                    let op = InPlace {
                        update,
                        state: Mutex::new(state),
                    };
                    slot.var.as_tensor().inplace_op2(&grad, &op)?;
                }
                State::Device(state) => {
                    let param = update.apply_tensors(slot.var.as_tensor(), &grad, state)?;
                    slot.var.set(&param)?;
                }
            }
        }
        Ok(())
    }

    /// Every state buffer as a tensor named `<parameter>.<slot>`, on the CPU.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for slot in &self.slots {
            for (i, slot_name) in self.kind.slots().iter().enumerate() {
                let tensor = match &slot.state {
                    State::Host(buffers) => {
                        Tensor::from_slice(&buffers[i], slot.var.shape(), &Device::Cpu)?
                    }
                    State::Device(tensors) => tensors[i].to_device(&Device::Cpu)?,
                };
                out.insert(format!("{}.{slot_name}", slot.name), tensor);
            }
        }
        Ok(out)
    }

    /// Restores the state [`Optimizer::state`] returned, after `steps` updates. Every buffer must be
    /// there with its parameter's shape.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for slot in &mut self.slots {
            for (i, slot_name) in self.kind.slots().iter().enumerate() {
                let name = format!("{}.{slot_name}", slot.name);
                let tensor = tensors
                    .get(&name)
                    .with_context(|| format!("the optimizer state has no {name}"))?;
                ensure!(
                    tensor.dims() == slot.var.dims(),
                    "the optimizer state's {name} has shape {:?}, the parameter {:?}",
                    tensor.dims(),
                    slot.var.dims()
                );
                match &mut slot.state {
                    State::Host(buffers) => buffers[i] = tensor.flatten_all()?.to_vec1::<f32>()?,
                    State::Device(tensors) => {
                        tensors[i] = tensor.to_device(slot.var.device())?.contiguous()?;
                    }
                }
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// AdamW's per-step scalars: the weight decay factor, the second moment's bias correction and the
/// (bias-corrected, negative) step size.
struct AdamStep {
    decay: f64,
    inv_bias2_sqrt: f64,
    neg_step_size: f64,
}

/// The constants of one update, the same for every parameter.
#[derive(Debug, Clone, Copy)]
struct Update {
    kind: OptimizerKind,
    lr: f64,
    step: u64,
    /// Every gradient is multiplied by this first (gradient clipping; 1 otherwise).
    grad_scale: f32,
}

impl Update {
    fn new(kind: OptimizerKind, lr: f64, step: u64) -> Self {
        Self {
            kind,
            lr,
            step,
            grad_scale: 1.0,
        }
    }

    /// AdamW's scalars for this step, shared by the CPU pass and the tensor update.
    fn adam_step(&self, beta1: f64, beta2: f64, weight_decay: f64) -> AdamStep {
        let t = self.step as i32;
        AdamStep {
            decay: 1.0 - self.lr * weight_decay,
            // PyTorch divides by a scalar as a multiplication by its reciprocal.
            inv_bias2_sqrt: 1.0 / (1.0 - beta2.powi(t)).sqrt(),
            neg_step_size: -self.lr / (1.0 - beta1.powi(t)),
        }
    }

    /// One pass over a parameter, its gradient and its state buffers.
    fn apply(&self, param: &mut [f32], grad: &[f32], state: &mut [Vec<f32>]) {
        match self.kind {
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let [m, v] = state else {
                    unreachable!("AdamW keeps two buffers")
                };
                let adam = self.adam_step(beta1, beta2, weight_decay);
                let decay = adam.decay as f32;
                let inv_bias2_sqrt = adam.inv_bias2_sqrt as f32;
                let neg_step_size = adam.neg_step_size as f32;
                let w1 = (1.0 - beta1) as f32;
                let b2 = beta2 as f32;
                let w2 = (1.0 - beta2) as f32;
                let eps = eps as f32;
                let scale = self.grad_scale;
                for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
                    let g = g * scale;
                    *p *= decay;
                    // torch.lerp with a weight below one half.
                    *m += w1 * (g - *m);
                    *v = *v * b2 + w2 * g * g;
                    let denom = v.sqrt() * inv_bias2_sqrt + eps;
                    *p += neg_step_size * *m / denom;
                }
            }
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
            } => {
                let [buf] = state else {
                    unreachable!("SGD keeps one buffer")
                };
                let wd = weight_decay as f32;
                let mu = momentum as f32;
                let neg_lr = -self.lr as f32;
                let first = self.step == 1;
                // PyTorch's CPU kernels fuse `x + alpha * y` into one multiply-add.
                let scale = self.grad_scale;
                for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf) {
                    let g = g * scale;
                    let g = if wd != 0.0 { p.mul_add(wd, g) } else { g };
                    let d = if mu == 0.0 {
                        g
                    } else {
                        *b = if first { g } else { *b * mu + g };
                        *b
                    };
                    *p = d.mul_add(neg_lr, *p);
                }
            }
        }
    }
}

impl Update {
    /// The same update as [`Update::apply`] in tensor operations on the parameter's device: returns
    /// the new parameter and replaces the state tensors.
    fn apply_tensors(&self, param: &Tensor, grad: &Tensor, state: &mut [Tensor]) -> Result<Tensor> {
        let g = if self.grad_scale == 1.0 {
            grad.clone()
        } else {
            grad.affine(self.grad_scale as f64, 0.0)?
        };
        match self.kind {
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let [m, v] = state else {
                    unreachable!("AdamW keeps two buffers")
                };
                let adam = self.adam_step(beta1, beta2, weight_decay);
                let param = param.affine(adam.decay, 0.0)?;
                *m = (&*m + (&g - &*m)?.affine(1.0 - beta1, 0.0)?)?;
                *v = (v.affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                let denom = v.sqrt()?.affine(adam.inv_bias2_sqrt, eps)?;
                Ok((param + (&*m / denom)?.affine(adam.neg_step_size, 0.0)?)?)
            }
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
            } => {
                let [buf] = state else {
                    unreachable!("SGD keeps one buffer")
                };
                let g = if weight_decay != 0.0 {
                    (param.affine(weight_decay, 0.0)? + g)?
                } else {
                    g
                };
                let d = if momentum == 0.0 {
                    g
                } else {
                    *buf = if self.step == 1 {
                        g
                    } else {
                        (buf.affine(momentum, 0.0)? + g)?
                    };
                    buf.clone()
                };
                Ok((param + d.affine(-self.lr, 0.0)?)?)
            }
        }
    }
}

/// The CPU in-place update of one parameter (`dst`) from its gradient (`src`).
struct InPlace<'a> {
    update: Update,
    state: Mutex<&'a mut Vec<Vec<f32>>>,
}

impl InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "kiln-optimizer-update"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) = (
            param_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("the optimizer updates contiguous tensors only")
        };
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (param, grad) else {
            candle_core::bail!("the optimizer updates f32 tensors only")
        };
        let mut state = self.state.lock().expect("optimizer state lock");
        self.update
            .apply(&mut param[p0..p1], &grad[g0..g1], state.as_mut_slice());
        Ok(())
    }
}

/// Refuses a checkpoint's optimizer made for another rule.
pub fn check_kind(saved: &str, kind: OptimizerKind) -> Result<()> {
    if saved != kind.name() {
        bail!(
            "the checkpoint was written by the {saved} optimizer, this run uses {}",
            kind.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: [f32; 6] = [0.5, -1.25, 2.0, 0.0, 3.5, -0.75];
    const GRADIENTS: [[f32; 6]; 3] = [
        [0.1, -0.2, 0.3, -0.4, 0.5, -0.6],
        [-0.05, 0.15, 0.0, 0.25, -0.35, 0.45],
        [1.0, -1.0, 0.5, -0.5, 0.25, -0.25],
    ];

    /// Runs three updates and returns the parameter's bits after each.
    fn run(kind: OptimizerKind, lr: f64) -> Vec<[u32; 6]> {
        let var = Var::from_slice(&INITIAL, (2, 3), &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(kind, vec![("w".into(), var.clone())], lr).unwrap();
        GRADIENTS
            .iter()
            .map(|g| {
                // d(sum(w * g))/dw = g.
                let g = Tensor::from_slice(g, (2, 3), &Device::Cpu).unwrap();
                let loss = var.as_tensor().mul(&g).unwrap().sum_all().unwrap();
                opt.backward_step(&loss).unwrap();
                let values = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                std::array::from_fn(|i| values[i].to_bits())
            })
            .collect()
    }

    /// Bit for bit: the update follows PyTorch's arithmetic, rounding included.
    fn assert_matches(got: &[[u32; 6]], expected: &[[u32; 6]; 3]) {
        for (step, (g, e)) in got.iter().zip(expected).enumerate() {
            let (gf, ef) = (g.map(f32::from_bits), e.map(f32::from_bits));
            assert_eq!(g, e, "step {}: {gf:?} vs PyTorch {ef:?}", step + 1);
        }
    }

    /// `torch.optim.AdamW(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)`, PyTorch 2.x on
    /// the CPU (benches/reference/optimizer_reference.py).
    #[test]
    fn adamw_matches_pytorch() {
        let expected = [
            [
                0x3efadaba, 0xbf9eb439, 0x3ffeb1c4, 0x3c23d70b, 0x405f566d, 0xbf3d6bba,
            ],
            [
                0x3ef97736, 0xbf9e92e4, 0x3ffdcfae, 0x3c4043f1, 0x405f3cb9, 0xbf3d2c56,
            ],
            [
                0x3ef612bd, 0xbf9dbe43, 0x3ffcbe61, 0x3c8dbe83, 0x405f0104, 0xbf3c7814,
            ],
        ];
        assert_matches(&run(OptimizerKind::adamw(0.01), 0.01), &expected);
    }

    /// `torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)`.
    #[test]
    fn sgd_with_momentum_matches_pytorch() {
        let expected = [
            [
                0x3efa9fbe, 0xbf9d47ae, 0x3ffbe76d, 0x3d23d70b, 0x405c9375, 0xbf3072b0,
            ],
            [
                0x3ef81850, 0xbf9c983f, 0x3ff7f738, 0x3d50bb6f, 0x405b838a, 0xbf2dcb75,
            ],
            [
                0x3ec25eea, 0xbf8f0578, 0x3fedc5f4, 0x3de2dcfa, 0x4058bd05, 0xbf24d542,
            ],
        ];
        let kind = OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 0.01,
        };
        assert_matches(&run(kind, 0.1), &expected);
    }

    /// Saving the state after one update and restoring it into a fresh optimizer gives the same next
    /// updates as going on without a break.
    #[test]
    fn restored_state_continues_exactly() {
        let straight = run(OptimizerKind::adamw(0.01), 0.01);
        let var = Var::from_slice(&INITIAL, (2, 3), &Device::Cpu).unwrap();
        let mut first = Optimizer::new(
            OptimizerKind::adamw(0.01),
            vec![("w".into(), var.clone())],
            0.01,
        )
        .unwrap();
        let grad = |i: usize| Tensor::from_slice(&GRADIENTS[i], (2, 3), &Device::Cpu).unwrap();
        let loss = |v: &Var, i| v.as_tensor().mul(&grad(i)).unwrap().sum_all().unwrap();
        first.backward_step(&loss(&var, 0)).unwrap();
        let saved = first.state().unwrap();
        let weights = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let var = Var::from_slice(&weights, (2, 3), &Device::Cpu).unwrap();
        let mut second = Optimizer::new(
            OptimizerKind::adamw(0.01),
            vec![("w".into(), var.clone())],
            0.01,
        )
        .unwrap();
        second.restore(&saved, first.steps()).unwrap();
        for (i, expected) in straight.iter().enumerate().skip(1) {
            second.backward_step(&loss(&var, i)).unwrap();
            let values = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(&bits[..], &expected[..], "step {}", i + 1);
        }
    }

    /// The update a GPU runs (tensor operations, state on the device), run on the CPU: the same
    /// parameters as the in-place update to float rounding, for both rules, with clipping, and its
    /// state saves and restores like the host state.
    #[test]
    fn the_device_update_agrees_with_the_in_place_one() {
        let sgd = OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 0.01,
        };
        for (kind, lr) in [(OptimizerKind::adamw(0.01), 0.01), (sgd, 0.1)] {
            let steps = |tensor_update: bool| {
                let var = Var::from_slice(&INITIAL, (2, 3), &Device::Cpu).unwrap();
                let vars = vec![("w".into(), var.clone())];
                let mut opt = Optimizer::with_state_on_device(kind, vars, lr, tensor_update)
                    .unwrap()
                    .with_clip_norm(Some(1.0));
                let mut seen = Vec::new();
                for g in &GRADIENTS {
                    let g = Tensor::from_slice(g, (2, 3), &Device::Cpu).unwrap();
                    let loss = var.as_tensor().mul(&g).unwrap().sum_all().unwrap();
                    opt.backward_step(&loss).unwrap();
                    seen.push(var.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
                (seen, opt.state().unwrap())
            };
            let (in_place, host_state) = steps(false);
            let (on_device, device_state) = steps(true);
            for (step, (a, b)) in in_place.iter().zip(&on_device).enumerate() {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                        "{kind:?} step {}: {a:?} vs {b:?}",
                        step + 1
                    );
                }
            }
            assert_eq!(host_state.len(), device_state.len());
            for (name, host) in &host_state {
                let device = device_state[name]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let host = host.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (x, y) in host.iter().zip(&device) {
                    assert!(
                        (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                        "{name}: {host:?} vs {device:?}"
                    );
                }
            }
            // Restored into tensors, the state is what was saved.
            let var = Var::from_slice(&INITIAL, (2, 3), &Device::Cpu).unwrap();
            let mut restored =
                Optimizer::with_state_on_device(kind, vec![("w".into(), var)], lr, true).unwrap();
            restored.restore(&device_state, 3).unwrap();
            let again = restored.state().unwrap();
            for (name, saved) in &device_state {
                let a = saved.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = again[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(a, b, "{name}");
            }
        }
    }

    /// Clipping scales the whole gradient so its global norm is the limit, as
    /// `torch.nn.utils.clip_grad_norm_`; a gradient already within the limit is left as it is.
    #[test]
    fn gradients_are_clipped_to_the_global_norm() {
        let step = |clip: f64| {
            let a = Var::from_slice(&[0.0f32, 0.0], 2, &Device::Cpu).unwrap();
            let b = Var::from_slice(&[0.0f32], 1, &Device::Cpu).unwrap();
            let kind = OptimizerKind::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
            };
            let vars = vec![("a".into(), a.clone()), ("b".into(), b.clone())];
            let mut opt = Optimizer::new(kind, vars, 1.0)
                .unwrap()
                .with_clip_norm(Some(clip));
            // Gradients (3, 4) and (12): global norm 13.
            let ga = Tensor::from_slice(&[3.0f32, 4.0], 2, &Device::Cpu).unwrap();
            let gb = Tensor::from_slice(&[12.0f32], 1, &Device::Cpu).unwrap();
            let loss = (a.as_tensor().mul(&ga).unwrap().sum_all().unwrap()
                + b.as_tensor().mul(&gb).unwrap().sum_all().unwrap())
            .unwrap();
            opt.backward_step(&loss).unwrap();
            let mut moved = a.as_tensor().to_vec1::<f32>().unwrap();
            moved.extend(b.as_tensor().to_vec1::<f32>().unwrap());
            moved
        };
        let clipped = step(6.5);
        let norm = clipped.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 6.5).abs() < 1e-4, "{clipped:?}");
        assert!(
            (clipped[0] / clipped[1] - 0.75).abs() < 1e-6,
            "direction kept"
        );
        assert_eq!(step(100.0), vec![-3.0, -4.0, -12.0]);
    }
}
