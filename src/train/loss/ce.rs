//! Cross-entropy family: the experiment's criterion (`losses/focal_loss.py`, also JDTLosses'
//! CE term) and the JMLR code's `FocalLoss` and `BCEWithLogitsLoss2d`.

use candle_core::{Result, Tensor};

use super::target::{pixel_nll, pow_scalar, scale, Target};

/// The experiment's `FocalLoss(gamma, ignore_index=C)`: per pixel -(1 - pt)^gamma log pt
/// (plain CE when gamma is 0), averaged over the kept pixels of the whole batch.
///
/// The kept pixels are selected before the focal factor, as torch's `loss[keep_mask]` leaves
/// the dropped ones without gradient: computing the factor at an ignored pixel (pt = 1) would
/// send 0 * inf through pow's backward for gamma < 1.
///
/// A batch without a kept pixel gives torch's mean of nothing, NaN, which would poison every
/// weight; here it is 0 with zero gradient (the one departure from the experiment).
pub fn experiment_ce(logits: &Tensor, target: &Target, focal_gamma: f64) -> Result<Tensor> {
    let nll = pixel_nll(logits, target)?.flatten_all()?;
    if target.n_kept() == 0 {
        return scale(&nll.sum_all()?, 0.0);
    }
    let nll = nll.index_select(target.kept_indices(), 0)?;
    let per_pixel = if focal_gamma > 0.0 {
        focal_factor(&nll, focal_gamma)?.mul(&nll)?
    } else {
        nll
    };
    per_pixel.mean_all()
}

/// (1 - exp(-nll))^gamma.
fn focal_factor(nll: &Tensor, gamma: f64) -> Result<Tensor> {
    let pt = nll.neg()?.exp()?;
    pow_scalar(&pt.affine(-1.0, 1.0)?, gamma)
}

/// The JMLR code's `FocalLoss(gamma=2, ignore_index)`: the same per-pixel term, but
/// `loss.mean()` over all B * H * W pixels, the ignored ones counting as 0.
pub fn jmlr_focal(logits: &Tensor, target: &Target) -> Result<Tensor> {
    let nll = pixel_nll(logits, target)?;
    focal_factor(&nll, 2.0)?.mul(&nll)?.mean_all()
}

/// The JMLR code's `BCEWithLogitsLoss2d` on the targets its trainer builds
/// (`target_oh[:, k] = target == k`: ignored pixels are negatives of every class), averaged
/// over B * C * H * W. The stable form max(x, 0) - x t + log(1 + exp(-|x|)).
pub fn jmlr_bce(logits: &Tensor, target: &Target) -> Result<Tensor> {
    let t = target.onehot();
    let soft = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let loss = ((logits.relu()? - logits.mul(t)?)? + soft)?;
    loss.mean_all()
}
