//! The JMLR code's `LovaszSoftmax` (statmlben/rankseg, utils/losses.py, calling Berman et
//! al.'s reference `lovasz_softmax` in utils/lovasz_losses.py with its defaults:
//! `classes='present'`, `per_image=False`, and the ignore index): the Lovasz extension of
//! the Jaccard loss per class over the kept pixels of the whole batch, averaged over the
//! classes present among them.
//!
//! Per class, the errors |fg - p| are sorted in decreasing order and dotted with the
//! Lovasz gradient of the sorted ground truth. That gradient is piecewise constant in the
//! errors (torch treats it as a constant too), so the loss is sum(w * error) with w the
//! gradient scattered back to each pixel, and autograd only has to see that product.

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::target::{scale, softmax_classes, Target};

pub fn lovasz_softmax(logits: &Tensor, target: &Target) -> Result<Tensor> {
    let (b, c, h, w) = logits.dims4()?;
    let hw = h * w;
    let probs = softmax_classes(logits)?;
    let p = probs.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let labels = target.labels();
    let kept: Vec<usize> = (0..labels.len())
        .filter(|&i| !target.is_ignored(labels[i]))
        .collect();
    let mut weights = vec![0f64; b * c * hw];
    let mut present = 0usize;
    for k in 0..c {
        let at = |i: usize| ((i / hw) * c + k) * hw + i % hw;
        let fg: Vec<bool> = kept.iter().map(|&i| labels[i] as usize == k).collect();
        if !fg.iter().any(|&f| f) {
            continue;
        }
        present += 1;
        let err: Vec<f64> = kept
            .iter()
            .zip(&fg)
            .map(|(&i, &f)| (f as u8 as f64 - p[at(i)]).abs())
            .collect();
        let mut order: Vec<usize> = (0..kept.len()).collect();
        // Decreasing; a stable sort keeps ties in pixel order (their order does not change
        // the loss, only which of the tied pixels gets which weight).
        order.sort_by(|&x, &y| err[y].total_cmp(&err[x]));
        for (j, g) in lovasz_grad(order.iter().map(|&o| fg[o])).into_iter().enumerate() {
            weights[at(kept[order[j]])] = g;
        }
    }
    let dev = logits.device();
    if present == 0 {
        // Berman's code returns `probas * 0.` for no kept pixel: zero loss, zero gradient.
        return Ok(scale(&probs.sum_all()?, 0.0)?);
    }
    let wt = Tensor::from_vec(weights, (b, c, h, w), dev)?.to_dtype(logits.dtype())?;
    // |fg - p| without abs: fg is 0 or 1 and p lies in [0, 1].
    let fg = target.onehot();
    let err = (fg + probs.mul(&fg.affine(-2.0, 1.0)?)?)?;
    Ok((err.mul(&wt)?.sum_all()? / present as f64)?)
}

/// Alg. 1 of Berman et al.: with the ground truth sorted by decreasing error, the Jaccard
/// loss of each prefix, differenced.
fn lovasz_grad(gt_sorted: impl Iterator<Item = bool>) -> Vec<f64> {
    let gt: Vec<f64> = gt_sorted.map(|g| g as u8 as f64).collect();
    let gts: f64 = gt.iter().sum();
    let (mut fg_seen, mut bg_seen) = (0.0, 0.0);
    let jaccard: Vec<f64> = gt
        .iter()
        .map(|&g| {
            fg_seen += g;
            bg_seen += 1.0 - g;
            1.0 - (gts - fg_seen) / (gts + bg_seen)
        })
        .collect();
    let mut out = jaccard.clone();
    for i in 1..out.len() {
        out[i] = jaccard[i] - jaccard[i - 1];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::lovasz_grad;

    #[test]
    fn grad_telescopes_to_the_loss_of_all_errors() {
        // fg fg bg fg bg: the prefixes' Jaccard losses 1/3, 2/3, 3/4, 1, 1 end at 1 (all
        // pixels wrong), so the weights sum to 1; the first is 1 - 2/3.
        let g = lovasz_grad([true, true, false, true, false].into_iter());
        let total: f64 = g.iter().sum();
        assert!((total - 1.0).abs() < 1e-12, "{g:?}");
        assert!((g[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!(g.iter().all(|&x| x >= 0.0), "{g:?}");
    }
}
