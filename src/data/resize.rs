//! `cv2.resize` for the two modes the experiment uses: INTER_LINEAR (multi-scale inference,
//! CT slices, train-time images) and INTER_NEAREST (masks, train-time labels), on (H, W, C)
//! planes, given the output size or (train-time `RandScale`) the factors `fx`, `fy`.

use super::transform::Plane;

/// One axis of INTER_LINEAR as OpenCV 5 computes it: per output index, the left source index
/// and the weight of its right neighbour. The source coordinate `(d + 0.5) / inv_scale - 0.5`
/// and its fraction are taken in double (OpenCV 4 rounded the coordinate to float first);
/// left of the image the first pixel is taken (weight 0), right of it the last pair with
/// weight 1. `inv_scale` is OpenCV's `inv_scale_x`: `dst / src` for a given size, the
/// factor itself for `fx`.
fn linear_taps<T: Interpolate>(src: usize, dst: usize, inv_scale: f64) -> Vec<(usize, T)> {
    let scale = 1.0 / inv_scale;
    (0..dst)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let s = f.floor();
            if s < 0.0 || src == 1 {
                (0, T::weight(0.0))
            } else if s as usize >= src - 1 {
                (src - 2, T::weight(1.0))
            } else {
                (s as usize, T::weight(f - s))
            }
        })
        .collect()
}

/// `cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)`.
pub fn linear<T: Interpolate>(plane: &Plane<T>, height: usize, width: usize) -> Plane<T> {
    let (fy, fx) = (
        height as f64 / plane.height as f64,
        width as f64 / plane.width as f64,
    );
    linear_with(plane, height, width, fy, fx)
}

/// `cv2.resize(plane, None, fx=fx, fy=fy, interpolation=cv2.INTER_LINEAR)`: the size of
/// [`scaled_size`], and taps from the factors themselves (not from the rounded size).
pub fn linear_scaled<T: Interpolate>(plane: &Plane<T>, fy: f64, fx: f64) -> Plane<T> {
    let (height, width) = scaled_size(plane.height, plane.width, fy, fx);
    linear_with(plane, height, width, fy, fx)
}

/// The output size `cv2.resize` gives for factors: `cvRound(size * f)`, ties to even.
pub fn scaled_size(height: usize, width: usize, fy: f64, fx: f64) -> (usize, usize) {
    let round = |n: usize, f: f64| (n as f64 * f).round_ties_even().max(0.0) as usize;
    (round(height, fy), round(width, fx))
}

fn linear_with<T: Interpolate>(plane: &Plane<T>, height: usize, width: usize, fy: f64, fx: f64) -> Plane<T> {
    // cv2.resize copies when the size does not change, whatever the factors.
    if (height, width) == (plane.height, plane.width) {
        return plane.clone();
    }
    let c = plane.channels;
    let xs = linear_taps::<T>(plane.width, width, fx);
    let ys = linear_taps::<T>(plane.height, height, fy);
    let at = |y: usize, x: usize, ch: usize| -> T { plane.data[(y * plane.width + x) * c + ch] };
    // Horizontal pass per source row, then vertical, each `a + (b - a) * w`.
    let horizontal = |y: usize| -> Vec<T> {
        let mut row = Vec::with_capacity(width * c);
        for &(x, w) in &xs {
            let x1 = (x + 1).min(plane.width - 1);
            for ch in 0..c {
                row.push(T::lerp(at(y, x, ch), at(y, x1, ch), w));
            }
        }
        row
    };
    let mut data = Vec::with_capacity(height * width * c);
    for &(y, w) in &ys {
        let top = horizontal(y);
        let bottom = horizontal((y + 1).min(plane.height - 1));
        data.extend(top.iter().zip(&bottom).map(|(&t, &b)| T::lerp(t, b, w)));
    }
    Plane {
        data,
        height,
        width,
        channels: c,
    }
}

/// `cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST)`: source index
/// `floor(d * (1 / (dst / src)))`, OpenCV's `ifx` from its `inv_scale_x` (not `src / dst`,
/// which rounds differently: 6 -> 34 columns takes source 2 at d = 17, not 3).
pub fn nearest<T: Copy>(plane: &Plane<T>, height: usize, width: usize) -> Plane<T> {
    let (fy, fx) = (
        height as f64 / plane.height as f64,
        width as f64 / plane.width as f64,
    );
    nearest_with(plane, height, width, 1.0 / fy, 1.0 / fx)
}

/// `cv2.resize(plane, None, fx=fx, fy=fy, interpolation=cv2.INTER_NEAREST)`: source index
/// `floor(d * (1 / f))`, OpenCV's `ifx`.
pub fn nearest_scaled<T: Copy>(plane: &Plane<T>, fy: f64, fx: f64) -> Plane<T> {
    let (height, width) = scaled_size(plane.height, plane.width, fy, fx);
    nearest_with(plane, height, width, 1.0 / fy, 1.0 / fx)
}

/// Nearest neighbour with `step_y`, `step_x` source pixels per output pixel.
fn nearest_with<T: Copy>(
    plane: &Plane<T>,
    height: usize,
    width: usize,
    step_y: f64,
    step_x: f64,
) -> Plane<T> {
    // cv2.resize copies when the size does not change, whatever the factors.
    if (height, width) == (plane.height, plane.width) {
        return plane.clone();
    }
    let index =
        |d: usize, step: f64, src: usize| -> usize { (((d as f64) * step).floor() as usize).min(src - 1) };
    let c = plane.channels;
    let mut data = Vec::with_capacity(height * width * c);
    for y in 0..height {
        let sy = index(y, step_y, plane.height);
        for x in 0..width {
            let sx = index(x, step_x, plane.width);
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

/// The element types INTER_LINEAR runs on, with their weights' type and blend.
pub trait Interpolate: Copy {
    fn weight(fraction: f64) -> Self;
    /// `a + (b - a) * w` with the multiply-add fused, as OpenCV 5's float32 kernels do it.
    fn lerp(a: Self, b: Self, w: Self) -> Self;
}

impl Interpolate for f32 {
    fn weight(fraction: f64) -> Self {
        fraction as f32
    }
    fn lerp(a: Self, b: Self, w: Self) -> Self {
        (b - a).mul_add(w, a)
    }
}

impl Interpolate for f64 {
    fn weight(fraction: f64) -> Self {
        fraction
    }
    fn lerp(a: Self, b: Self, w: Self) -> Self {
        (b - a).mul_add(w, a)
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
        // cv2.resize(np.arange(6)[None], (34, 1), interpolation=cv2.INTER_NEAREST)[0, 15:20]
        let six = Plane {
            data: (0..6).collect::<Vec<i64>>(),
            height: 1,
            width: 6,
            channels: 1,
        };
        assert_eq!(nearest(&six, 1, 34).data[15..20], [2, 2, 2, 3, 3]);
    }

    #[test]
    fn factors_that_keep_the_size_copy() {
        // 3 * 1.1 rounds to 3: cv2 copies rather than resampling with 1 / 1.1.
        let plane = Plane {
            data: vec![1.0f32, 2.0, 3.0],
            height: 1,
            width: 3,
            channels: 1,
        };
        assert_eq!(linear_scaled(&plane, 1.1, 1.1).data, plane.data);
        assert_eq!(nearest_scaled(&plane, 1.1, 1.1).data, plane.data);
        assert_eq!(scaled_size(29, 37, 1.955, 1.955), (57, 72));
    }
}
