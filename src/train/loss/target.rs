//! A batch's labels prepared once for every loss term (main and aux heads share them), and
//! the softmax over the class dimension the losses start from.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};

/// Labels of one batch, (B, H, W), as the experiment's dataset hands them to the criterion:
/// classes `0..C`, and `C` (its `ignore_index` 255 mapped to `num_classes` after the
/// transforms) for ignored pixels.
pub struct Target {
    labels: std::sync::Arc<Vec<u32>>,
    dims: (usize, usize, usize),
    num_classes: usize,
    /// (B, C, H, W): one-hot of the labels, all-zero rows at ignored pixels; as JDTLoss builds
    /// it (labels clamped to C - 1, then multiplied by the keep mask) and as the JMLR trainer
    /// builds its BCE targets (`target == k` for k < C).
    onehot: Tensor,
    /// (B, 1, H, W): 1 where the pixel is kept.
    keep: Tensor,
    /// Flat (B * H * W) indices of the kept pixels, u32.
    kept: Tensor,
    n_kept: usize,
}

impl Target {
    /// `labels`: (B, H, W), any integer dtype, values in `0..=num_classes`; the float tensors
    /// are made in `dtype` (the logits') on `device`.
    pub fn new(labels: &Tensor, num_classes: usize, dtype: DType, device: &Device) -> Result<Self> {
        let (b, h, w) = labels
            .dims3()
            .with_context(|| format!("loss labels must be (B, H, W), got {:?}", labels.shape()))?;
        if num_classes == 0 {
            bail!("loss: num_classes must be at least 1");
        }
        let raw = labels.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        let mut out = Vec::with_capacity(raw.len());
        for &l in &raw {
            if l < 0 || l > num_classes as i64 {
                bail!(
                    "loss labels must lie in 0..={num_classes} ({num_classes} = ignored, the \
                     data yaml's ignore_index mapped as the experiment maps it), found {l}"
                );
            }
            out.push(l as u32);
        }
        let onehot = one_hot(&out, (b, h, w), num_classes, None, dtype, device)?;
        let keep_v: Vec<f32> = out
            .iter()
            .map(|&l| (l != num_classes as u32) as u8 as f32)
            .collect();
        let keep = Tensor::from_vec(keep_v, (b, 1, h, w), device)?.to_dtype(dtype)?;
        let kept_idx: Vec<u32> = (0..out.len() as u32)
            .filter(|&i| out[i as usize] != num_classes as u32)
            .collect();
        let n_kept = kept_idx.len();
        let kept = Tensor::from_vec(kept_idx, n_kept, device)?;
        Ok(Self {
            labels: std::sync::Arc::new(out),
            dims: (b, h, w),
            num_classes,
            onehot,
            keep,
            kept,
            n_kept,
        })
    }

    /// The labels, shared (ops that keep them for their backward).
    pub fn shared_labels(&self) -> std::sync::Arc<Vec<u32>> {
        self.labels.clone()
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
    pub fn dims(&self) -> (usize, usize, usize) {
        self.dims
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    pub fn onehot(&self) -> &Tensor {
        &self.onehot
    }
    pub fn keep(&self) -> &Tensor {
        &self.keep
    }
    pub fn kept_indices(&self) -> &Tensor {
        &self.kept
    }
    pub fn n_kept(&self) -> usize {
        self.n_kept
    }
    pub fn is_ignored(&self, label: u32) -> bool {
        label as usize == self.num_classes
    }

    /// Checks that logits (B, C, H, W) belong to these labels.
    pub fn check_logits(&self, logits: &Tensor, what: &str) -> Result<()> {
        let (b, h, w) = self.dims;
        let want = [b, self.num_classes, h, w];
        if logits.dims() != want {
            bail!(
                "loss: {what} logits are {:?}, the labels want {want:?} (B, num_classes, H, W)",
                logits.shape()
            );
        }
        if logits.dtype() != self.onehot.dtype() {
            bail!(
                "loss: {what} logits are {:?}, the target was made for {:?}",
                logits.dtype(),
                self.onehot.dtype()
            );
        }
        Ok(())
    }
}

/// (B, C, H, W) one-hot of flat labels; a label equal to `num_classes` (ignored) becomes
/// `ignored_as` when given, an all-zero row otherwise.
pub fn one_hot(
    labels: &[u32],
    (b, h, w): (usize, usize, usize),
    num_classes: usize,
    ignored_as: Option<u32>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let hw = h * w;
    let mut v = vec![0f32; b * num_classes * hw];
    for (i, &l) in labels.iter().enumerate() {
        let l = if l as usize == num_classes {
            ignored_as
        } else {
            Some(l)
        };
        if let Some(l) = l.filter(|&l| (l as usize) < num_classes) {
            let (img, px) = (i / hw, i % hw);
            v[(img * num_classes + l as usize) * hw + px] = 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (b, num_classes, h, w), device)?.to_dtype(dtype)?)
}

/// `x.log_softmax(dim=1)` as torch computes it (x - max - log sum exp(x - max)), composed of
/// ops with candle backward. The maximum is a constant shift, so it is detached.
pub fn log_softmax_classes(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let z = x.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(1)?.log()?;
    z.broadcast_sub(&lse)
}

/// `F.softmax(x, dim=1)`: exp(x - max) over its sum.
pub fn softmax_classes(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(1)?;
    e.broadcast_div(&s)
}

/// Per-pixel cross-entropy, (B, H, W): -log p(label), 0 at ignored pixels (their one-hot row
/// is zero), as `nn.CrossEntropyLoss(reduction="none", ignore_index=C)`.
pub fn pixel_nll(logits: &Tensor, target: &Target) -> candle_core::Result<Tensor> {
    if logits.device().is_cpu() {
        return super::nll::pixel_nll(logits, target.shared_labels());
    }
    let logp = log_softmax_classes(logits)?;
    (logp * target.onehot())?.sum(1)?.neg()
}

/// `x ** gamma` as torch evaluates it: its pow kernel squares for 2 (and so does its
/// backward), `std::pow` otherwise (what candle's powf calls on CPU).
pub fn pow_scalar(x: &Tensor, gamma: f64) -> candle_core::Result<Tensor> {
    if gamma == 1.0 {
        Ok(x.clone())
    } else if gamma == 2.0 {
        x.sqr()
    } else {
        x.powf(gamma)
    }
}

/// Sum over the last dim of a (B, C, N) view.
pub fn sum_pixels(x: &Tensor) -> candle_core::Result<Tensor> {
    x.sum(D::Minus1)
}

/// `x * w` keeping the graph edge when w is 0: candle's backward drops an affine by 0,
/// torch's gives the input a zero gradient (and its optimizers then still step that
/// parameter: moments decay, weight decay applies), so a zero weight multiplies by a tensor.
pub fn scale(x: &Tensor, w: f64) -> candle_core::Result<Tensor> {
    if w == 0.0 {
        x.broadcast_mul(&Tensor::zeros((), x.dtype(), x.device())?)
    } else {
        x.affine(w, 0.0)
    }
}
