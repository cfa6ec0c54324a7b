//! The experiment's test-time transforms: centred padding to the crop size, centre crop,
//! and the two input normalisations (RGB mean/std, CT window), in its float32 order.

/// The experiment's RGB mean and std (0..255 scale).
pub const MEAN: [f32; 3] = [123.68, 116.28, 103.53];
pub const STD: [f32; 3] = [58.40, 57.12, 57.38];

/// A row-major (H, W, C) plane of values.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane<T> {
    pub data: Vec<T>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl<T: Copy> Plane<T> {
    /// Pads to at least (height, width), half before and the rest after on each axis
    /// (`cv2.copyMakeBorder` with the experiment's `int(pad / 2)` split), with `fill`.
    pub fn pad_centred(&self, height: usize, width: usize, fill: &[T]) -> Plane<T> {
        let (out_h, out_w) = (self.height.max(height), self.width.max(width));
        if (out_h, out_w) == (self.height, self.width) {
            return self.clone();
        }
        let (top, left) = ((out_h - self.height) / 2, (out_w - self.width) / 2);
        let c = self.channels;
        let mut data: Vec<T> = fill.iter().copied().cycle().take(out_h * out_w * c).collect();
        for y in 0..self.height {
            let src = &self.data[y * self.width * c..(y + 1) * self.width * c];
            let start = ((y + top) * out_w + left) * c;
            data[start..start + src.len()].copy_from_slice(src);
        }
        Plane {
            data,
            height: out_h,
            width: out_w,
            channels: c,
        }
    }

    /// Pads to at least (height, width), then keeps the centred (height, width) window
    /// (the experiment's `Crop(crop_type="center")`).
    pub fn centre_crop(&self, height: usize, width: usize, fill: &[T]) -> Plane<T> {
        let padded = self.pad_centred(height, width, fill);
        let (top, left) = ((padded.height - height) / 2, (padded.width - width) / 2);
        let c = self.channels;
        let data = (top..top + height)
            .flat_map(|y| {
                let start = (y * padded.width + left) * c;
                padded.data[start..start + width * c].iter().copied()
            })
            .collect();
        Plane {
            data,
            height,
            width,
            channels: c,
        }
    }

    /// (C, H, W) order, as the model takes it.
    pub fn to_chw(&self, value: impl Fn(usize, T) -> f32) -> Vec<f32> {
        let pixels = self.height * self.width;
        let mut out = vec![0.0f32; pixels * self.channels];
        for (i, px) in self.data.chunks_exact(self.channels).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * pixels + i] = value(ch, v);
            }
        }
        out
    }
}

/// `t.sub_(mean).div_(std)` per channel, in float32.
pub fn normalise(channel: usize, value: f32) -> f32 {
    (value - MEAN[channel]) / STD[channel]
}

/// The CT window: clamp to [low, high], then `2 * (x - low) / (high - low) - 1` in float32.
pub fn window(value: f32, low: f32, high: f32) -> f32 {
    let clamped = value.max(low).min(high);
    2.0 * (clamped - low) / (high - low) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(height: usize, width: usize) -> Plane<i64> {
        Plane {
            data: (0..(height * width) as i64).collect(),
            height,
            width,
            channels: 1,
        }
    }

    #[test]
    fn padding_puts_the_odd_pixel_after() {
        let padded = plane(1, 2).pad_centred(2, 5, &[9]);
        assert_eq!(padded.data, vec![9, 0, 1, 9, 9, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn centre_crop_pads_then_crops() {
        let cropped = plane(3, 4).centre_crop(2, 6, &[-1]);
        // Width 4 -> padded to 6 (1 left, 1 right); height 3 -> rows 0..2 (offset int(1/2) = 0).
        assert_eq!(cropped.data, vec![-1, 0, 1, 2, 3, -1, -1, 4, 5, 6, 7, -1]);
    }
}
