//! The training losses, differentiable through candle's autograd (composed ops only, so
//! they run on any device; the Lovasz weights are computed on the host).
//!
//! A loss yaml picks one of three criteria (`spec`):
//! - the experiment's (RankSEG-RMA `get_criterion` + `Segmentor.forward_loss`):
//!   `main_weight * CE(main) + aux_weight * CE(aux)`, CE averaged over the kept pixels of
//!   the batch, focal when `focal_gamma` > 0. The RankSEG-RMA code reads no other key: its
//!   JDT yamls train with this criterion there;
//! - JDTLosses' (zifuwanggg/JDTLosses `Segmentor.forward_loss_hard_label`), chosen by the
//!   JDT keys: `ce_weight * (main_weight CE(main) + aux_weight CE(aux)) + jdt_weight *
//!   JDTLoss(main)`;
//! - the JMLR RankSEG code's (`jmlr_loss`), substituted for the criterion of the first:
//!   `main_weight * L(main) + aux_weight * L(aux)`.
//!
//! The aux term is added only when there are aux logits and `aux_weight` > 0, and the JDT
//! term only when `jdt_weight` > 0, as both segmentors do (so parameters outside the graph
//! get no gradient and torch's optimizers skip them).
//!
//! ```text
//! let loss = Loss::from_config(&configs.loss.value, num_classes)?;
//! let target = Target::new(&labels, num_classes, DType::F32, &device)?; // 255 -> C first
//! let value = loss.forward(&main_logits, Some(&aux_logits), &target)?;
//! let grads = value.backward()?;
//! ```

pub mod ce;
pub mod dice;
pub mod jdt;
pub mod lovasz;
mod nll;
pub mod spec;
pub mod target;

use anyhow::Result;
use candle_core::Tensor;

pub use jdt::{ActiveClasses, JdtLoss};
pub use spec::{Criterion, JmlrLoss, LossSpec};
use target::scale;
pub use target::Target;

use crate::config::training::LossConfig;

/// A resolved loss yaml, ready to score a batch.
#[derive(Clone, Debug)]
pub struct Loss {
    pub spec: LossSpec,
}

impl Loss {
    pub fn from_config(config: &LossConfig, num_classes: usize) -> Result<Self> {
        Ok(Self {
            spec: LossSpec::from_config(config, num_classes)?,
        })
    }

    /// The scalar training loss of one batch: main logits (B, C, H, W), the aux head's
    /// (same shape, already upsampled to the crop as the heads do) when the model has one.
    pub fn forward(&self, main: &Tensor, aux: Option<&Tensor>, target: &Target) -> Result<Tensor> {
        target.check_logits(main, "main")?;
        if let Some(a) = aux {
            target.check_logits(a, "aux")?;
        }
        let s = &self.spec;
        let aux = aux.filter(|_| s.aux_weight > 0.0);
        // main_weight * L(main) [+ aux_weight * L(aux)], as `Segmentor.forward_loss`.
        let weighted = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Tensor> {
            let mut loss = scale(&f(main)?, s.main_weight)?;
            if let Some(a) = aux {
                loss = (loss + scale(&f(a)?, s.aux_weight)?)?;
            }
            Ok(loss)
        };
        match &s.criterion {
            Criterion::Experiment { focal_gamma } => {
                weighted(&|x| Ok(ce::experiment_ce(x, target, *focal_gamma)?))
            }
            Criterion::Jdt {
                ce_weight,
                jdt_weight,
                jdt,
            } => {
                // JDTLosses folds ce_weight into each term: ce_w * main_w * CE + ce_w * aux_w * CE.
                let ce_main = ce::experiment_ce(main, target, 0.0)?;
                let mut loss = scale(&ce_main, ce_weight * s.main_weight)?;
                if let Some(a) = aux {
                    let ce_aux = ce::experiment_ce(a, target, 0.0)?;
                    loss = (loss + scale(&ce_aux, ce_weight * s.aux_weight)?)?;
                }
                if *jdt_weight > 0.0 {
                    loss = (loss + scale(&jdt.forward(main, target)?, *jdt_weight)?)?;
                }
                Ok(loss)
            }
            Criterion::Jmlr(l) => weighted(&|x| jmlr(*l, x, target)),
        }
    }
}

fn jmlr(loss: JmlrLoss, logits: &Tensor, target: &Target) -> Result<Tensor> {
    Ok(match loss {
        // nn.CrossEntropyLoss(ignore_index): the experiment's CE.
        JmlrLoss::CrossEntropyLoss2d => ce::experiment_ce(logits, target, 0.0)?,
        JmlrLoss::FocalLoss => ce::jmlr_focal(logits, target)?,
        JmlrLoss::BCEWithLogitsLoss2d => ce::jmlr_bce(logits, target)?,
        JmlrLoss::DiceLoss => dice::soft_dice(logits, target)?,
        JmlrLoss::BDiceLoss => dice::b_soft_dice(logits, target)?,
        JmlrLoss::LovaszSoftmax => lovasz::lovasz_softmax(logits, target)?,
    })
}

#[cfg(test)]
mod tests;
