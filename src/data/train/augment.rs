//! The experiment's train-time transforms (`datas/datasets/transform.py`), each with its
//! random parameters passed in: `RandScale` (cv2 linear image, nearest label),
//! `RandomHorizontalFlip`, `Crop(crop_type="rand")` with its `Pad` (image mean or CT
//! `window_low`, label ignore index), then the normalisation. [`sample`] draws the
//! parameters in the experiment's order; tests feed the experiment's own draws instead.

use crate::data::resize;
use crate::data::transform::Plane;

/// One sample's random parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draws {
    /// RandScale's factor, `scale_min + (scale_max - scale_min) * u` (fx = fy: no aspect).
    pub scale: f64,
    pub flip: bool,
    /// Crop offsets into the padded, scaled image: `randint(0, h - crop_h)`, then width.
    pub top: usize,
    pub left: usize,
}

/// Where the draws come from: the experiment's `random.random()` and `random.randint`.
pub trait Uniform {
    /// A float in [0, 1).
    fn unit(&mut self) -> f64;
    /// An integer in 0..=high (both ends, as `randint`).
    fn up_to(&mut self, high: usize) -> usize;
}

impl<R: rand::Rng> Uniform for R {
    fn unit(&mut self) -> f64 {
        self.random::<f64>()
    }

    fn up_to(&mut self, high: usize) -> usize {
        self.random_range(0..=high)
    }
}

/// What the transforms need to know of the dataset.
#[derive(Clone, Debug)]
pub struct Augment {
    pub scale_min: f64,
    pub scale_max: f64,
    /// (height, width).
    pub crop: [usize; 2],
    /// Per image channel: the RGB mean, or CT `window_low`.
    pub image_fill: Vec<f32>,
    pub label_fill: i64,
    pub normalise: Normalise,
}

#[derive(Clone, Copy, Debug)]
pub enum Normalise {
    /// `Normalize(mean, std)` of the RGB datasets.
    MeanStd,
    /// `WindowStandardize(window_low, window_high)` of the CT datasets.
    Window { low: f32, high: f32 },
}

/// Draws in the experiment's call order (scale, flip, crop row, crop column) for an image
/// of `height` x `width`; the crop range is that of the scaled and padded image, as `Crop`
/// sees it.
pub fn sample(augment: &Augment, height: usize, width: usize, u: &mut impl Uniform) -> Draws {
    let scale = augment.scale_min + (augment.scale_max - augment.scale_min) * u.unit();
    let flip = u.unit() < 0.5;
    let (h, w) = resize::scaled_size(height, width, scale, scale);
    let [crop_h, crop_w] = augment.crop;
    let top = u.up_to(h.max(crop_h) - crop_h);
    let left = u.up_to(w.max(crop_w) - crop_w);
    Draws {
        scale,
        flip,
        top,
        left,
    }
}

/// `RandScale`: cv2's INTER_LINEAR for the image, INTER_NEAREST for the label, both with
/// `fx = fy = scale` (so the output size is cv2's rounding of it).
pub fn rand_scale(image: &Plane<f32>, label: &Plane<i64>, scale: f64) -> (Plane<f32>, Plane<i64>) {
    (
        resize::linear_scaled(image, scale, scale),
        resize::nearest_scaled(label, scale, scale),
    )
}

/// `cv2.flip(x, 1)`: columns mirrored.
pub fn flip<T: Copy>(plane: &Plane<T>) -> Plane<T> {
    let c = plane.channels;
    let mut data = Vec::with_capacity(plane.data.len());
    for row in plane.data.chunks_exact(plane.width * c) {
        for px in row.chunks_exact(c).rev() {
            data.extend_from_slice(px);
        }
    }
    Plane { data, ..*plane }
}

/// The (height, width) window at (top, left); the plane must cover it.
pub fn crop<T: Copy>(plane: &Plane<T>, top: usize, left: usize, height: usize, width: usize) -> Plane<T> {
    assert!(
        top + height <= plane.height && left + width <= plane.width,
        "crop {height}x{width} at ({top}, {left}) outside a {}x{} plane",
        plane.height,
        plane.width
    );
    let c = plane.channels;
    let mut data = Vec::with_capacity(height * width * c);
    for y in top..top + height {
        let start = (y * plane.width + left) * c;
        data.extend_from_slice(&plane.data[start..start + width * c]);
    }
    Plane {
        data,
        height,
        width,
        channels: c,
    }
}

impl Augment {
    /// The whole chain with the given draws: the (C, H, W) input and the (H, W) label at the
    /// crop size. Offsets past the padded image's range are a caller's error (panics).
    pub fn apply(&self, image: &Plane<f32>, label: &Plane<i64>, draws: &Draws) -> (Vec<f32>, Vec<i64>) {
        let (mut image, mut label) = rand_scale(image, label, draws.scale);
        if draws.flip {
            image = flip(&image);
            label = flip(&label);
        }
        let [crop_h, crop_w] = self.crop;
        // Crop pads first, centred (Pad's int(pad / 2) before, the rest after).
        let image = image.pad_centred(crop_h, crop_w, &self.image_fill);
        let label = label.pad_centred(crop_h, crop_w, &[self.label_fill]);
        let image = crop(&image, draws.top, draws.left, crop_h, crop_w);
        let label = crop(&label, draws.top, draws.left, crop_h, crop_w);
        let input = match self.normalise {
            Normalise::MeanStd => image.to_chw(crate::data::transform::normalise),
            Normalise::Window { low, high } => {
                image.to_chw(|_, v| crate::data::transform::window(v, low, high))
            }
        };
        (input, label.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(height: usize, width: usize, channels: usize) -> Plane<i64> {
        Plane {
            data: (0..(height * width * channels) as i64).collect(),
            height,
            width,
            channels,
        }
    }

    #[test]
    fn flip_mirrors_pixels_not_channels() {
        assert_eq!(flip(&plane(1, 3, 2)).data, vec![4, 5, 2, 3, 0, 1]);
    }

    #[test]
    fn crop_takes_the_window() {
        assert_eq!(crop(&plane(3, 3, 1), 1, 1, 2, 2).data, vec![4, 5, 7, 8]);
    }

    /// Answers from fixed lists, as the experiment's recorded draws.
    struct Fixed(Vec<f64>, Vec<usize>, Vec<usize>);

    impl Uniform for Fixed {
        fn unit(&mut self) -> f64 {
            self.0.remove(0)
        }
        fn up_to(&mut self, high: usize) -> usize {
            self.2.push(high);
            self.1.remove(0)
        }
    }

    #[test]
    fn sample_draws_in_the_experiments_order() {
        let augment = Augment {
            scale_min: 0.5,
            scale_max: 2.0,
            crop: [24, 32],
            image_fill: vec![0.0],
            label_fill: 255,
            normalise: Normalise::MeanStd,
        };
        let mut u = Fixed(vec![0.97, 0.9], vec![21, 1], Vec::new());
        let draws = sample(&augment, 29, 37, &mut u);
        assert_eq!(draws.scale, 0.5 + 1.5 * 0.97);
        assert!(!draws.flip);
        assert_eq!((draws.top, draws.left), (21, 1));
        // 29 * 1.955 = 56.695 -> 57 rows, 37 * 1.955 = 72.335 -> 72 columns.
        assert_eq!(u.2, vec![57 - 24, 72 - 32]);
    }
}
