//! 3x3 stride-1 convolutions by Winograd's F(2x2, 3x3) (Lavin & Gray 2016): each 2x2 output
//! tile from a 4x4 input tile with 16 multiplications per channel pair instead of 36, as 16
//! matrix products (C_out x C_in) x (C_in x tiles). The transforms only add and halve, so the
//! results stay within float rounding of the direct convolution (tests compare them); the 3x3
//! layers of UPerNet, UNet, DeepLabV3+ and the ResNets take 2.25x fewer multiplications.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::ops::Activation;
use crate::simd::vectorized;

/// At most this many tiles are transformed at once (bounds the 16 C_in x tiles buffer).
const TILES_PER_BLOCK: usize = 256;

/// A 3x3 convolution with padding 1, its weight transformed for F(2x2, 3x3).
#[derive(Clone, Debug)]
pub struct Winograd {
    /// U = G g G^T: 16 matrices (C_out x C_in), row-major, one per transformed position.
    transformed: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
}

impl Winograd {
    /// From a (C_out, C_in, 3, 3) row-major weight and C_out biases.
    pub fn new(weight: &[f32], bias: Vec<f32>, c_in: usize) -> Self {
        let c_out = bias.len();
        let mut transformed = vec![0f32; 16 * c_out * c_in];
        for o in 0..c_out {
            for c in 0..c_in {
                let g = &weight[(o * c_in + c) * 9..][..9];
                // G g (4x3), then (G g) G^T (4x4), G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
                let mut gg = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                    gg[0][j] = a;
                    gg[1][j] = 0.5 * (a + b + d);
                    gg[2][j] = 0.5 * (a - b + d);
                    gg[3][j] = d;
                }
                for (i, row) in gg.iter().enumerate() {
                    let (a, b, d) = (row[0], row[1], row[2]);
                    let u = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (j, &v) in u.iter().enumerate() {
                        transformed[((i * 4 + j) * c_out + o) * c_in + c] = v;
                    }
                }
            }
        }
        Winograd {
            transformed,
            bias,
            c_in,
        }
    }

    /// The convolution followed by `activation`, as a candle op.
    pub fn with(&self, activation: Activation) -> WinogradRun<'_> {
        WinogradRun {
            conv: self,
            activation,
        }
    }
}

pub struct WinogradRun<'a> {
    conv: &'a Winograd,
    activation: Activation,
}

/// B^T d B for one 4x4 input tile, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
#[inline(always)]
fn input_transform(d: &[[f32; 4]; 4]) -> [[f32; 4]; 4] {
    let mut t = [[0f32; 4]; 4];
    for j in 0..4 {
        t[0][j] = d[0][j] - d[2][j];
        t[1][j] = d[1][j] + d[2][j];
        t[2][j] = d[2][j] - d[1][j];
        t[3][j] = d[1][j] - d[3][j];
    }
    let mut v = [[0f32; 4]; 4];
    for i in 0..4 {
        v[i][0] = t[i][0] - t[i][2];
        v[i][1] = t[i][1] + t[i][2];
        v[i][2] = t[i][2] - t[i][1];
        v[i][3] = t[i][1] - t[i][3];
    }
    v
}

/// A^T m A for one tile, A^T = [1 1 1 0; 0 1 -1 -1].
#[inline(always)]
fn output_transform(m: &[[f32; 4]; 4]) -> [[f32; 2]; 2] {
    let mut t = [[0f32; 4]; 2];
    for j in 0..4 {
        t[0][j] = m[0][j] + m[1][j] + m[2][j];
        t[1][j] = m[1][j] - m[2][j] - m[3][j];
    }
    [
        [t[0][0] + t[0][1] + t[0][2], t[0][1] - t[0][2] - t[0][3]],
        [t[1][0] + t[1][1] + t[1][2], t[1][1] - t[1][2] - t[1][3]],
    ]
}

impl CustomOp1 for WinogradRun<'_> {
    fn name(&self) -> &'static str {
        "winograd-conv3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c_in, h, w) = layout.shape().dims4()?;
        let conv = self.conv;
        if c_in != conv.c_in {
            candle_core::bail!("3x3 convolution of {} input channels got {c_in}", conv.c_in);
        }
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(data), Some((start, end))) => &data[start..end],
            _ => candle_core::bail!("3x3 convolution needs a contiguous f32 input"),
        };
        let c_out = conv.bias.len();
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tile_rows = (TILES_PER_BLOCK / tw).max(1);
        let mut out = vec![0f32; b * c_out * h * w];
        let mut v = Vec::new();
        let mut m = Vec::new();
        let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
        for image in 0..b {
            let src = &input[image * c_in * h * w..(image + 1) * c_in * h * w];
            let dst = &mut out[image * c_out * h * w..(image + 1) * c_out * h * w];
            for row0 in (0..th).step_by(tile_rows) {
                let rows = tile_rows.min(th - row0);
                let tiles = rows * tw;
                v.resize(16 * c_in * tiles, 0f32);
                m.resize(16 * c_out * tiles, 0f32);
                // V[xi][c][t]: the transformed input tiles, in parallel over channels.
                let bases: Vec<usize> = v
                    .chunks_mut(c_in * tiles)
                    .map(|p| p.as_mut_ptr() as usize)
                    .collect();
                // The tiles' input rows 2 row0 - 1 .. 2 (row0 + rows) + 1, zero-padded by one
                // pixel all round, so that tiles read without bounds checks.
                let (ph, pw) = (2 * rows + 2, 2 * tw + 2);
                (0..c_in).into_par_iter().for_each_init(
                    || vec![0f32; ph * pw],
                    |padded, c| {
                        let plane = &src[c * h * w..(c + 1) * h * w];
                        padded.fill(0.0);
                        for py in 0..ph {
                            let y = (2 * row0 + py).wrapping_sub(1);
                            if y < h {
                                padded[py * pw + 1..py * pw + 1 + w]
                                    .copy_from_slice(&plane[y * w..(y + 1) * w]);
                            }
                        }
                        for t in 0..tiles {
                            let (ti, tj) = (t / tw, t % tw);
                            let mut d = [[0f32; 4]; 4];
                            for (r, dr) in d.iter_mut().enumerate() {
                                dr.copy_from_slice(&padded[(2 * ti + r) * pw + 2 * tj..][..4]);
                            }
                            let tv = input_transform(&d);
                            for (xi, &base) in bases.iter().enumerate() {
                                // Safety: each (xi, c, t) element is written by this task only,
                                // inside the xi-th block of v (c_in x tiles).
                                unsafe { *(base as *mut f32).add(c * tiles + t) = tv[xi / 4][xi % 4] };
                            }
                        }
                    },
                );
                for xi in 0..16 {
                    // Safety: M[xi] (c_out x tiles) = U[xi] (c_out x c_in) V[xi] (c_in x tiles),
                    // all row-major blocks of the buffers above.
                    unsafe {
                        gemm::gemm(
                            c_out,
                            tiles,
                            c_in,
                            m.as_mut_ptr().add(xi * c_out * tiles),
                            1,
                            tiles as isize,
                            false,
                            conv.transformed.as_ptr().add(xi * c_out * c_in),
                            1,
                            c_in as isize,
                            v.as_ptr().add(xi * c_in * tiles),
                            1,
                            tiles as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            threads,
                        );
                    }
                }
                let act = self.activation;
                let m = &m;
                dst.par_chunks_mut(h * w).enumerate().for_each(|(o, plane)| {
                    let bias = conv.bias[o];
                    vectorized(
                        #[inline(always)]
                        || {
                            for t in 0..tiles {
                                let (ti, tj) = (row0 + t / tw, t % tw);
                                let mut mt = [[0f32; 4]; 4];
                                for (xi, cell) in mt.iter_mut().flatten().enumerate() {
                                    *cell = m[(xi * c_out + o) * tiles + t];
                                }
                                let y2 = output_transform(&mt);
                                for (r, row) in y2.iter().enumerate() {
                                    let y = 2 * ti + r;
                                    if y >= h {
                                        continue;
                                    }
                                    for (s, &value) in row.iter().enumerate() {
                                        let x = 2 * tj + s;
                                        if x < w {
                                            plane[y * w + x] = act.scalar(value + bias);
                                        }
                                    }
                                }
                            }
                        },
                    )
                });
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, h, w))))
    }
}
