//! The optimizer state as named tensors, for checkpoints: torch's
//! `optimizer.state_dict()["state"]` flattened, `"{i}.{key}"` with i counting parameters over
//! the groups in order (torch's numbering) and the keys torch uses (`step`, `exp_avg`,
//! `exp_avg_sq`, `momentum_buffer`). Parameters without state have no entries.

use std::collections::HashMap;

use candle_core::{bail, Device, Result, Tensor};

use super::{AdamState, MomentumState, Optimizer, ParamState};

impl Optimizer {
    /// The state as (name, tensor) pairs, float32, each moment shaped as its parameter.
    pub fn state_tensors(&self, device: &Device) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let params = self.groups.iter().flat_map(|g| g.params.iter());
        for (i, (p, state)) in params.zip(self.state().iter().flatten()).enumerate() {
            let shaped = |v: &[f32]| Tensor::from_slice(v, p.shape(), device);
            match state {
                ParamState::Empty => {}
                ParamState::Adam(a) => {
                    out.push((format!("{i}.step"), Tensor::new(a.step, device)?));
                    out.push((format!("{i}.exp_avg"), shaped(&a.exp_avg)?));
                    out.push((format!("{i}.exp_avg_sq"), shaped(&a.exp_avg_sq)?));
                }
                ParamState::Momentum(m) => out.push((format!("{i}.momentum_buffer"), shaped(&m.buffer)?)),
            }
        }
        Ok(out)
    }

    /// Restores what `state_tensors` wrote (or a torch state converted to those names).
    pub fn load_state_tensors(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let flat = |t: &Tensor| {
            t.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()
        };
        let mut state = Vec::with_capacity(self.groups.len());
        let mut i = 0;
        for group in &self.groups {
            let mut saved = Vec::with_capacity(group.params.len());
            for _ in &group.params {
                let get = |key: &str| tensors.get(&format!("{i}.{key}"));
                saved.push(
                    match (get("exp_avg"), get("exp_avg_sq"), get("momentum_buffer")) {
                        (None, None, None) => ParamState::Empty,
                        (Some(m), Some(v), None) => {
                            let step = match get("step") {
                                Some(s) => s
                                    .flatten_all()?
                                    .to_dtype(candle_core::DType::F32)?
                                    .to_vec1::<f32>()?,
                                None => bail!("optimizer state: parameter {i} has moments but no step"),
                            };
                            match step.as_slice() {
                                [step] => ParamState::Adam(AdamState {
                                    step: *step,
                                    exp_avg: flat(m)?,
                                    exp_avg_sq: flat(v)?,
                                }),
                                _ => bail!("optimizer state: parameter {i}'s step is not a scalar"),
                            }
                        }
                        (None, None, Some(b)) => ParamState::Momentum(MomentumState { buffer: flat(b)? }),
                        _ => bail!("optimizer state: parameter {i} has a mixed or incomplete state"),
                    },
                );
                i += 1;
            }
            state.push(saved);
        }
        let known = state
            .iter()
            .flatten()
            .filter(|s| !matches!(s, ParamState::Empty))
            .count();
        let entries = tensors.keys().filter(|k| !k.ends_with(".step")).count();
        let expected: usize = state
            .iter()
            .flatten()
            .map(|s| match s {
                ParamState::Adam(_) => 2,
                ParamState::Momentum(_) => 1,
                ParamState::Empty => 0,
            })
            .sum();
        if entries != expected {
            bail!("optimizer state: {entries} tensors for {known} parameters with state (more than the groups hold?)");
        }
        self.load_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdamWConfig, ParamGroup, Rule};
    use super::*;
    use candle_core::{DType, Var};

    #[test]
    fn state_round_trips_through_tensors() -> Result<()> {
        let dev = Device::Cpu;
        for rule in [Rule::AdamW(AdamWConfig::default()), Rule::Sgd { momentum: 0.9 }] {
            let a = Var::from_tensor(&Tensor::arange(0f32, 6.0, &dev)?.reshape((2, 3))?)?;
            let b = Var::zeros(4, DType::F32, &dev)?;
            let groups = vec![
                ParamGroup {
                    params: vec![a.clone()],
                    lr: 0.1,
                    weight_decay: 0.01,
                },
                ParamGroup {
                    params: vec![b.clone()],
                    lr: 0.1,
                    weight_decay: 0.0,
                },
            ];
            let mut opt = Optimizer::new(rule, groups.clone())?;
            // Only `a` gets a grad: `b` keeps no state and writes no entries.
            let mut grads = a.as_tensor().sum_all()?.backward()?;
            grads.insert(a.as_tensor(), a.as_tensor().cos()?);
            opt.step(&grads)?;
            opt.step(&grads)?;
            let saved: HashMap<String, Tensor> = opt.state_tensors(&dev)?.into_iter().collect();
            assert!(saved.keys().all(|k| k.starts_with("0.")), "{:?}", saved.keys());
            let mut restored = Optimizer::new(rule, groups)?;
            restored.load_state_tensors(&saved)?;
            assert_eq!(restored.state(), opt.state());
            let mut extra = saved.clone();
            extra.insert("5.momentum_buffer".into(), Tensor::zeros(4, DType::F32, &dev)?);
            assert!(restored.load_state_tensors(&extra).is_err());
        }
        Ok(())
    }
}
