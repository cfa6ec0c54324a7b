//! A seeded synthetic segmentation dataset in the PASCAL VOC layout (what `demo` trains
//! on; it ships in no file): grey noisy backgrounds with discs and squares whose colours
//! overlap the background's, textured by pixel noise, so that a small model trained for a
//! few hundred steps is right in the middle of objects and unsure at their edges.

use std::path::Path;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::decode::write_palette_png;
use crate::atomic::{write_atomic, write_string_atomic};

/// Background, disc, square.
pub const CLASSES: usize = 3;

pub struct SyntheticSpec {
    pub train: usize,
    pub val: usize,
    /// Square image side.
    pub size: usize,
    pub seed: u64,
}

/// Mean colour of each class; the discs and squares are close to each other and to the
/// background in two of three channels.
const MEANS: [[f64; 3]; CLASSES] = [
    [110.0, 120.0, 130.0],
    [170.0, 120.0, 100.0],
    [110.0, 180.0, 120.0],
];
const NOISE: f64 = 60.0;

fn draw(size: usize, rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let mut label = vec![0u8; size * size];
    let objects = rng.random_range(1..=3);
    for _ in 0..objects {
        let class = rng.random_range(1..CLASSES) as u8;
        let r = rng.random_range(size as f64 * 0.04..size as f64 * 0.16);
        let (cy, cx) = (
            rng.random_range(0.0..size as f64),
            rng.random_range(0.0..size as f64),
        );
        for y in 0..size {
            for x in 0..size {
                let (dy, dx) = (y as f64 + 0.5 - cy, x as f64 + 0.5 - cx);
                let inside = match class {
                    1 => dy * dy + dx * dx <= r * r,
                    _ => dy.abs() <= r && dx.abs() <= r,
                };
                if inside {
                    label[y * size + x] = class;
                }
            }
        }
    }
    let noise = Normal::new(0.0, NOISE).expect("a positive deviation");
    let mut rgb = vec![0u8; size * size * 3];
    for (pixel, &class) in rgb.chunks_mut(3).zip(&label) {
        for (c, value) in pixel.iter_mut().enumerate() {
            *value = (MEANS[class as usize][c] + noise.sample(rng)).clamp(0.0, 255.0) as u8;
        }
    }
    (rgb, label)
}

fn write_rgb_png(path: &Path, rgb: &[u8], size: usize) -> Result<()> {
    write_atomic(path, |out| {
        let mut encoder = png::Encoder::new(out, size as u32, size as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(rgb)?;
        Ok(())
    })
}

/// Writes the dataset under `data_dir/VOCdevkit/VOC2012`: PNG images under the `.jpg` names
/// the VOC lists use (read by content, as OpenCV does), palette label PNGs, `train_aug.txt`
/// and `val.txt`.
pub fn write_voc(data_dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    let root = data_dir.join("VOCdevkit/VOC2012");
    let lists = root.join("ImageSets/Segmentation");
    std::fs::create_dir_all(&lists).with_context(|| format!("cannot create {}", lists.display()))?;
    let palette = super::palette(crate::config::data::DatasetKind::PascalVoc);
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let (mut train, mut val) = (String::new(), String::new());
    for i in 0..spec.train + spec.val {
        let id = format!("synthetic_{i:04}");
        let (rgb, label) = draw(spec.size, &mut rng);
        write_rgb_png(&root.join(format!("JPEGImages/{id}.jpg")), &rgb, spec.size)?;
        write_palette_png(
            &root.join(format!("SegmentationClassAug/{id}.png")),
            &label,
            spec.size,
            spec.size,
            &palette,
        )?;
        if i < spec.train {
            train.push_str(&format!("/JPEGImages/{id}.jpg /SegmentationClassAug/{id}.png\n"));
        } else {
            val.push_str(&format!("{id}\n"));
        }
    }
    write_string_atomic(&lists.join("train_aug.txt"), &train)?;
    write_string_atomic(&lists.join("val.txt"), &val)
}
