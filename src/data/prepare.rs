//! `rankseg prepare lits|kits`: the experiment's preparation of the CT challenges. Every
//! axial slice that shows tumor (mask value 2) is resized to 512x512 (bilinear CT, nearest
//! mask, as OpenCV does) and saved as `<data_dir>/<name>/train/<case>_<slice>.npz` with
//! `ct` (float64, Hounsfield units) and `mask` (int8).
//!
//! LiTS: `<data_dir>/lits/volume-<case>.nii[.gz]` with `segmentation-<case>.nii[.gz]`,
//! slices along the last axis. KiTS19: `<data_dir>/kits/case_<case>/imaging.nii.gz` with
//! `segmentation.nii.gz`, slices along the first axis. Cases without a segmentation (the
//! challenges' test cases) are skipped.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, Axis};
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use npyz::WriterBuilder;
use rayon::prelude::*;

use super::resize;
use super::transform::Plane;
use crate::atomic::write_atomic;

const SLICE_SIZE: usize = 512;
const TUMOR: i8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Challenge {
    Lits,
    Kits,
}

impl Challenge {
    fn name(self) -> &'static str {
        match self {
            Challenge::Lits => "lits",
            Challenge::Kits => "kits",
        }
    }
}

/// One case: its id (as the slice files name it), its CT and its segmentation.
struct Case {
    id: String,
    volume: PathBuf,
    segmentation: PathBuf,
}

fn find_cases(challenge: Challenge, root: &Path) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "cannot list {} (see DATA.md for the expected layout)",
            root.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let case = match challenge {
            Challenge::Lits => name
                .strip_prefix("volume-")
                .and_then(|rest| rest.strip_suffix(".nii").or_else(|| rest.strip_suffix(".nii.gz")))
                .map(|id| {
                    let segmentation = path.with_file_name(name.replacen("volume", "segmentation", 1));
                    (id.to_string(), path.clone(), segmentation)
                }),
            Challenge::Kits if path.is_dir() => name.strip_prefix("case_").map(|_| {
                // The experiment takes the last five characters of the folder name.
                let id = name[name.len().saturating_sub(5)..].to_string();
                (id, path.join("imaging.nii.gz"), path.join("segmentation.nii.gz"))
            }),
            Challenge::Kits => None,
        };
        if let Some((id, volume, segmentation)) = case {
            if !volume.is_file() {
                continue;
            }
            if !segmentation.is_file() {
                eprintln!("{}: no segmentation (a test case), skipped", volume.display());
                continue;
            }
            cases.push(Case {
                id,
                volume,
                segmentation,
            });
        }
    }
    Ok(cases)
}

fn read_volume(path: &Path) -> Result<ArrayD<f64>> {
    let object = ReaderOptions::new()
        .read_file(path)
        .with_context(|| format!("cannot read the NIfTI file {}", path.display()))?;
    let volume = object
        .into_volume()
        .into_ndarray::<f64>()
        .with_context(|| format!("cannot read the voxels of {}", path.display()))?;
    if volume.ndim() != 3 {
        bail!(
            "{}: expected a 3-D volume, got shape {:?}",
            path.display(),
            volume.shape()
        );
    }
    Ok(volume)
}

fn plane<T: Copy>(slice: ndarray::ArrayView2<T>) -> Plane<T> {
    let (height, width) = slice.dim();
    Plane {
        data: slice.iter().copied().collect(),
        height,
        width,
        channels: 1,
    }
}

/// Writes the tumor slices of every case; returns how many slices were written.
pub fn prepare(challenge: Challenge, data_dir: &Path) -> Result<usize> {
    let root = data_dir.join(challenge.name());
    let cases = find_cases(challenge, &root)?;
    if cases.is_empty() {
        bail!(
            "no {} cases with segmentations under {} (see DATA.md)",
            challenge.name(),
            root.display()
        );
    }
    let out = root.join("train");
    let written: Vec<usize> = cases
        .par_iter()
        .map(|case| {
            let volume = read_volume(&case.volume)?;
            // nibabel's get_fdata() then .astype('int8'): truncation toward zero, wrapping.
            let mask = read_volume(&case.segmentation)?.mapv(|v| v as i64 as i8);
            if volume.shape() != mask.shape() {
                bail!(
                    "{} has shape {:?} but its segmentation {} has {:?}",
                    case.volume.display(),
                    volume.shape(),
                    case.segmentation.display(),
                    mask.shape()
                );
            }
            let axis = Axis(if challenge == Challenge::Lits { 2 } else { 0 });
            let mut count = 0;
            for (i, (ct, seg)) in volume.axis_iter(axis).zip(mask.axis_iter(axis)).enumerate() {
                if !seg.iter().any(|&v| v >= TUMOR) {
                    continue;
                }
                let ct = ct.into_dimensionality::<ndarray::Ix2>()?;
                let seg = seg.into_dimensionality::<ndarray::Ix2>()?;
                let ct = resize::linear(&plane(ct), SLICE_SIZE, SLICE_SIZE);
                let seg = resize::nearest(&plane(seg), SLICE_SIZE, SLICE_SIZE);
                write_slice(&out.join(format!("{}_{i}.npz", case.id)), &ct.data, &seg.data)?;
                count += 1;
            }
            eprintln!("{}: {count} tumor slices", case.volume.display());
            Ok(count)
        })
        .collect::<Result<_>>()?;
    Ok(written.iter().sum())
}

fn write_slice(path: &Path, ct: &[f64], mask: &[i8]) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    {
        let mut npz = npyz::npz::NpzWriter::new(&mut bytes);
        write_array(&mut npz, "ct", ct)?;
        write_array(&mut npz, "mask", mask)?;
    }
    let bytes = bytes.into_inner();
    write_atomic(path, |out| Ok(out.write_all(&bytes)?))
}

/// One (512, 512) array of an .npz archive.
fn write_array<T, W>(npz: &mut npyz::npz::NpzWriter<W>, name: &str, values: &[T]) -> Result<()>
where
    T: npyz::AutoSerialize + Copy,
    W: std::io::Write + std::io::Seek,
{
    let shape = [SLICE_SIZE as u64, SLICE_SIZE as u64];
    let mut writer = npz
        .array::<T>(name, Default::default())?
        .default_dtype()
        .shape(&shape)
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(())
}
