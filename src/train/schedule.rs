//! The experiment's learning-rate schedule: `main.py`'s `lr_lambda` under torch's
//! `LambdaLR`, stepped once per iteration. Optimizer step k (from 1) runs at
//! `base_lr * lambda(k - 1)`: LambdaLR applies lambda(0) when it is built and lambda(i)
//! at its i-th `step()`, which `train.py` calls after each optimizer step.

use candle_core::{bail, Result};

use super::optim::Optimizer;

/// Linear warmup from `start_lr` (as a fraction of `lr`), then polynomial decay to 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupPoly {
    /// `start_lr / lr`.
    pub start_factor: f64,
    /// `warmup_ratio * train_iters`, not rounded.
    pub warmup_iters: f64,
    pub train_iters: f64,
    pub power: f64,
}

impl WarmupPoly {
    pub fn new(lr: f64, start_lr: f64, warmup_ratio: f64, train_iters: usize, power: f64) -> Result<Self> {
        if lr.is_nan() || lr <= 0.0 {
            bail!("schedule: lr must be positive, got {lr}");
        }
        let train_iters = train_iters as f64;
        Ok(WarmupPoly {
            start_factor: start_lr / lr,
            warmup_iters: warmup_ratio * train_iters,
            train_iters,
            power,
        })
    }

    /// `lambda(i)`. One past the end is reached too: `train.py` calls `scheduler.step()`
    /// after the last optimizer step. There the base is negative, and Python's `**` gives a
    /// negative rate (integer power) or a complex one, NaN here; no step ever uses it.
    /// Dividing by a zero-length decay raises in Python and is an error here.
    pub fn factor(&self, i: u64) -> Result<f64> {
        let i = i as f64;
        if i < self.warmup_iters {
            return Ok(self.start_factor.max(i / self.warmup_iters));
        }
        let span = self.train_iters - self.warmup_iters;
        if span == 0.0 {
            bail!(
                "schedule: iteration {i} with no decay iterations (train_iters {})",
                self.train_iters
            );
        }
        Ok((1.0 - (i - self.warmup_iters) / span).powf(self.power))
    }
}

/// torch's `LambdaLR` over an optimizer's groups: `base_lrs` are the groups' rates when it
/// was built (torch's `initial_lr`), `last_epoch` counts its steps. Both are all a resume
/// needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LambdaLr {
    pub schedule: WarmupPoly,
    pub base_lrs: Vec<f64>,
    pub last_epoch: u64,
}

impl LambdaLr {
    /// Builds it and applies lambda(0), as torch's constructor does.
    pub fn new(schedule: WarmupPoly, optimizer: &mut Optimizer) -> Result<Self> {
        let base_lrs = optimizer.groups.iter().map(|g| g.lr).collect();
        let s = LambdaLr {
            schedule,
            base_lrs,
            last_epoch: 0,
        };
        s.apply(optimizer)?;
        Ok(s)
    }

    /// `scheduler.step()`.
    pub fn step(&mut self, optimizer: &mut Optimizer) -> Result<()> {
        self.last_epoch += 1;
        self.apply(optimizer)
    }

    /// Sets every group's rate for `last_epoch` (also after restoring a saved scheduler).
    pub fn apply(&self, optimizer: &mut Optimizer) -> Result<()> {
        if self.base_lrs.len() != optimizer.groups.len() {
            bail!(
                "schedule: {} base rates for {} groups",
                self.base_lrs.len(),
                optimizer.groups.len()
            );
        }
        let f = self.schedule.factor(self.last_epoch)?;
        for (g, base) in optimizer.groups.iter_mut().zip(&self.base_lrs) {
            g.lr = base * f;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_poly() -> Result<()> {
        // 100 iterations, 10% warmup: 10 warmup iterations from 1e-6 / 1e-2.
        let s = WarmupPoly::new(1e-2, 1e-6, 0.1, 100, 0.9)?;
        assert_eq!(s.factor(0)?, 1e-6 / 1e-2);
        assert_eq!(s.factor(5)?, 0.5);
        assert_eq!(s.factor(10)?, 1.0);
        assert_eq!(s.factor(55)?, 0.5f64.powf(0.9));
        assert_eq!(s.factor(100)?, 0.0);
        assert!(s.factor(101)?.is_nan());
        assert!(WarmupPoly::new(1e-2, 1e-6, 0.0, 0, 1.0)?.factor(0).is_err());
        // SPEC: train_iters 6 and 7 steps, the last at lambda(6) = 0, w = 0.06.
        let s = WarmupPoly::new(6e-4, 1e-6, 0.01, 6, 1.0)?;
        assert_eq!(s.factor(0)?, 1e-6 / 6e-4);
        assert_eq!(s.factor(6)?, 0.0);
        assert!(s.factor(7)? < 0.0);
        Ok(())
    }
}
