//! .npy in and out, with the dtype, order and shape checks that turn a wrong file into a
//! message naming it.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};

use crate::atomic::write_atomic;

/// A probability array as read: float32 or float64, C order.
pub enum ProbArray {
    F32(Vec<f32>, Vec<usize>),
    F64(Vec<f64>, Vec<usize>),
}

impl ProbArray {
    pub fn shape(&self) -> &[usize] {
        match self {
            ProbArray::F32(_, s) | ProbArray::F64(_, s) => s,
        }
    }
}

/// An integer (or bool) array widened to i64, with its original dtype for messages.
pub struct IntArray {
    pub data: Vec<i64>,
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// An opened .npy: the reader, its element kind and byte size, and its shape.
struct OpenedNpy {
    npy: NpyFile<BufReader<File>>,
    kind: TypeChar,
    size: u64,
    shape: Vec<usize>,
}

fn open(path: &Path) -> Result<OpenedNpy> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a readable .npy file", path.display()))?;
    let DType::Plain(ts) = npy.dtype() else {
        bail!(
            "{} holds a structured array; expected a plain numeric array",
            path.display()
        );
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!(
            "{} is stored in Fortran order; save it C-contiguous (numpy.ascontiguousarray) first",
            path.display()
        );
    }
    Ok(OpenedNpy {
        kind: ts.type_char(),
        size: ts.size_field(),
        npy,
        shape,
    })
}

fn read_vec<T: npyz::Deserialize>(npy: NpyFile<BufReader<File>>, path: &Path) -> Result<Vec<T>> {
    npy.into_vec()
        .with_context(|| format!("cannot read the data of {}", path.display()))
}

pub fn read_probs(path: &Path) -> Result<ProbArray> {
    let OpenedNpy {
        npy,
        kind,
        size,
        shape,
    } = open(path)?;
    Ok(match (kind, size) {
        (TypeChar::Float, 4) => ProbArray::F32(read_vec(npy, path)?, shape),
        (TypeChar::Float, 8) => ProbArray::F64(read_vec(npy, path)?, shape),
        _ => bail!(
            "{}: probabilities must be float32 or float64, got dtype {}",
            path.display(),
            npy.dtype().descr()
        ),
    })
}

pub fn read_ints(path: &Path) -> Result<IntArray> {
    let OpenedNpy {
        npy,
        kind,
        size,
        shape,
    } = open(path)?;
    let dtype = npy.dtype().descr();
    let data = match (kind, size) {
        (TypeChar::Bool, 1) => read_vec::<bool>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 1) => read_vec::<u8>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 1) => read_vec::<i8>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 2) => read_vec::<u16>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 2) => read_vec::<i16>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Uint, 4) => read_vec::<u32>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 4) => read_vec::<i32>(npy, path)?.into_iter().map(i64::from).collect(),
        (TypeChar::Int, 8) => read_vec::<i64>(npy, path)?,
        _ => bail!(
            "{}: expected an integer or bool array, got dtype {dtype}",
            path.display()
        ),
    };
    Ok(IntArray { data, shape, dtype })
}

/// Writes a C-order .npy atomically.
pub fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    write_atomic(path, |out| {
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(out)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
        Ok(())
    })
}
