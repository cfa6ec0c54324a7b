//! UperNet's fusion conv without its most expensive part.
//!
//! transformers upsamples every FPN level to the finest level's size, concatenates them and
//! applies a 3x3 conv. The conv is linear per input block and bilinear upsampling commutes
//! with channel mixing, so for a block that was upsampled, each kernel tap's channel mix can
//! run at the block's own (2x, 4x, 8x smaller) resolution; only the resampling and the
//! tap's shift happen at full size. Same function, a quarter to a sixty-fourth of the
//! multiply-adds for those blocks (most of an UperNet forward).

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{custom_kernels, resize_bilinear, Conv};

/// PyTorch's bilinear source coordinates (align_corners=False) for one axis:
/// (lower index, upper index, weight of the upper one) per output position.
fn source_axis(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(input - 1);
            let hi = (lo + 1).min(input - 1);
            (lo, hi, (src - lo as f64) as f32)
        })
        .collect()
}

/// Given the 9 taps' channel mixes g (B, 9 C_out, h, w) of a map upsampled to (H, W), the
/// 3x3 conv (padding 1) of the upsampled map: out[y, x] = sum over taps (ky, kx) of the
/// bilinear sample of g_tap at output position (y + ky - 1, x + kx - 1), zero outside.
struct ShiftedUpsampleSum {
    c_out: usize,
    height: usize,
    width: usize,
}

impl CustomOp1 for ShiftedUpsampleSum {
    fn name(&self) -> &'static str {
        "shifted-upsample-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c9, h, w) = layout.shape().dims4()?;
        let (c_out, big_h, big_w) = (self.c_out, self.height, self.width);
        if c9 != 9 * c_out {
            candle_core::bail!("shifted upsample sum expects 9 x {c_out} channels, got {c9}");
        }
        let g = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("shifted upsample sum needs a contiguous f32 input"),
        };
        let rows = source_axis(h, big_h);
        let cols = source_axis(w, big_w);
        let mut out = vec![0f32; b * c_out * big_h * big_w];
        out.par_chunks_mut(big_h * big_w)
            .enumerate()
            .for_each(|(plane, dst)| {
                let (image, co) = (plane / c_out, plane % c_out);
                // One resampled row per tap column offset, reused across the three kernel rows.
                let mut resampled = vec![0f32; big_w];
                for tap in 0..9 {
                    let (dy, dx) = (tap / 3, tap % 3);
                    let src = &g[((image * 9 + tap) * c_out + co) * h * w..][..h * w];
                    for y in 0..big_h {
                        // Output row y reads the upsampled map at row y + dy - 1.
                        let Some(yy) = (y + dy).checked_sub(1).filter(|&yy| yy < big_h) else {
                            continue;
                        };
                        let (y0, y1, ly) = rows[yy];
                        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
                        for (v, &(x0, x1, lx)) in resampled.iter_mut().zip(&cols) {
                            let top = (1.0 - lx) * r0[x0] + lx * r0[x1];
                            let bottom = (1.0 - lx) * r1[x0] + lx * r1[x1];
                            *v = (1.0 - ly) * top + ly * bottom;
                        }
                        let row = &mut dst[y * big_w..(y + 1) * big_w];
                        // Output column x reads column x + dx - 1.
                        match dx {
                            0 => row[1..]
                                .iter_mut()
                                .zip(&resampled[..big_w - 1])
                                .for_each(|(o, v)| *o += v),
                            1 => row.iter_mut().zip(&resampled).for_each(|(o, v)| *o += v),
                            _ => row[..big_w - 1]
                                .iter_mut()
                                .zip(&resampled[1..])
                                .for_each(|(o, v)| *o += v),
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, big_h, big_w))))
    }
}

/// A 3x3 same-padding conv over the concatenation of maps of which all but the first are
/// to be upsampled (bilinear) to the first one's size.
pub struct ConvOfUpsampled {
    /// The whole (C_out, n C_in, 3, 3) weight, for the plain formulation off the CPU.
    weight: Tensor,
    /// The first block's 3x3 conv, at full resolution.
    full: Conv,
    /// Per later block: the 9 taps' channel mixes as one 1x1 conv (9 C_out, C_in).
    taps: Vec<Conv>,
    c_out: usize,
}

impl ConvOfUpsampled {
    /// From a (C_out, n C_in, 3, 3) weight over n blocks of C_in channels each.
    pub fn new(weight: &Tensor, blocks: usize) -> Result<Self> {
        let (c_out, c_all, _, _) = weight.dims4()?;
        let c_in = c_all / blocks;
        let block = |i: usize| weight.narrow(1, i * c_in, c_in);
        let full = Conv::from_weight(block(0)?.contiguous()?, None)?;
        let taps = (1..blocks)
            .map(|i| {
                // (C_out, C_in, 3, 3) -> (3, 3, C_out, C_in) -> (9 C_out, C_in, 1, 1).
                let mixes =
                    block(i)?
                        .permute((2, 3, 0, 1))?
                        .contiguous()?
                        .reshape((9 * c_out, c_in, 1, 1))?;
                Conv::from_weight(mixes, None)
            })
            .collect::<Result<_>>()?;
        Ok(ConvOfUpsampled {
            weight: weight.clone(),
            full,
            taps,
            c_out,
        })
    }

    /// `maps[0]` at full size, the others at their own (smaller) sizes.
    pub fn forward(&self, maps: &[Tensor]) -> Result<Tensor> {
        let (_, _, height, width) = maps[0].dims4()?;
        if !custom_kernels(&maps[0]) {
            // transformers' formulation: upsample, concatenate, convolve.
            let upsampled = maps
                .iter()
                .map(|m| resize_bilinear(m, height, width))
                .collect::<Result<Vec<_>>>()?;
            return Tensor::cat(&upsampled, 1)?.conv2d(&self.weight, 1, 1, 1, 1);
        }
        let mut out = self.full.forward(&maps[0])?;
        for (map, taps) in maps[1..].iter().zip(&self.taps) {
            let mixed = taps.forward(map)?;
            let op = ShiftedUpsampleSum {
                c_out: self.c_out,
                height,
                width,
            };
            out = (out + mixed.contiguous()?.apply_op1_no_bwd(&op)?)?;
        }
        Ok(out)
    }
}
