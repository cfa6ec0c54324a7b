//! torch's AdamW and SGD-with-momentum over parameter groups, as the experiment's `main.py`
//! builds them: each group its own learning rate (set by the schedule every step) and
//! weight decay. candle-nn's optimizers have no groups (and its SGD no momentum).
//!
//! The state is plain data ([`ParamState`] per parameter, groups in order, parameters in
//! group order, the order torch's `optimizer.state_dict()` numbers them), so a checkpoint
//! can save it and a resume restore it with [`Optimizer::load_state`].

pub mod adamw;
pub mod groups;
pub mod sgd;
mod state;

use candle_core::{backprop::GradStore, bail, DType, Result, Tensor, Var};

pub use adamw::{AdamState, AdamWConfig};
pub use groups::{segmentor_groups, Module};
pub use sgd::MomentumState;

/// A parameter group: torch's `{"params": ..., "lr": ..., "weight_decay": ...}`.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<Var>,
    pub lr: f64,
    pub weight_decay: f64,
}

/// Which update rule, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    AdamW(AdamWConfig),
    /// `momentum`, dampening 0, Nesterov off.
    Sgd {
        momentum: f64,
    },
}

/// One parameter's state; `Empty` until its first step with a gradient (torch creates
/// state lazily too, and a parameter without a grad keeps none).
#[derive(Clone, Debug, PartialEq)]
pub enum ParamState {
    Empty,
    Adam(AdamState),
    Momentum(MomentumState),
}

pub struct Optimizer {
    pub rule: Rule,
    pub groups: Vec<ParamGroup>,
    state: Vec<Vec<ParamState>>,
}

impl Optimizer {
    /// Float32 parameters only: the update rules reproduce torch's float32 arithmetic.
    pub fn new(rule: Rule, groups: Vec<ParamGroup>) -> Result<Self> {
        for (g, group) in groups.iter().enumerate() {
            for (i, p) in group.params.iter().enumerate() {
                if p.dtype() != DType::F32 {
                    bail!(
                        "optimizer: parameter {i} of group {g} is {:?}; float32 only",
                        p.dtype()
                    );
                }
            }
        }
        let state = groups
            .iter()
            .map(|g| vec![ParamState::Empty; g.params.len()])
            .collect();
        Ok(Optimizer { rule, groups, state })
    }

    /// `optimizer.step()`: every parameter that has a gradient in `grads` moves; the others
    /// (torch's `grad is None`) keep their values and state.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
            for (var, state) in group.params.iter().zip(states.iter_mut()) {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let g = grad.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                if g.len() != p.len() {
                    bail!(
                        "optimizer: a grad of {:?} for a parameter of {:?}",
                        grad.shape(),
                        var.shape()
                    );
                }
                match self.rule {
                    Rule::AdamW(c) => {
                        if !matches!(state, ParamState::Adam(_)) {
                            *state = ParamState::Adam(AdamState::new(p.len()));
                        }
                        if let ParamState::Adam(s) = state {
                            adamw::update(&mut p, &g, s, group.lr, group.weight_decay, &c);
                        }
                    }
                    Rule::Sgd { momentum } => {
                        let mut buf = match std::mem::replace(state, ParamState::Empty) {
                            ParamState::Momentum(m) => Some(m),
                            _ => None,
                        };
                        sgd::update(&mut p, &g, &mut buf, group.lr, group.weight_decay, momentum);
                        if let Some(m) = buf {
                            *state = ParamState::Momentum(m);
                        }
                    }
                }
                var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
            }
        }
        Ok(())
    }

    /// The per-parameter state, `[group][param]`.
    pub fn state(&self) -> &[Vec<ParamState>] {
        &self.state
    }

    /// Restores a saved state: the same groups and sizes, and states of this rule.
    pub fn load_state(&mut self, state: Vec<Vec<ParamState>>) -> Result<()> {
        if state.len() != self.groups.len() {
            bail!(
                "optimizer state: {} groups saved, {} here",
                state.len(),
                self.groups.len()
            );
        }
        for (g, (group, saved)) in self.groups.iter().zip(&state).enumerate() {
            if saved.len() != group.params.len() {
                bail!(
                    "optimizer state: group {g} has {} parameters saved, {} here",
                    saved.len(),
                    group.params.len()
                );
            }
            for (i, (p, s)) in group.params.iter().zip(saved).enumerate() {
                let n = p.elem_count();
                let ok = match (s, self.rule) {
                    (ParamState::Empty, _) => true,
                    (ParamState::Adam(a), Rule::AdamW(_)) => a.exp_avg.len() == n && a.exp_avg_sq.len() == n,
                    (ParamState::Momentum(m), Rule::Sgd { .. }) => m.buffer.len() == n,
                    _ => false,
                };
                if !ok {
                    bail!(
                        "optimizer state: parameter {i} of group {g} does not fit ({n} values, {:?})",
                        self.rule
                    );
                }
            }
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads_for(vars: &[Var], seed: f64) -> Result<GradStore> {
        let mut grads = vars[0].as_tensor().sum_all()?.backward()?;
        for (i, v) in vars.iter().enumerate() {
            let g = (v.as_tensor().sin()? * (seed + i as f64))?;
            grads.insert(v.as_tensor(), g);
        }
        Ok(grads)
    }

    fn run(rule: Rule, steps: usize, resume_at: Option<usize>) -> Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let make = || -> Result<(Vec<Var>, Optimizer)> {
            let a = Var::from_tensor(&Tensor::arange(0f32, 20.0, &dev)?.reshape((4, 5))?)?;
            let b = Var::from_tensor(&Tensor::arange(-2f32, 3.0, &dev)?)?;
            let groups = vec![
                ParamGroup {
                    params: vec![a.clone()],
                    lr: 0.1,
                    weight_decay: 0.01,
                },
                ParamGroup {
                    params: vec![b.clone()],
                    lr: 0.2,
                    weight_decay: 0.0,
                },
            ];
            Ok((vec![a, b], Optimizer::new(rule, groups)?))
        };
        let (mut vars, mut opt) = make()?;
        for k in 0..steps {
            if Some(k) == resume_at {
                // A new optimizer over parameters restored from a "checkpoint".
                let (fresh, mut fresh_opt) = make()?;
                for (f, v) in fresh.iter().zip(&vars) {
                    f.set(v.as_tensor())?;
                }
                fresh_opt.load_state(opt.state().to_vec())?;
                (vars, opt) = (fresh, fresh_opt);
            }
            opt.step(&grads_for(&vars, 1.0 + k as f64)?)?;
        }
        vars.iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect()
    }

    #[test]
    fn restored_state_continues_exactly() -> Result<()> {
        for rule in [Rule::AdamW(AdamWConfig::default()), Rule::Sgd { momentum: 0.9 }] {
            assert_eq!(run(rule, 6, None)?, run(rule, 6, Some(3))?, "{rule:?}");
        }
        Ok(())
    }

    #[test]
    fn refuses_mismatched_state_and_non_f32() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::zeros(3, DType::F32, &dev)?;
        let group = || ParamGroup {
            params: vec![a.clone()],
            lr: 0.1,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(Rule::Sgd { momentum: 0.9 }, vec![group()])?;
        let wrong_len = vec![vec![ParamState::Momentum(MomentumState { buffer: vec![0.0; 2] })]];
        assert!(opt.load_state(wrong_len).is_err());
        let wrong_rule = vec![vec![ParamState::Adam(AdamState::new(3))]];
        assert!(opt.load_state(wrong_rule).is_err());
        assert!(opt.load_state(vec![]).is_err());
        let f64_group = ParamGroup {
            params: vec![Var::zeros(3, DType::F64, &dev)?],
            lr: 0.1,
            weight_decay: 0.0,
        };
        assert!(Optimizer::new(Rule::Sgd { momentum: 0.9 }, vec![f64_group]).is_err());
        Ok(())
    }
}
