//! The JMLR code's soft Dice losses (`DiceLoss`, `BDiceLoss` in
//! statmlben/rankseg pytorch-segmentation-rankseg/utils/losses.py): one Dice over every
//! element of the batch (classes and pixels flattened together), smooth 1.

use anyhow::Result;
use candle_core::Tensor;

use super::target::{one_hot, softmax_classes, Target};

/// `1 - (2 sum(p t) + 1) / (sum p + sum t + 1)` over all elements.
fn flat_dice(p: &Tensor, t: &Tensor) -> Result<Tensor> {
    let inter = p.mul(t)?.sum_all()?;
    let num = inter.affine(2.0, 1.0)?;
    let den = ((p.sum_all()? + t.sum_all()?)? + 1.0)?;
    Ok(num.div(&den)?.affine(-1.0, 1.0)?)
}

/// `DiceLoss(smooth=1, ignore_index)`: softmax probabilities against the one-hot labels.
/// Its ignore handling: when ignored pixels are present, they take the batch's smallest
/// label (`target[target == ignore_index] = target.min()`), i.e. they count as that class,
/// usually background. A batch of ignored pixels only (torch's `scatter_` then fails on the
/// out-of-range index) gets an all-zero target here.
pub fn soft_dice(logits: &Tensor, target: &Target) -> Result<Tensor> {
    let labels = target.labels();
    let min = labels.iter().copied().min().unwrap_or(0);
    let t = one_hot(
        labels,
        target.dims(),
        target.num_classes(),
        Some(min),
        logits.dtype(),
        logits.device(),
    )?;
    flat_dice(&softmax_classes(logits)?, &t)
}

/// `BDiceLoss(smooth=1)`, the binary (B-) soft Dice: sigmoid of every logit against the
/// one-hot targets the JMLR trainer builds for its BCE losses (ignored pixels negative in
/// every class). As written, its trainer only makes those targets for `BCE*` losses, and
/// `BDiceLoss` on (B, H, W) labels fails for more than one class; the one-hot targets are
/// what the multi-class B-soft-Dice of the JMLR tables needs.
pub fn b_soft_dice(logits: &Tensor, target: &Target) -> Result<Tensor> {
    let s = candle_nn::ops::sigmoid(logits)?;
    flat_dice(&s, target.onehot())
}
