//! Seeded synthetic probability maps: smooth softmax maps (random logits on a coarse grid,
//! bilinearly upsampled, so classes form blobs with uncertain borders), and labels drawn
//! from the maps themselves, so the maps are calibrated by construction.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// How a synthetic map looks.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    /// Grid cells per side of the coarse logit grid (blob size).
    pub grid: usize,
    /// Logit scale: larger is sharper.
    pub sharpness: f32,
    /// How many classes are present in an image (the others get very low logits).
    pub present: usize,
}

/// One (C, H, W) softmax map, row-major, from `seed`.
pub fn softmax_map(spec: &MapSpec, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (c_n, h, w, g) = (spec.classes, spec.height, spec.width, spec.grid.max(2));
    let mut present: Vec<usize> = (0..c_n).collect();
    for i in 0..spec.present.min(c_n) {
        let j = rng.random_range(i..c_n);
        present.swap(i, j);
    }
    present.truncate(spec.present.clamp(1, c_n));
    // Present classes get a random bias, so that object sizes vary from the whole image to
    // small uncertain blobs; absent classes sit far below (about e^-12 of the mass).
    let bias: Vec<f32> = (0..c_n)
        .map(|c| match present.iter().position(|&p| p == c) {
            Some(0) => 1.0,
            Some(_) => -2.5 * rng.random::<f32>(),
            None => f32::NAN,
        })
        .collect();
    let grid: Vec<f32> = (0..c_n * g * g)
        .map(|k| {
            let z: f32 = StandardNormal.sample(&mut rng);
            let b = bias[k / (g * g)];
            if b.is_nan() {
                spec.sharpness * z - 12.0
            } else {
                spec.sharpness * (z + b)
            }
        })
        .collect();
    let d = h * w;
    // Pixel-major first (bilinear logits, then a softmax over classes), then transposed.
    let mut pixels = vec![0f32; d * c_n];
    pixels.par_chunks_mut(c_n).enumerate().for_each(|(i, logits)| {
        let (y, x) = ((i / w) as f32, (i % w) as f32);
        let gy = y / (h.max(2) - 1) as f32 * (g - 1) as f32;
        let gx = x / (w.max(2) - 1) as f32 * (g - 1) as f32;
        let (y0, x0) = ((gy as usize).min(g - 2), (gx as usize).min(g - 2));
        let (fy, fx) = (gy - y0 as f32, gx - x0 as f32);
        for (c, l) in logits.iter_mut().enumerate() {
            let at = |yy: usize, xx: usize| grid[c * g * g + yy * g + xx];
            *l = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for l in logits.iter_mut() {
            *l = (*l - top).exp();
            total += *l;
        }
        logits.iter_mut().for_each(|l| *l /= total);
    });
    let mut out = vec![0f32; c_n * d];
    out.par_chunks_mut(d).enumerate().for_each(|(c, row)| {
        for (i, p) in row.iter_mut().enumerate() {
            *p = pixels[i * c_n + c];
        }
    });
    out
}

/// A label map drawn pixel by pixel from a (C, D) probability map.
pub fn sample_labels(probs: &[f32], classes: usize, seed: u64) -> Vec<i64> {
    let d = probs.len() / classes;
    let mut rng = StdRng::seed_from_u64(seed);
    (0..d)
        .map(|i| {
            let u: f32 = rng.random();
            let mut acc = 0.0;
            for c in 0..classes {
                acc += probs[c * d + i];
                if u < acc {
                    return c as i64;
                }
            }
            (classes - 1) as i64
        })
        .collect()
}
