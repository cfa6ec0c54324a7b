//! `rankseg prepare lits|kits`: the experiment's preparation of the CT challenges. Every
//! axial slice that shows tumor (mask value 2) is resized to 512x512 (bilinear CT, nearest
//! mask, as OpenCV does) and saved as `<data_dir>/<name>/train/<case>_<slice>.npz` with
//! `ct` (float64, Hounsfield units) and `mask` (int8). Volumes are read in float32 (see
//! `read_volume`), one case per rayon thread at a time.
//!
//! LiTS: `<data_dir>/lits/volume-<case>.nii[.gz]` with `segmentation-<case>.nii[.gz]`,
//! slices along the last axis. KiTS19: `<data_dir>/kits/case_<case>/imaging.nii.gz` with
//! `segmentation.nii.gz`, slices along the first axis. Cases without a segmentation (the
//! challenges' test cases) are skipped.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ndarray::{Array3, ArrayView2, Axis, Ix3};
use nifti::{InMemNiftiVolume, IntoNdArray, NiftiObject, NiftiVolume, ReaderOptions};
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
        let Some((id, volume, segmentation)) = case_files(challenge, &path)? else {
            continue;
        };
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
    Ok(cases)
}

/// The case id, volume and segmentation an entry of the challenge folder stands for, or
/// `None` for an entry that is not a case.
fn case_files(challenge: Challenge, path: &Path) -> Result<Option<(String, PathBuf, PathBuf)>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (id, volume, segmentation) = match challenge {
        Challenge::Lits => {
            let Some(id) = name
                .strip_prefix("volume-")
                .and_then(|rest| rest.strip_suffix(".nii").or_else(|| rest.strip_suffix(".nii.gz")))
            else {
                return Ok(None);
            };
            let segmentation = path.with_file_name(name.replacen("volume", "segmentation", 1));
            (id.to_string(), path.to_path_buf(), segmentation)
        }
        Challenge::Kits if path.is_dir() && name.starts_with("case_") => {
            // The experiment takes the last five characters of the folder name (characters,
            // not bytes: a name may hold non-ASCII ones).
            let skip = name.chars().count().saturating_sub(5);
            let id: String = name.chars().skip(skip).collect();
            (id, path.join("imaging.nii.gz"), path.join("segmentation.nii.gz"))
        }
        Challenge::Kits => return Ok(None),
    };
    // The datasets read the case back as a number from `<case>_<slice>.npz`.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        let expected = match challenge {
            Challenge::Lits => "volume-<number>.nii[.gz], as volume-12.nii",
            Challenge::Kits => "case_<5 digits>, as case_00012",
        };
        bail!(
            "{}: the case id {id:?} is not a number; rename it to {expected}",
            path.display()
        );
    }
    Ok(Some((id, volume, segmentation)))
}

/// Reads a NIfTI volume's voxels as float32, scaled by its `scl_slope`/`scl_inter`. CT
/// voxels are integers (Hounsfield units) well inside float32's exact range, so this halves
/// the memory of float64 without changing a value.
pub fn read_volume(path: &Path) -> Result<Array3<f32>> {
    let object = ReaderOptions::new()
        .read_file(path)
        .with_context(|| format!("cannot read the NIfTI file {}", path.display()))?;
    let volume = object.into_volume();
    check_voxel_bytes(&volume).with_context(|| format!("{}: corrupt NIfTI file", path.display()))?;
    let voxels = volume
        .into_ndarray::<f32>()
        .with_context(|| format!("cannot read the voxels of {}", path.display()))?;
    let shape = voxels.shape().to_vec();
    voxels
        .into_dimensionality::<Ix3>()
        .map_err(|_| anyhow!("{}: expected a 3-D volume, got shape {shape:?}", path.display()))
}

/// The nifti crate panics when the voxel bytes do not fill the header's dimensions; check
/// that first.
fn check_voxel_bytes(volume: &InMemNiftiVolume) -> Result<()> {
    let dims: Vec<u16> = volume.dim().to_vec();
    let expected = dims
        .iter()
        .try_fold(volume.data_type().size_of(), |n, &d| n.checked_mul(d as usize))
        .with_context(|| format!("the dimensions {dims:?} overflow"))?;
    let found = volume.raw_data().len();
    if found != expected {
        bail!(
            "the header's dimensions {dims:?} of {:?} need {expected} bytes of voxels, the file holds {found}",
            volume.data_type()
        );
    }
    Ok(())
}

/// A segmentation as nibabel's `get_fdata().astype('int8')` gives it: truncation toward
/// zero, wrapping.
fn read_mask(path: &Path) -> Result<Array3<i8>> {
    Ok(read_volume(path)?.mapv(|v| v as i64 as i8))
}

/// One 2-D slice in float64 for the resize: the experiment resizes float64 slices, and
/// float32 voxels widen to float64 exactly.
fn plane_f64(slice: ArrayView2<f32>) -> Plane<f64> {
    let (height, width) = slice.dim();
    Plane {
        data: slice.iter().map(|&v| f64::from(v)).collect(),
        height,
        width,
        channels: 1,
    }
}

fn plane<T: Copy>(slice: ArrayView2<T>) -> Plane<T> {
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
    // One case per rayon thread at a time (the work inside a case is sequential, so no
    // thread steals a second case while it waits): memory stays at one case's volumes per
    // thread, however many cases there are.
    let written: Vec<usize> = cases
        .par_iter()
        .map(|case| prepare_case(challenge, case, &out))
        .collect::<Result<_>>()?;
    Ok(written.iter().sum())
}

/// Writes one case's tumor slices; returns how many.
fn prepare_case(challenge: Challenge, case: &Case, out: &Path) -> Result<usize> {
    // The mask first: it shrinks to one byte per voxel before the CT volume is read.
    let mask = read_mask(&case.segmentation)?;
    let volume = read_volume(&case.volume)?;
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
        let ct = resize::linear(&plane_f64(ct), SLICE_SIZE, SLICE_SIZE);
        let seg = resize::nearest(&plane(seg), SLICE_SIZE, SLICE_SIZE);
        write_slice(&out.join(format!("{}_{i}.npz", case.id)), &ct.data, &seg.data)?;
        count += 1;
    }
    eprintln!("{}: {count} tumor slices", case.volume.display());
    Ok(count)
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
