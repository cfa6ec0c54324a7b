//! Test-time inference as the experiment's `Segmentor.multi_scale_predict`: sliding
//! windows over the padded image, logits resized to each window and averaged, divided by
//! the temperature and softmaxed; with other scale ratios than `[1]`, the image is resized
//! per ratio (and mirrored when `flip`), predicted, and the probabilities resized back and
//! averaged. (The experiment predicts a lone ratio such as `[0.75]` at scale 1, ignoring it;
//! here it is honoured as one scale of its multi-scale loop.)

use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::data::resize;
use crate::data::transform::Plane;
use crate::models::{resize_bilinear, Model};

/// The experiment pads a rescaled, already normalised image with ImageNet's mean in 0..1
/// units (not zero): kept, since it is what produced the published numbers.
const RESCALED_PAD: [f32; 3] = [0.485, 0.456, 0.406];

pub struct Inference<'a> {
    pub model: &'a Model,
    pub device: Device,
    pub num_classes: usize,
    pub crop: [usize; 2],
    pub stride_rate: f64,
    pub flip: bool,
    pub ratios: Vec<f64>,
    pub temperature: f64,
}

/// A batch of equally sized (C, H, W) inputs, one buffer.
pub struct Batch {
    pub data: Vec<f32>,
    pub size: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Inference<'_> {
    /// Probabilities (B, K, H, W) for the batch.
    pub fn probabilities(&self, batch: &Batch) -> Result<Vec<f32>> {
        if self.ratios == [1.0] {
            // As the experiment: scale 1 alone predicts the image as it is, without flip.
            let logits = self.logits(batch)?;
            return Ok(softmax(logits, batch.size, self.num_classes, self.temperature));
        }
        let per_image = batch.channels * batch.height * batch.width;
        let mut out = Vec::with_capacity(batch.size * self.num_classes * batch.height * batch.width);
        for image in batch.data.chunks_exact(per_image) {
            out.extend(self.multi_scale(image, batch)?);
        }
        Ok(out)
    }

    /// Averaged window logits (B, K, H, W); the input must be at least the crop size.
    fn logits(&self, batch: &Batch) -> Result<Vec<f32>> {
        let [crop_h, crop_w] = self.crop;
        let (b, k, h, w) = (batch.size, self.num_classes, batch.height, batch.width);
        let input = Tensor::from_slice(&batch.data, (b, batch.channels, h, w), &self.device)?;
        let starts = |size: usize, crop: usize| -> Vec<usize> {
            if size <= crop {
                return vec![0];
            }
            let stride = (crop as f64 * self.stride_rate).ceil() as usize;
            let grid = (size - crop).div_ceil(stride) + 1;
            (0..grid).map(|i| (i * stride + crop).min(size) - crop).collect()
        };
        let (rows, columns) = (starts(h, crop_h), starts(w, crop_w));
        if rows.len() == 1 && columns.len() == 1 && crop_h >= h && crop_w >= w {
            // One window is the whole image: its logits are the average.
            return self.window_logits(&input, h, w);
        }
        let mut sum = vec![0.0f32; b * k * h * w];
        let mut count = vec![0u32; h * w];
        for &top in &rows {
            for &left in &columns {
                let window = input
                    .narrow(2, top, crop_h.min(h))?
                    .narrow(3, left, crop_w.min(w))?;
                let (wh, ww) = (crop_h.min(h), crop_w.min(w));
                let logits = self.window_logits(&window.contiguous()?, wh, ww)?;
                for plane in 0..b * k {
                    let src = &logits[plane * wh * ww..(plane + 1) * wh * ww];
                    let dst = &mut sum[plane * h * w..(plane + 1) * h * w];
                    for y in 0..wh {
                        let row = (top + y) * w + left;
                        for (d, s) in dst[row..row + ww].iter_mut().zip(&src[y * ww..(y + 1) * ww]) {
                            *d += s;
                        }
                    }
                }
                for y in 0..wh {
                    let row = (top + y) * w + left;
                    count[row..row + ww].iter_mut().for_each(|c| *c += 1);
                }
            }
        }
        if count.iter().any(|&c| c > 1) {
            for plane in sum.chunks_exact_mut(h * w) {
                for (v, &c) in plane.iter_mut().zip(&count) {
                    *v /= c as f32;
                }
            }
        }
        Ok(sum)
    }

    /// One window's logits at the window's size (SegFormer's 1/4-resolution logits are
    /// resized bilinearly, align_corners=False).
    fn window_logits(&self, window: &Tensor, height: usize, width: usize) -> Result<Vec<f32>> {
        let mut logits = self.model.forward_checked(window, "the model window")?;
        let (_, classes, lh, lw) = logits.dims4()?;
        if classes != self.num_classes {
            anyhow::bail!(
                "the model gives {classes} classes but the data yaml has num_classes {}",
                self.num_classes
            );
        }
        if (lh, lw) != (height, width) {
            logits = resize_bilinear(&logits, height, width)?;
        }
        Ok(logits.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// One image (C, H, W) at every ratio, probabilities averaged (K, H, W).
    fn multi_scale(&self, image: &[f32], batch: &Batch) -> Result<Vec<f32>> {
        let (c, h, w, k) = (batch.channels, batch.height, batch.width, self.num_classes);
        let plane = Plane {
            data: to_hwc(image, c, h * w),
            height: h,
            width: w,
            channels: c,
        };
        let mut total = vec![0.0f32; k * h * w];
        for &ratio in &self.ratios {
            // int(h * r), kept odd when the image is odd, as the experiment does.
            let scaled = |size: usize| {
                let s = (size as f64 * ratio) as usize;
                if size % 2 == 1 && s.is_multiple_of(2) {
                    s + 1
                } else {
                    s
                }
            };
            let fill: Vec<f32> = (0..c).map(|ch| RESCALED_PAD[ch.min(2)]).collect();
            let resized =
                resize::linear(&plane, scaled(h), scaled(w)).pad_centred(self.crop[0], self.crop[1], &fill);
            let (rh, rw) = (resized.height, resized.width);
            let chw = resized.to_chw(|_, v| v);
            let mut views = chw.clone();
            if self.flip {
                views.extend(mirror(&chw, c, rh, rw));
            }
            let batch = Batch {
                data: views,
                size: if self.flip { 2 } else { 1 },
                channels: c,
                height: rh,
                width: rw,
            };
            let probs = softmax(self.logits(&batch)?, batch.size, k, self.temperature);
            let mut probs_one = probs[..k * rh * rw].to_vec();
            if self.flip {
                let mirrored = mirror(&probs[k * rh * rw..], k, rh, rw);
                for (p, q) in probs_one.iter_mut().zip(mirrored) {
                    *p = (*p + q) / 2.0;
                }
            }
            let back = resize::linear(
                &Plane {
                    data: to_hwc(&probs_one, k, rh * rw),
                    height: rh,
                    width: rw,
                    channels: k,
                },
                h,
                w,
            );
            for (t, v) in total.iter_mut().zip(back.to_chw(|_, v| v)) {
                *t += v;
            }
        }
        let n = self.ratios.len() as f32;
        total.iter_mut().for_each(|v| *v /= n);
        Ok(total)
    }
}

fn to_hwc(chw: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    (0..pixels)
        .flat_map(|i| (0..channels).map(move |c| chw[c * pixels + i]))
        .collect()
}

/// Left-right mirror of (C, H, W).
fn mirror(chw: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(chw.len());
    for row in chw[..channels * height * width].chunks_exact(width) {
        out.extend(row.iter().rev());
    }
    out
}

/// `(logits / temperature).log_softmax(1).exp()` over the class axis of (B, K, H, W).
pub fn softmax(mut logits: Vec<f32>, images: usize, classes: usize, temperature: f64) -> Vec<f32> {
    let t = temperature as f32;
    let image_len = logits.len() / images.max(1);
    logits
        .par_chunks_mut(image_len.max(1))
        .for_each(|image| softmax_image(image, classes, t));
    logits
}

/// `softmax(ln p / temperature)` over the class axis of (B, K, H, W) probabilities, as
/// `p^(1/T) / sum_k p_k^(1/T)` per pixel: the probabilities the logits `ln p` would give at
/// temperature T. Each pixel is first divided by its largest probability, so that small
/// ones do not underflow; a pixel whose probabilities are all 0 stays 0. Values outside
/// [0, 1] are refused here, since the result would hide them from the predictors' check.
pub fn temper(mut probs: Vec<f32>, images: usize, classes: usize, temperature: f64) -> Result<Vec<f32>> {
    let power = 1.0 / temperature;
    let image_len = probs.len() / images.max(1);
    let dim = image_len / classes.max(1);
    probs.par_chunks_mut(image_len.max(1)).try_for_each(|image| {
        if let Some(bad) = image.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            anyhow::bail!(
                "probabilities must be finite and in the range [0, 1] to apply a temperature, got {bad}"
            );
        }
        let mut scaled = vec![0.0f64; classes];
        for i in 0..dim {
            let max = (0..classes).map(|c| image[c * dim + i]).fold(0.0f32, f32::max) as f64;
            if max == 0.0 {
                continue;
            }
            for (c, q) in scaled.iter_mut().enumerate() {
                *q = (image[c * dim + i] as f64 / max).powf(power);
            }
            let sum: f64 = scaled.iter().sum();
            for (c, q) in scaled.iter().enumerate() {
                image[c * dim + i] = (q / sum) as f32;
            }
        }
        Ok(())
    })?;
    Ok(probs)
}

/// One image's (K, D) logits to probabilities in place, a chunk of pixels at a time with
/// the classes outermost (contiguous reads); per pixel the same operations in the same
/// order as a per-pixel loop: max, sum of exp(x - max) over classes, exp(x - max - ln sum).
fn softmax_image(image: &mut [f32], classes: usize, t: f32) {
    const PIXELS: usize = 1024;
    let dim = image.len() / classes;
    if t != 1.0 {
        image.iter_mut().for_each(|x| *x /= t);
    }
    let mut max = vec![f32::NEG_INFINITY; PIXELS];
    let mut sum = vec![0.0f32; PIXELS];
    for start in (0..dim).step_by(PIXELS) {
        let n = PIXELS.min(dim - start);
        let (max, sum) = (&mut max[..n], &mut sum[..n]);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        for c in 0..classes {
            let row = &image[c * dim + start..c * dim + start + n];
            max.iter_mut().zip(row).for_each(|(m, &x)| *m = m.max(x));
        }
        for c in 0..classes {
            let row = &image[c * dim + start..c * dim + start + n];
            sum.iter_mut()
                .zip(row)
                .zip(&*max)
                .for_each(|((s, &x), &m)| *s += (x - m).exp());
        }
        sum.iter_mut().for_each(|s| *s = s.ln());
        for c in 0..classes {
            let row = &mut image[c * dim + start..c * dim + start + n];
            row.iter_mut()
                .zip(&*max)
                .zip(&*sum)
                .for_each(|((x, &m), &l)| *x = (*x - m - l).exp());
        }
    }
}
