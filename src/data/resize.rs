//! `cv2.resize` for the two modes the experiment uses: INTER_LINEAR (multi-scale inference,
//! CT slices) and INTER_NEAREST (CT masks), on (H, W, C) planes.

use super::transform::Plane;

/// One axis of INTER_LINEAR: per output index, the first source index and the two tap
/// weights (OpenCV's float coefficients: half-pixel centres, replicated borders).
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, f32, f32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let frac = f - s;
            let s = s as i64;
            if s < 0 {
                (0, 1.0, 0.0)
            } else if s as usize >= src - 1 {
                (src - 1, 1.0, 0.0)
            } else {
                (s as usize, 1.0 - frac, frac)
            }
        })
        .collect()
}

/// `cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)`.
pub fn linear<T>(plane: &Plane<T>, height: usize, width: usize) -> Plane<T>
where
    T: Copy + Into<f64> + FromF64,
{
    let c = plane.channels;
    let xs = linear_taps(plane.width, width);
    let ys = linear_taps(plane.height, height);
    let at = |y: usize, x: usize, ch: usize| -> T { plane.data[(y * plane.width + x) * c + ch] };
    // a * w0 + b * w1 with each operation rounded to T (exact emulation for f32: the f64
    // product of two f32 values and the f64 sum of two f32 values round once).
    let blend = |a: T, w0: f32, b: T, w1: f32| -> T {
        let first = T::round(a.into() * w0 as f64);
        let second = T::round(b.into() * w1 as f64);
        T::round(first.into() + second.into())
    };
    // Horizontal pass per source row, then vertical; a zero weight reads nothing (borders).
    let horizontal = |y: usize| -> Vec<T> {
        let mut row = Vec::with_capacity(width * c);
        for &(x, a0, a1) in &xs {
            for ch in 0..c {
                let right = if a1 == 0.0 { at(y, x, ch) } else { at(y, x + 1, ch) };
                row.push(blend(at(y, x, ch), a0, right, a1));
            }
        }
        row
    };
    let mut data = Vec::with_capacity(height * width * c);
    for &(y, b0, b1) in &ys {
        let top = horizontal(y);
        let bottom = if b1 == 0.0 { top.clone() } else { horizontal(y + 1) };
        data.extend(top.iter().zip(&bottom).map(|(&t, &b)| blend(t, b0, b, b1)));
    }
    Plane {
        data,
        height,
        width,
        channels: c,
    }
}

/// `cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST)`: source index
/// `floor(d * src / dst)`.
pub fn nearest<T: Copy>(plane: &Plane<T>, height: usize, width: usize) -> Plane<T> {
    let index = |d: usize, src: usize, dst: usize| -> usize {
        (((d as f64) * (src as f64 / dst as f64)).floor() as usize).min(src - 1)
    };
    let c = plane.channels;
    let mut data = Vec::with_capacity(height * width * c);
    for y in 0..height {
        let sy = index(y, plane.height, height);
        for x in 0..width {
            let sx = index(x, plane.width, width);
            let start = (sy * plane.width + sx) * c;
            data.extend_from_slice(&plane.data[start..start + c]);
        }
    }
    Plane {
        data,
        height,
        width,
        channels: c,
    }
}

/// Rounding an f64 intermediate to the element type (f32 planes compute in f32).
pub trait FromF64: Sized {
    fn round(value: f64) -> Self;
}

impl FromF64 for f32 {
    fn round(value: f64) -> Self {
        value as f32
    }
}

impl FromF64 for f64 {
    fn round(value: f64) -> Self {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_upsampling_matches_opencv() {
        // cv2.resize(np.float32([[0, 10], [20, 30]]), (4, 4), interpolation=cv2.INTER_LINEAR)
        let plane = Plane {
            data: vec![0.0f32, 10.0, 20.0, 30.0],
            height: 2,
            width: 2,
            channels: 1,
        };
        let out = linear(&plane, 4, 4);
        let expected = [
            0.0, 2.5, 7.5, 10.0, 5.0, 7.5, 12.5, 15.0, 15.0, 17.5, 22.5, 25.0, 20.0, 22.5, 27.5, 30.0,
        ];
        assert_eq!(out.data, expected);
    }

    #[test]
    fn nearest_takes_the_floor_of_the_scaled_index() {
        let plane = Plane {
            data: vec![1, 2, 3],
            height: 1,
            width: 3,
            channels: 1,
        };
        assert_eq!(nearest(&plane, 1, 5).data, vec![1, 1, 2, 2, 3]);
        assert_eq!(nearest(&plane, 1, 2).data, vec![1, 2]);
    }
}
