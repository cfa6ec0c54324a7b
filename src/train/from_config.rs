//! The optimizer and schedule `main.py` builds from `configs/optims/*.yaml` and
//! `configs/schedules/*.yaml`.

use candle_core::{bail, Result};

use super::optim::{AdamWConfig, Rule};
use super::schedule::WarmupPoly;
use crate::config::training::{OptimConfig, ScheduleConfig};

/// `optimizer: sgd` (its yaml must give `momentum`, which `main.py` reads unconditionally)
/// or `adamw` (torch's default betas and eps); anything else is `NotImplementedError` there.
pub fn rule(optim: &OptimConfig) -> Result<Rule> {
    match optim.optimizer.as_str() {
        "adamw" => Ok(Rule::AdamW(AdamWConfig::default())),
        "sgd" => match optim.momentum {
            Some(momentum) => Ok(Rule::Sgd { momentum }),
            None => bail!("optim yaml: optimizer sgd needs `momentum`"),
        },
        other => bail!("optim yaml: optimizer {other:?} is not one of adamw, sgd"),
    }
}

/// `lr_lambda` for a run of `train_iters` optimizer iterations (by epoch: epochs x batches
/// per epoch, as `main.py` sets it).
pub fn schedule(optim: &OptimConfig, sched: &ScheduleConfig, train_iters: usize) -> Result<WarmupPoly> {
    WarmupPoly::new(
        optim.lr,
        optim.start_lr,
        sched.warmup_ratio,
        train_iters,
        optim.power,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn optim(name: &str, momentum: Option<f64>) -> OptimConfig {
        OptimConfig {
            optimizer: name.into(),
            lr: 0.01,
            start_lr: 1e-6,
            multiplier: 10.0,
            power: 0.9,
            weight_decay: 5e-4,
            momentum,
        }
    }

    #[test]
    fn rules_from_yaml() -> Result<()> {
        assert_eq!(rule(&optim("sgd", Some(0.9)))?, Rule::Sgd { momentum: 0.9 });
        assert_eq!(rule(&optim("adamw", None))?, Rule::AdamW(AdamWConfig::default()));
        assert!(rule(&optim("sgd", None)).is_err());
        assert!(rule(&optim("adam", None)).is_err());
        Ok(())
    }
}
