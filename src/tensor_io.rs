//! .npy in and out, with the dtype, order and shape checks that turn a wrong file into a
//! message naming it.

use std::fs::File;
use std::io::{BufReader, Chain, Cursor, Read, Seek};
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

/// The largest .npy header accepted (numpy writes a few hundred bytes): a corrupt length
/// field must not make us allocate gigabytes for it.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Opens a .npy stream of `len` bytes (when known, so that a header promising more data
/// than the file holds is an error before anything is allocated).
fn open<R: Read>(
    mut reader: R,
    name: String,
    len: Option<u64>,
) -> Result<OpenedNpy<Chain<Cursor<Vec<u8>>, R>>> {
    let header = read_header_bytes(&mut reader, &name)?;
    check_header_shape(&header, &name)?;
    let header_len = header.len() as u64;
    let npy = NpyFile::new(Cursor::new(header).chain(reader))
        .with_context(|| format!("{name} is not a readable .npy file"))?;
    checked(npy, name, len.map(|len| len.saturating_sub(header_len)))
}

/// The magic, version, length and header text of a .npy, as read (a stream that is not a
/// .npy comes back as far as it was read, for npyz to name what is wrong).
fn read_header_bytes(reader: &mut impl Read, name: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(8)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    let width = match (bytes.get(..6), bytes.get(6)) {
        (Some(b"\x93NUMPY"), Some(1)) => 2,
        (Some(b"\x93NUMPY"), Some(2 | 3)) => 4,
        _ => return Ok(bytes),
    };
    reader
        .by_ref()
        .take(width)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    let mut field = [0u8; 4];
    field[..bytes.len() - 8].copy_from_slice(&bytes[8..]);
    let text_len = u32::from_le_bytes(field) as usize;
    if text_len > MAX_HEADER_BYTES {
        bail!("{name}: its .npy header claims {text_len} bytes; the file is corrupt");
    }
    reader
        .by_ref()
        .take(text_len as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    Ok(bytes)
}

/// npyz multiplies the header's dimensions without checking (a panic in debug builds, a
/// wrong element count in release ones): check the product first.
fn check_header_shape(header: &[u8], name: &str) -> Result<()> {
    let text = String::from_utf8_lossy(header);
    let Some(dims) = header_dims(&text) else {
        return Ok(()); // npyz reports a header it cannot parse
    };
    let count = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    if count.and_then(|n| usize::try_from(n).ok()).is_none() {
        bail!("{name}: the shape {dims:?} in its .npy header overflows (more elements than memory can address); the file is corrupt");
    }
    Ok(())
}

/// The integers of the header's `'shape': (...)` tuple, if it has a readable one.
fn header_dims(text: &str) -> Option<Vec<u64>> {
    let after = &text[text.find("shape")?..];
    let tuple = &after[after.find('(')? + 1..];
    let tuple = &tuple[..tuple.find(')')?];
    tuple
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse().ok())
        .collect()
}

fn checked<R: Read>(npy: NpyFile<R>, name: String, data_len: Option<u64>) -> Result<OpenedNpy<R>> {
    let DType::Plain(ts) = npy.dtype() else {
        bail!("{name} holds a structured array; expected a plain numeric array");
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!("{name} is stored in Fortran order; save it C-contiguous (numpy.ascontiguousarray) first");
    }
    let bytes = npy.len().checked_mul(ts.size_field());
    if let (Some(available), Some(needed)) = (data_len, bytes) {
        if needed > available {
            bail!(
                "{name}: its header says shape {shape:?} of {} ({needed} bytes) but the file holds {available} bytes of data; the file is truncated or its header corrupt",
                npy.dtype().descr()
            );
        }
    }
    Ok(OpenedNpy {
        kind: ts.type_char(),
        size: ts.size_field(),
        npy,
        shape,
        name,
    })
}

fn open_file(path: &Path) -> Result<OpenedNpy<impl Read>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().ok().map(|m| m.len());
    open(BufReader::new(file), path.display().to_string(), len)
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

/// Reads float32 or float64 probabilities straight into their final buffer (see
/// `read_raw`); other dtypes get `probs`' message.
pub fn read_probs(path: &Path) -> Result<ProbArray> {
    let (opened, mut reader) = open_header(path)?;
    let shape = opened.shape.clone();
    Ok(match (opened.kind, opened.size) {
        (TypeChar::Float, 4) => ProbArray::F32(read_raw(&opened, &mut reader)?, shape),
        (TypeChar::Float, 8) => ProbArray::F64(read_raw(&opened, &mut reader)?, shape),
        _ => opened.probs()?,
    })
}

/// A .npy's checked header, and the file positioned at its data. The checks see an empty
/// data reader: the data is read by the caller, not through npyz.
fn open_header(path: &Path) -> Result<(OpenedNpy<std::io::Empty>, BufReader<File>)> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let len = file.metadata().ok().map(|m| m.len());
    let mut reader = BufReader::new(file);
    let header = read_header_bytes(&mut reader, &name)?;
    check_header_shape(&header, &name)?;
    let header_len = header.len() as u64;
    let parsed = npyz::NpyHeader::from_reader(&mut Cursor::new(header))
        .with_context(|| format!("{name} is not a readable .npy file"))?;
    let data_len = len.map(|len| len.saturating_sub(header_len));
    let opened = checked(NpyFile::with_header(parsed, std::io::empty()), name, data_len)?;
    Ok((opened, reader))
}

/// Where the data of an opened .npy of `width`-byte elements lies in its file: (offset,
/// length in bytes). A short file or an element count that overflows is reported here,
/// before anything is allocated or mapped.
fn data_extent<R: Read>(
    opened: &OpenedNpy<R>,
    reader: &mut BufReader<File>,
    width: usize,
) -> Result<(u64, usize)> {
    let name = &opened.name;
    let bytes = opened
        .shape
        .iter()
        .try_fold(width, |n, &d| n.checked_mul(d))
        .filter(|&n| isize::try_from(n).is_ok())
        .with_context(|| format!("{name}: shape {:?} has too many elements", opened.shape))?;
    let start = reader
        .stream_position()
        .with_context(|| format!("cannot read the data of {name}"))?;
    let len = reader
        .get_ref()
        .metadata()
        .with_context(|| format!("cannot read the data of {name}"))?
        .len();
    let held = len.saturating_sub(start);
    if held < bytes as u64 {
        bail!(
            "{name} is truncated: shape {:?} needs {bytes} bytes of data, the file holds {held}",
            opened.shape
        );
    }
    Ok((start, bytes))
}

/// The data of an opened float .npy, read with one `read_exact` into a buffer of the
/// final size. npyz's `into_vec` collects element by element into a growing `Vec`: about
/// three times slower, and its doublings peak at up to three times the array.
fn read_raw<T: bytemuck::Pod, R: Read>(
    opened: &OpenedNpy<R>,
    reader: &mut BufReader<File>,
) -> Result<Vec<T>> {
    let width = std::mem::size_of::<T>();
    let (_, bytes) = data_extent(opened, reader, width)?;
    let mut data = vec![T::zeroed(); bytes / width];
    reader
        .read_exact(bytemuck::cast_slice_mut(&mut data))
        .with_context(|| format!("cannot read the data of {}", opened.name))?;
    if stored_swapped(&opened.npy.dtype()) {
        for value in bytemuck::cast_slice_mut::<T, u8>(&mut data).chunks_exact_mut(width) {
            value.reverse();
        }
    }
    Ok(data)
}

/// Probabilities as `open_probs` gives them: the file's own pages, or a copy.
pub enum LoadedProbs {
    Mapped {
        map: memmap2::Mmap,
        start: usize,
        bytes: usize,
        shape: Vec<usize>,
        double: bool,
    },
    Read(ProbArray),
}

/// A float32 or float64 view of loaded probabilities.
pub enum ProbSlice<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl LoadedProbs {
    pub fn shape(&self) -> &[usize] {
        match self {
            LoadedProbs::Mapped { shape, .. } => shape,
            LoadedProbs::Read(array) => array.shape(),
        }
    }

    pub fn view(&self) -> ProbSlice<'_> {
        match self {
            LoadedProbs::Mapped {
                map,
                start,
                bytes,
                double,
                ..
            } => {
                // Alignment and length were checked when mapping.
                let data = &map[*start..*start + *bytes];
                if *double {
                    ProbSlice::F64(bytemuck::cast_slice(data))
                } else {
                    ProbSlice::F32(bytemuck::cast_slice(data))
                }
            }
            LoadedProbs::Read(ProbArray::F32(data, _)) => ProbSlice::F32(data),
            LoadedProbs::Read(ProbArray::F64(data, _)) => ProbSlice::F64(data),
        }
    }
}

/// Probabilities for one read, start to end: a float .npy in this machine's byte order
/// whose data is aligned in the file (numpy pads headers to 64 bytes) is mapped, so its
/// pages come straight from the page cache with no copy and no fresh memory to zero (on a
/// warm cache about half of `predict --solver argmax`'s time, and its whole second copy of
/// the input); anything else is read by `read_probs`.
pub fn open_probs(path: &Path) -> Result<LoadedProbs> {
    let (opened, mut reader) = open_header(path)?;
    let width = match (opened.kind, opened.size) {
        (TypeChar::Float, 4) => 4,
        (TypeChar::Float, 8) => 8,
        _ => return Ok(LoadedProbs::Read(opened.probs()?)),
    };
    let (start, bytes) = data_extent(&opened, &mut reader, width)?;
    if stored_swapped(&opened.npy.dtype()) || !start.is_multiple_of(width as u64) || bytes == 0 {
        return read_probs(path).map(LoadedProbs::Read);
    }
    // Safety: the map is read-only and lives as long as the slices `view` lends out. What
    // memory mapping cannot rule out is another process truncating or rewriting the file
    // while it is mapped (a read could then fault or see the new bytes): the contract of
    // numpy's `mmap_mode`, and for an input read once it means the caller changed the file
    // under a running command.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(reader.get_ref()) }
        .with_context(|| format!("cannot map {}", opened.name))?;
    let start = start as usize;
    if map.len() < start + bytes || !(map.as_ptr() as usize + start).is_multiple_of(width) {
        return read_probs(path).map(LoadedProbs::Read);
    }
    Ok(LoadedProbs::Mapped {
        map,
        start,
        bytes,
        shape: opened.shape.clone(),
        double: width == 8,
    })
}

/// Whether a plain dtype's bytes are in the other order than this machine's.
fn stored_swapped(dtype: &DType) -> bool {
    let DType::Plain(ts) = dtype else { return false };
    match ts.endianness() {
        npyz::Endianness::Little => cfg!(target_endian = "big"),
        npyz::Endianness::Big => cfg!(target_endian = "little"),
        npyz::Endianness::Irrelevant => false,
    }
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
        use npyz::zip::result::ZipError;
        let label = format!("{} (array {name:?})", self.path.display());
        // Read through the zip member ourselves (not NpzArchive::by_name) so that the
        // header is checked as a plain .npy's is, against the member's size.
        let member = match self.archive.zip_archive().by_name(&format!("{name}.npy")) {
            Ok(member) => member,
            Err(ZipError::FileNotFound) => {
                bail!("{} has no array named {name:?}", self.path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {label}")),
        };
        let len = member.size();
        open(member, label, Some(len))
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

/// `write_npy` for plain numeric data, written as one block of bytes after the header
/// instead of element by element (a class map or mask array is written at disk speed).
pub fn write_npy_pod<T: npyz::AutoSerialize + bytemuck::Pod>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<()> {
    if cfg!(target_endian = "big") {
        // npyz's default dtype is little-endian: let it convert.
        return write_npy(path, shape, data);
    }
    let header = npy_header::<T>(shape)?;
    write_atomic(path, |out| {
        out.write_all(&header)?;
        out.write_all(bytemuck::cast_slice(data))?;
        Ok(())
    })
}

/// The header npyz writes for a C-order array of `T` of this shape. npyz writes it when
/// the writer begins; the writer is then dropped unfinished, which only flushes (its
/// item-count check fails silently on drop).
fn npy_header<T: npyz::AutoSerialize>(shape: &[usize]) -> Result<Vec<u8>> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut header = Vec::new();
    let writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut header)
        .begin_nd()?;
    drop(writer);
    Ok(header)
}
