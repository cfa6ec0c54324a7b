//! .npy in and out, with the dtype, order and shape checks that turn a wrong file into a
//! message naming it.

use std::fs::File;
use std::io::{BufReader, Read};
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
struct OpenedNpy<R: Read> {
    npy: NpyFile<R>,
    kind: TypeChar,
    size: u64,
    shape: Vec<usize>,
    /// The file (and array) for messages.
    name: String,
}

fn open<R: Read>(reader: R, name: String) -> Result<OpenedNpy<R>> {
    let npy = NpyFile::new(reader).with_context(|| format!("{name} is not a readable .npy file"))?;
    checked(npy, name)
}

fn checked<R: Read>(npy: NpyFile<R>, name: String) -> Result<OpenedNpy<R>> {
    let DType::Plain(ts) = npy.dtype() else {
        bail!("{name} holds a structured array; expected a plain numeric array");
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!("{name} is stored in Fortran order; save it C-contiguous (numpy.ascontiguousarray) first");
    }
    Ok(OpenedNpy {
        kind: ts.type_char(),
        size: ts.size_field(),
        npy,
        shape,
        name,
    })
}

fn open_file(path: &Path) -> Result<OpenedNpy<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    open(BufReader::new(file), path.display().to_string())
}

impl<R: Read> OpenedNpy<R> {
    fn read_vec<T: npyz::Deserialize>(self) -> Result<Vec<T>> {
        let name = self.name;
        self.npy
            .into_vec()
            .with_context(|| format!("cannot read the data of {name}"))
    }

    fn probs(self) -> Result<ProbArray> {
        let shape = self.shape.clone();
        Ok(match (self.kind, self.size) {
            (TypeChar::Float, 4) => ProbArray::F32(self.read_vec()?, shape),
            (TypeChar::Float, 8) => ProbArray::F64(self.read_vec()?, shape),
            _ => bail!(
                "{}: probabilities must be float32 or float64, got dtype {}",
                self.name,
                self.npy.dtype().descr()
            ),
        })
    }

    fn ints(self) -> Result<IntArray> {
        let dtype = self.npy.dtype().descr();
        let shape = self.shape.clone();
        let data = match (self.kind, self.size) {
            (TypeChar::Bool, 1) => self.read_vec::<bool>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Uint, 1) => self.read_vec::<u8>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Int, 1) => self.read_vec::<i8>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Uint, 2) => self.read_vec::<u16>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Int, 2) => self.read_vec::<i16>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Uint, 4) => self.read_vec::<u32>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Int, 4) => self.read_vec::<i32>()?.into_iter().map(i64::from).collect(),
            (TypeChar::Int, 8) => self.read_vec::<i64>()?,
            _ => bail!(
                "{}: expected an integer or bool array, got dtype {dtype}",
                self.name
            ),
        };
        Ok(IntArray { data, shape, dtype })
    }
}

pub fn read_probs(path: &Path) -> Result<ProbArray> {
    open_file(path)?.probs()
}

pub fn read_ints(path: &Path) -> Result<IntArray> {
    open_file(path)?.ints()
}

/// A NumPy .npz archive (`np.savez` / `np.savez_compressed`).
pub struct Npz {
    archive: npyz::npz::NpzArchive<BufReader<File>>,
    path: std::path::PathBuf,
}

impl Npz {
    pub fn open(path: &Path) -> Result<Self> {
        let archive = npyz::npz::NpzArchive::open(path)
            .with_context(|| format!("{} is not a readable .npz archive", path.display()))?;
        Ok(Npz {
            archive,
            path: path.to_path_buf(),
        })
    }

    fn array(&mut self, name: &str) -> Result<OpenedNpy<impl Read + '_>> {
        let label = format!("{} (array {name:?})", self.path.display());
        let npy = self
            .archive
            .by_name(name)
            .with_context(|| format!("cannot read {label}"))?
            .with_context(|| format!("{} has no array named {name:?}", self.path.display()))?;
        checked(npy, label)
    }

    pub fn probs(&mut self, name: &str) -> Result<ProbArray> {
        self.array(name)?.probs()
    }

    pub fn ints(&mut self, name: &str) -> Result<IntArray> {
        self.array(name)?.ints()
    }
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
