//! JDTLosses' `JDTLoss` (losses/jdt_loss.py of zifuwanggg/JDTLosses, the same file in the
//! RankSEG-RMA tree) for hard labels: Jaccard (alpha = beta = 1), Dice (0.5, 0.5) and
//! Tversky losses with L1 cardinalities, reduced as mIoU^D (per class over the batch),
//! mIoU^I (per image) and mIoU^C (per class over the images where it is active).

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::target::{log_softmax_classes, pow_scalar, scale, Target};

/// Which classes a loss term averages over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveClasses {
    All,
    /// Classes whose (masked) one-hot maximum exceeds `threshold`.
    Present,
}

/// The parameters of `JDTLoss(...)` as JDTLosses' `get_criterion` passes them (`norm` is
/// left at its default 1, `ignore_index` is `num_classes`).
#[derive(Clone, Debug, PartialEq)]
pub struct JdtLoss {
    pub miou_d: f64,
    pub miou_i: f64,
    pub miou_c: f64,
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub smooth: f64,
    pub threshold: f64,
    pub log_loss: bool,
    pub class_weights: Option<Vec<f64>>,
    pub active_hard: ActiveClasses,
    /// The mode for soft labels (`forward_soft`).
    pub active_soft: ActiveClasses,
}

/// tp, fp, fn per (image, class), each (B, C).
struct Counts {
    tp: Tensor,
    fp: Tensor,
    fn_: Tensor,
}

impl JdtLoss {
    /// The loss of the main head's logits (B, C, H, W) against hard labels: probabilities
    /// and one-hot labels zeroed at ignored pixels, `active_classes_mode_hard`.
    pub fn forward(&self, logits: &Tensor, target: &Target) -> Result<Tensor> {
        let (b, c, h, w) = logits.dims4()?;
        let n = h * w;
        let prob = log_softmax_classes(logits)?.exp()?.reshape((b, c, n))?;
        let keep = target.keep().reshape((b, 1, n))?;
        let label = target.onehot().reshape((b, c, n))?;
        let prob = prob.broadcast_mul(&keep)?;
        let counts = cardinalities(&prob, &label, true)?;
        // `torch.amax(label, dim=2)`: 1 where a kept pixel of image b has class c, else 0.
        let amax: Vec<f64> = presence(target).iter().map(|&p| p as u8 as f64).collect();
        self.reduce_all(&counts, &amax, self.active_hard, logits.dtype(), b, c)
    }

    /// JDTLoss with soft labels (B, C, H, W) of the logits' dtype (label smoothing,
    /// distillation): no ignored pixels (JDTLoss masks only hard labels by `ignore_index`),
    /// `active_classes_mode_soft`.
    pub fn forward_soft(&self, logits: &Tensor, soft: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = logits.dims4()?;
        if soft.dims() != logits.dims() {
            anyhow::bail!(
                "JDTLoss: soft labels are {:?}, the logits {:?}",
                soft.shape(),
                logits.shape()
            );
        }
        let n = h * w;
        let prob = log_softmax_classes(logits)?.exp()?.reshape((b, c, n))?;
        let label = soft.reshape((b, c, n))?;
        let counts = cardinalities(&prob, &label, false)?;
        let amax = label
            .max(2)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        self.reduce_all(&counts, &amax, self.active_soft, logits.dtype(), b, c)
    }

    /// `forward_loss` after the cardinalities: the mIoU^D and mIoU^I / mIoU^C terms, with
    /// the active classes from the labels' per-(image, class) maxima `amax`.
    fn reduce_all(
        &self,
        counts: &Counts,
        amax: &[f64],
        mode: ActiveClasses,
        dtype: DType,
        b: usize,
        c: usize,
    ) -> Result<Tensor> {
        let active_if = |above: bool| match mode {
            ActiveClasses::All => true,
            ActiveClasses::Present => above,
        };
        let mut loss = counts.tp.sum_all()?.zeros_like()?;
        if self.miou_d > 0.0 {
            // amax over (batch, pixels) is the largest of the per-image maxima.
            let active: Vec<bool> = (0..c)
                .map(|k| {
                    let m = (0..b).map(|i| amax[i * c + k]).fold(f64::NEG_INFINITY, f64::max);
                    active_if(exceeds(m, self.threshold, dtype))
                })
                .collect();
            loss = (loss + scale(&self.loss_d(counts, &active)?, self.miou_d)?)?;
        }
        if self.miou_i > 0.0 || self.miou_c > 0.0 {
            let active: Vec<bool> = amax
                .iter()
                .map(|&m| active_if(exceeds(m, self.threshold, dtype)))
                .collect();
            let (li, lc) = self.loss_ic(counts, &active, b, c)?;
            // torch: loss += mIoUI * loss_mIoUI + mIoUC * loss_mIoUC (the pair summed first).
            loss = (loss + (scale(&li, self.miou_i)? + scale(&lc, self.miou_c)?)?)?;
        }
        Ok(loss)
    }

    /// 1 - Tversky (or its -log), to the power gamma, times the class weights.
    fn per_class_loss(&self, tp: &Tensor, fp: &Tensor, fn_: &Tensor) -> Result<Tensor> {
        let num = (tp + self.smooth)?;
        let den = ((tp + (fp * self.alpha)?)? + (fn_ * self.beta)?)?;
        let tversky = num.div(&(den + self.smooth)?)?;
        let mut loss = if self.log_loss {
            tversky.log()?.neg()?
        } else {
            tversky.affine(-1.0, 1.0)?
        };
        if self.gamma > 1.0 {
            loss = pow_scalar(&loss, self.gamma)?;
        }
        if let Some(cw) = &self.class_weights {
            let c = *loss.dims().last().unwrap_or(&0);
            let cw = Tensor::new(cw.as_slice(), loss.device())?
                .to_dtype(loss.dtype())?
                .reshape(c)?;
            loss = loss.broadcast_mul(&cw)?;
        }
        Ok(loss)
    }

    /// `forward_loss_mIoUD`: counts summed over the batch, the active classes' mean.
    fn loss_d(&self, k: &Counts, active: &[bool]) -> Result<Tensor> {
        let idx: Vec<u32> = (0..active.len() as u32).filter(|&i| active[i as usize]).collect();
        if idx.is_empty() {
            return Ok(scale(&k.tp.sum_all()?, 0.0)?);
        }
        let loss = self.per_class_loss(&k.tp.sum(0)?, &k.fp.sum(0)?, &k.fn_.sum(0)?)?;
        let idx = Tensor::from_vec(idx.clone(), idx.len(), loss.device())?;
        Ok(loss.index_select(&idx, 0)?.mean_all()?)
    }

    /// `forward_loss_mIoUIC`: the (B, C) loss matrix zeroed where inactive, then averaged
    /// per image (mIoU^I) and per class (mIoU^C) over the rows / columns with an active entry.
    fn loss_ic(&self, k: &Counts, active: &[bool], b: usize, c: usize) -> Result<(Tensor, Tensor)> {
        if !active.iter().any(|&a| a) {
            let zero = scale(&k.tp.sum_all()?, 0.0)?;
            return Ok((zero.clone(), zero));
        }
        let dev = k.tp.device();
        let mask_v: Vec<f32> = active.iter().map(|&a| a as u8 as f32).collect();
        let mask = Tensor::from_vec(mask_v, (b, c), dev)?.to_dtype(k.tp.dtype())?;
        let matrix = self.per_class_loss(&k.tp, &k.fp, &k.fn_)?.mul(&mask)?;
        let reduce = |dim: usize| -> Result<Tensor> {
            // dim 1: per image (rows of the matrix), dim 0: per class (its columns).
            let (outer, inner) = if dim == 1 { (b, c) } else { (c, b) };
            let is_active = |o: usize, i: usize| {
                if dim == 1 {
                    active[o * c + i]
                } else {
                    active[i * c + o]
                }
            };
            let sums: Vec<usize> = (0..outer)
                .map(|o| (0..inner).filter(|&i| is_active(o, i)).count())
                .collect();
            let rows: Vec<u32> = (0..outer as u32).filter(|&o| sums[o as usize] > 0).collect();
            let counts: Vec<f64> = rows.iter().map(|&o| sums[o as usize] as f64).collect();
            let n = rows.len();
            let rows = Tensor::from_vec(rows, n, dev)?;
            let counts = Tensor::from_vec(counts, n, dev)?.to_dtype(matrix.dtype())?;
            let per = matrix.sum(dim)?.index_select(&rows, 0)?.div(&counts)?;
            Ok(per.mean_all()?)
        };
        Ok((reduce(1)?, reduce(0)?))
    }
}

/// L1 cardinalities as JDTLoss computes them, tp = (|p| + |l| - |p - l|) / 2 (p and l are
/// non-negative, so their norms are sums). Hard labels are 0/1 and p lies in [0, 1], so
/// there |p - l| is l + p (1 - 2 l): the same floats as torch's terms, without abs's kink at
/// the zeroed (ignored) pixels, where candle's abs backward is 1 and torch's 0.
fn cardinalities(prob: &Tensor, label: &Tensor, hard: bool) -> Result<Counts> {
    let pc = prob.sum(2)?;
    let lc = label.sum(2)?;
    let diff = if hard {
        (label + prob.mul(&label.affine(-2.0, 1.0)?)?)?
    } else {
        (prob - label)?.abs()?
    };
    let dc = diff.sum(2)?;
    let tp = ((&pc + &lc)? - dc)?.affine(0.5, 0.0)?;
    let fp = (pc - &tp)?;
    let fn_ = (lc - &tp)?;
    Ok(Counts { tp, fp, fn_ })
}

/// (B * C) flags: does image b have a kept pixel of class c.
fn presence(target: &Target) -> Vec<bool> {
    let (b, h, w) = target.dims();
    let c = target.num_classes();
    let mut present = vec![false; b * c];
    for (i, &l) in target.labels().iter().enumerate() {
        if !target.is_ignored(l) {
            present[(i / (h * w)) * c + l as usize] = true;
        }
    }
    present
}

/// `amax > threshold`, compared in the label's float type as torch compares a tensor with
/// a Python float.
fn exceeds(amax: f64, threshold: f64, dtype: DType) -> bool {
    match dtype {
        DType::F64 => amax > threshold,
        _ => (amax as f32) > threshold as f32,
    }
}
