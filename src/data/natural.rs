//! RGB datasets: PASCAL VOC 2012 val, Cityscapes val, ADE20K validation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::cityscapes;
use super::transform::{normalise, Plane, MEAN};
use super::{files_ending, id_of, label_path, read_label, read_rgb, Dataset, Entry, Sample};
use crate::config::data::{DataConfig, DatasetKind};

pub struct ImageFolder {
    config: DataConfig,
    crop: [usize; 2],
    entries: Vec<Entry>,
}

impl ImageFolder {
    pub fn open(config: &DataConfig, data_dir: &Path) -> Result<Self> {
        let images = match config.dataset {
            DatasetKind::PascalVoc => voc_images(data_dir)?,
            DatasetKind::Cityscapes => {
                let mut files = Vec::new();
                let root = data_dir.join("cityscapes/leftImg8bit/val");
                for city in sorted_dirs(&root)? {
                    files.extend(files_ending(&city, ".png")?);
                }
                files.into_iter().map(|f| (f, None)).collect()
            }
            _ => files_ending(
                &data_dir.join("ade/ADEChallengeData2016/images/validation"),
                ".jpg",
            )?
            .into_iter()
            .map(|f| (f, None))
            .collect(),
        };
        let entries = images
            .into_iter()
            .map(|(image, id)| Entry {
                label: label_file(config, &image),
                id: id.unwrap_or_else(|| id_of(&image, config.image_suffix.as_deref())),
                input: image,
                case: None,
            })
            .collect();
        Ok(ImageFolder {
            config: config.clone(),
            crop: config.crop(),
            entries,
        })
    }

    /// The label as the experiment reads it, with `reduce_zero_label` applied: 0 becomes
    /// ignored and every other class moves down by one (ADE20K). Train time reads it too.
    pub(super) fn label(config: &DataConfig, path: &Path) -> Result<(Vec<i64>, usize, usize)> {
        let (mut values, height, width) = if path.exists() {
            read_label(path)?
        } else if let Some(ids) = cityscapes::label_ids_file(path) {
            let (values, h, w) = read_label(&ids)?;
            let ignore = config.ignore_index;
            (
                values
                    .into_iter()
                    .map(|id| cityscapes::train_id(id, ignore))
                    .collect(),
                h,
                w,
            )
        } else {
            bail!(
                "label file {} not found (see DATA.md for the expected layout)",
                path.display()
            );
        };
        if config.reduce_zero_label {
            let ignore = config.ignore_index;
            for v in &mut values {
                *v = if *v == 0 || *v == ignore { ignore } else { *v - 1 };
            }
        }
        Ok((values, height, width))
    }
}

impl ImageFolder {
    /// The RGB image as float32 (H, W, 3) and its label (H, W), as read before any
    /// transform (eval or train), checked to be the same size.
    pub(super) fn planes(config: &DataConfig, entry: &Entry) -> Result<(Plane<f32>, Plane<i64>)> {
        let rgb = read_rgb(&entry.input)?;
        let (label, height, width) = Self::label(config, &entry.label)?;
        if (height, width) != (rgb.height, rgb.width) {
            bail!(
                "{} is {}x{} but its label {} is {height}x{width}",
                entry.input.display(),
                rgb.height,
                rgb.width,
                entry.label.display()
            );
        }
        let image = Plane {
            data: rgb.pixels.iter().map(|&v| f32::from(v)).collect(),
            height,
            width,
            channels: 3,
        };
        let label = Plane {
            data: label,
            height,
            width,
            channels: 1,
        };
        Ok((image, label))
    }
}

impl Dataset for ImageFolder {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn label_file(&self, entry: &Entry) -> PathBuf {
        match cityscapes::label_ids_file(&entry.label) {
            Some(ids) if !entry.label.exists() => ids,
            _ => entry.label.clone(),
        }
    }

    fn load(&self, entry: &Entry) -> Result<Sample> {
        let (image, label) = ImageFolder::planes(&self.config, entry)?;
        let [crop_h, crop_w] = self.crop;
        let image = image.pad_centred(crop_h, crop_w, &MEAN);
        let label = label.pad_centred(crop_h, crop_w, &[self.config.ignore_index]);
        Ok(Sample {
            input: image.to_chw(normalise),
            label: label.data,
            height: image.height,
            width: image.width,
        })
    }
}

/// VOC: the ids of ImageSets/Segmentation/val.txt, in its order.
fn voc_images(data_dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    let root = data_dir.join("VOCdevkit/VOC2012");
    let list = root.join("ImageSets/Segmentation/val.txt");
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("cannot read the VOC image list {} (see DATA.md)", list.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|id| {
            (
                root.join("JPEGImages").join(format!("{id}.jpg")),
                Some(id.to_string()),
            )
        })
        .collect())
}

/// VOC labels live in SegmentationClassAug; the official SegmentationClass serves when the
/// augmented set is not there.
fn label_file(config: &DataConfig, image: &Path) -> PathBuf {
    let label = label_path(config, image);
    if config.dataset == DatasetKind::PascalVoc && !label.exists() {
        let official = label
            .to_string_lossy()
            .replace("/SegmentationClassAug/", "/SegmentationClass/");
        if Path::new(&official).exists() {
            return PathBuf::from(official);
        }
    }
    label
}

fn sorted_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| {
            format!(
                "cannot list {} (see DATA.md for the expected layout)",
                root.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}
