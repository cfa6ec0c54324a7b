//! A loss yaml (`LossConfig`) checked and resolved into what `Loss::forward` computes.
//! Every key is either used or rejected here, with the key named.

use anyhow::{bail, Result};

use super::jdt::{ActiveClasses, JdtLoss};
use crate::config::training::LossConfig;

/// The JMLR RankSEG code's losses, by their class names in its utils/losses.py (the value of
/// `"loss"` in its config.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JmlrLoss {
    CrossEntropyLoss2d,
    FocalLoss,
    BCEWithLogitsLoss2d,
    DiceLoss,
    BDiceLoss,
    LovaszSoftmax,
}

impl JmlrLoss {
    const ALL: [(&'static str, JmlrLoss); 6] = [
        ("CrossEntropyLoss2d", JmlrLoss::CrossEntropyLoss2d),
        ("FocalLoss", JmlrLoss::FocalLoss),
        ("BCEWithLogitsLoss2d", JmlrLoss::BCEWithLogitsLoss2d),
        ("DiceLoss", JmlrLoss::DiceLoss),
        ("BDiceLoss", JmlrLoss::BDiceLoss),
        ("LovaszSoftmax", JmlrLoss::LovaszSoftmax),
    ];

    pub fn parse(name: &str) -> Result<Self> {
        match Self::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, l)) => Ok(*l),
            None => bail!(
                "loss yaml: jmlr_loss `{name}` is not one of {}",
                Self::ALL.map(|(n, _)| n).join(", ")
            ),
        }
    }
}

/// What one head's logits are scored with.
#[derive(Clone, Debug, PartialEq)]
pub enum Criterion {
    /// The experiment's `get_criterion`: CE over the kept pixels, focal when gamma > 0.
    Experiment {
        focal_gamma: f64,
    },
    /// JDTLosses' `Segmentor.forward_loss_hard_label`: `ce_weight` times the weighted CE of
    /// both heads plus `jdt_weight` times JDTLoss of the main head.
    Jdt {
        ce_weight: f64,
        jdt_weight: f64,
        jdt: JdtLoss,
    },
    Jmlr(JmlrLoss),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LossSpec {
    pub main_weight: f64,
    pub aux_weight: f64,
    pub criterion: Criterion,
}

fn finite(key: &str, v: f64) -> Result<f64> {
    if !v.is_finite() {
        bail!("loss yaml: `{key}` must be a finite number, got {v}");
    }
    Ok(v)
}

fn at_least(key: &str, v: f64, min: f64, why: &str) -> Result<f64> {
    finite(key, v)?;
    if v < min {
        bail!("loss yaml: `{key}` must be >= {min} ({why}), got {v}");
    }
    Ok(v)
}

fn mode(key: &str, v: &str) -> Result<ActiveClasses> {
    match v {
        "ALL" => Ok(ActiveClasses::All),
        "PRESENT" => Ok(ActiveClasses::Present),
        _ => bail!("loss yaml: `{key}` must be \"ALL\" or \"PRESENT\", got {v:?}"),
    }
}

/// Every JDTLosses key, with whether the yaml sets it.
fn jdt_keys(c: &LossConfig) -> [(&'static str, bool); 14] {
    [
        ("ce_weight", c.ce_weight.is_some()),
        ("jdt_weight", c.jdt_weight.is_some()),
        ("mIoUD", c.mIoUD.is_some()),
        ("mIoUI", c.mIoUI.is_some()),
        ("mIoUC", c.mIoUC.is_some()),
        ("alpha", c.alpha.is_some()),
        ("beta", c.beta.is_some()),
        ("gamma", c.gamma.is_some()),
        ("smooth", c.smooth.is_some()),
        ("threshold", c.threshold.is_some()),
        ("log_loss", c.log_loss.is_some()),
        ("class_weights", c.class_weights.is_some()),
        ("active_classes_mode_hard", c.active_classes_mode_hard.is_some()),
        ("active_classes_mode_soft", c.active_classes_mode_soft.is_some()),
    ]
}

impl LossSpec {
    /// Checks the yaml's keys and values for a dataset of `num_classes` classes.
    pub fn from_config(c: &LossConfig, num_classes: usize) -> Result<Self> {
        let main_weight = finite("main_weight", c.main_weight)?;
        let aux_weight = finite("aux_weight", c.aux_weight)?;
        let keys = jdt_keys(c);
        let jdt_set: Vec<&str> = keys.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
        let criterion = if let Some(name) = &c.jmlr_loss {
            if let Some(k) = jdt_set.first() {
                bail!("loss yaml: jmlr_loss cannot be combined with the JDTLosses key `{k}`");
            }
            if c.focal_gamma.is_some() {
                bail!(
                    "loss yaml: jmlr_loss cannot be combined with `focal_gamma` (the JMLR \
                     FocalLoss has gamma 2; use jmlr_loss: FocalLoss)"
                );
            }
            Criterion::Jmlr(JmlrLoss::parse(name)?)
        } else if !jdt_set.is_empty() {
            if c.focal_gamma.is_some() {
                bail!(
                    "loss yaml: `focal_gamma` with JDTLosses keys: JDTLosses' CE term has no \
                     focal gamma (its get_criterion builds FocalLoss with gamma 0)"
                );
            }
            Self::jdt(c, &keys, num_classes)?
        } else {
            let g = c.focal_gamma.unwrap_or(0.0);
            Criterion::Experiment {
                focal_gamma: at_least("focal_gamma", g, 0.0, "a focusing exponent")?,
            }
        };
        Ok(Self {
            main_weight,
            aux_weight,
            criterion,
        })
    }

    fn jdt(c: &LossConfig, keys: &[(&str, bool)], num_classes: usize) -> Result<Criterion> {
        let missing: Vec<&str> = keys.iter().filter(|(_, s)| !s).map(|(k, _)| *k).collect();
        if !missing.is_empty() {
            bail!(
                "loss yaml: a JDTLosses loss needs all of its keys (its get_criterion reads \
                 each one; class_weights may be null), missing: {}",
                missing.join(", ")
            );
        }
        // `set` is complete, so every field is Some.
        let get = |v: Option<f64>| v.unwrap_or_default();
        let assert = "JDTLoss asserts it";
        let class_weights = c.class_weights.clone().flatten();
        if let Some(w) = &class_weights {
            if w.len() != num_classes {
                bail!(
                    "loss yaml: `class_weights` has {} entries, the dataset has {num_classes} classes",
                    w.len()
                );
            }
            for &x in w {
                finite("class_weights", x)?;
            }
        }
        let jdt = JdtLoss {
            miou_d: at_least("mIoUD", get(c.mIoUD), 0.0, assert)?,
            miou_i: at_least("mIoUI", get(c.mIoUI), 0.0, assert)?,
            miou_c: at_least("mIoUC", get(c.mIoUC), 0.0, assert)?,
            alpha: at_least("alpha", get(c.alpha), 0.0, assert)?,
            beta: at_least("beta", get(c.beta), 0.0, assert)?,
            gamma: at_least("gamma", get(c.gamma), 1.0, assert)?,
            smooth: at_least("smooth", get(c.smooth), 0.0, assert)?,
            threshold: at_least("threshold", get(c.threshold), 0.0, assert)?,
            log_loss: c.log_loss.unwrap_or(false),
            class_weights,
            active_hard: mode(
                "active_classes_mode_hard",
                c.active_classes_mode_hard.as_deref().unwrap_or(""),
            )?,
            active_soft: mode(
                "active_classes_mode_soft",
                c.active_classes_mode_soft.as_deref().unwrap_or(""),
            )?,
        };
        Ok(Criterion::Jdt {
            ce_weight: finite("ce_weight", get(c.ce_weight))?,
            jdt_weight: finite("jdt_weight", get(c.jdt_weight))?,
            jdt,
        })
    }
}
