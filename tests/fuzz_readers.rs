//! Property tests of the file readers: random bytes, and random mutations of valid files
//! (bytes overwritten, inserted, the file cut short), must give `Ok` or `Err`, never a
//! panic, an abort or a runaway allocation. Every reader the CLIs open a user's file with is
//! covered: .npy, .npz, the yaml configs, PNG and JPEG, NIfTI and safetensors (and .pth).
//!
//! The case count is small so that a debug build runs this in seconds; raise it for a
//! deeper search with `PROPTEST_CASES=5000 cargo test --test fuzz_readers`, and replay a
//! failure with the `PROPTEST_RNG_SEED` it printed.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use candle_core::{Device, Tensor};
use ndarray::Array3;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};
use rankseg::tensor_io::{read_ints, read_probs, write_npy, Npz};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 48;

fn config() -> Config {
    let mut config = Config {
        cases: CASES,
        // No regression files in the source tree: a failure prints its seed instead.
        failure_persistence: None,
        ..Config::default()
    };
    if let Some(cases) = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()) {
        config.cases = cases;
    }
    // A fixed seed keeps CI reproducible; PROPTEST_RNG_SEED picks another.
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_f00d);
    }
    config
}

/// One edit of a file's bytes.
#[derive(Clone, Debug)]
enum Edit {
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// Edits, and which of the valid seed files they apply to.
fn mutation() -> impl Strategy<Value = (Index, Vec<Edit>)> {
    (any::<Index>(), prop::collection::vec(edit(), 1..6))
}

/// Bytes that mostly start like a real file of the format (so the header parser runs),
/// followed by noise.
fn noise(magic: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..400)).prop_map(move |(keep, rest)| {
        let mut bytes = if keep { magic.to_vec() } else { Vec::new() };
        bytes.extend(rest);
        bytes
    })
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        if bytes.is_empty() {
            break;
        }
        match edit {
            Edit::Overwrite(i, b) => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Insert(i, extra) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, extra.iter().copied());
            }
            Edit::Remove(i, n) => {
                let at = i.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        }
    }
    bytes
}

/// Seed files of one format, and the reader under test (its result is all that matters).
struct Format {
    seeds: Vec<Vec<u8>>,
    file_name: &'static str,
    read: fn(&Path),
}

impl Format {
    fn check(&self, bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(self.file_name);
        std::fs::write(&path, bytes).unwrap();
        (self.read)(&path);
    }

    fn mutated(&self, (which, edits): &(Index, Vec<Edit>)) -> Vec<u8> {
        apply(self.seeds[which.index(self.seeds.len())].clone(), edits)
    }
}

fn written(name: &str, write: impl FnOnce(&Path)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write(&path);
    std::fs::read(&path).unwrap()
}

fn npy() -> Format {
    Format {
        seeds: vec![
            written("a.npy", |p| write_npy(p, &[1, 3, 2, 2], &[0.25f32; 12]).unwrap()),
            written("a.npy", |p| write_npy(p, &[2, 3], &[0.5f64; 6]).unwrap()),
            written("a.npy", |p| write_npy(p, &[2, 2], &[0u8, 1, 2, 255]).unwrap()),
            written("a.npy", |p| write_npy(p, &[3], &[-1i64, 0, 7]).unwrap()),
        ],
        file_name: "a.npy",
        read: |p| {
            let _ = read_probs(p);
            let _ = read_ints(p);
            let _ = rankseg::data::read_label(p);
        },
    }
}

fn npz_bytes(ct: &[f64], mask: &[i8], shape: &[u64], compressed: bool) -> Vec<u8> {
    use npyz::WriterBuilder;
    let mut bytes = std::io::Cursor::new(Vec::new());
    {
        let mut npz = npyz::npz::NpzWriter::new(&mut bytes);
        use npyz::zip::{write::FileOptions, CompressionMethod};
        let method = if compressed {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        let options = FileOptions::default().compression_method(method);
        let mut writer = npz
            .array::<f64>("ct", options)
            .unwrap()
            .default_dtype()
            .shape(shape)
            .begin_nd()
            .unwrap();
        writer.extend(ct.iter().copied()).unwrap();
        writer.finish().unwrap();
        let mut writer = npz
            .array::<i8>("mask", options)
            .unwrap()
            .default_dtype()
            .shape(shape)
            .begin_nd()
            .unwrap();
        writer.extend(mask.iter().copied()).unwrap();
        writer.finish().unwrap();
    }
    bytes.into_inner()
}

fn npz() -> Format {
    Format {
        seeds: vec![
            npz_bytes(&[1.0, -2.0, 3.5, 0.0], &[0, 1, 2, 0], &[2, 2], false),
            npz_bytes(&[1.0; 6], &[2; 6], &[2, 3], true),
        ],
        file_name: "a.npz",
        read: |p| {
            if let Ok(mut npz) = Npz::open(p) {
                let _ = npz.probs("ct");
                let _ = npz.ints("mask");
            }
        },
    }
}

fn yaml() -> Format {
    let shipped =
        |rel: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(rel)).unwrap();
    Format {
        seeds: vec![
            shipped("datas/pascal_voc.yaml"),
            shipped("datas/lits_fold0.yaml"),
            shipped("models/segformer_b0_ade.yaml"),
            shipped("models/deeplabv3plus_resnet50d.yaml"),
            shipped("test/test_iou.yaml"),
            shipped("predict/rankseg_rma.yaml"),
            shipped("predict/rankseg_ba.yaml"),
        ],
        file_name: "a.yaml",
        read: |p| {
            use rankseg::config::{data::DataConfig, test::TestConfig, Kind};
            let Ok(source) = rankseg::config::find(Kind::Datas, p.to_str().unwrap()) else {
                return;
            };
            if let Ok(data) = source.parse::<DataConfig>() {
                let _ = data.check();
            }
            if let Ok(test) = source.parse::<TestConfig>() {
                let _ = test.check();
            }
            let _ = source.parse::<rankseg::models::ModelYaml>();
            if let Ok(predict) = rankseg::config::predict::PredictConfig::from_yaml(&source.text) {
                let _ = predict.check(21);
            }
        },
    }
}

fn png_bytes(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if color == png::ColorType::Indexed {
            encoder.set_palette(vec![0u8, 0, 0, 128, 0, 0, 0, 128, 0]);
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }
    bytes
}

fn png_format() -> Format {
    use png::{BitDepth, ColorType};
    Format {
        seeds: vec![
            png_bytes(
                4,
                3,
                ColorType::Grayscale,
                BitDepth::Eight,
                &[0, 1, 2, 255, 0, 1, 2, 3, 4, 5, 6, 7],
            ),
            png_bytes(3, 2, ColorType::Indexed, BitDepth::Eight, &[0, 1, 2, 2, 1, 0]),
            png_bytes(2, 2, ColorType::Rgb, BitDepth::Eight, &[9; 12]),
            png_bytes(2, 1, ColorType::Grayscale, BitDepth::Sixteen, &[1, 0, 0, 2]),
        ],
        file_name: "a.png",
        read: |p| {
            let _ = rankseg::data::read_label(p);
            let _ = rankseg::data::read_rgb(p);
        },
    }
}

fn jpeg_bytes(width: usize, height: usize) -> Vec<u8> {
    let rgb: Vec<u8> = (0..width * height * 3).map(|i| (i * 37 % 251) as u8).collect();
    let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    compress.set_size(width, height);
    let mut started = compress.start_compress(Vec::new()).unwrap();
    started.write_scanlines(&rgb).unwrap();
    started.finish().unwrap()
}

fn jpeg() -> Format {
    Format {
        seeds: vec![jpeg_bytes(8, 8), jpeg_bytes(17, 5)],
        file_name: "a.jpg",
        read: |p| {
            let _ = rankseg::data::read_rgb(p);
        },
    }
}

fn nifti_format() -> Format {
    let ct = Array3::from_shape_fn((3, 4, 2), |(x, y, z)| (x * 10 + y) as f32 - z as f32 * 100.0);
    let mask = Array3::from_shape_fn((3, 4, 2), |(x, y, _)| ((x + y) % 3) as u8);
    let write = |name: &str, f: &dyn Fn(&Path)| written(name, f);
    Format {
        seeds: vec![
            write("a.nii", &|p| {
                nifti::writer::WriterOptions::new(p).write_nifti(&ct).unwrap()
            }),
            write("a.nii", &|p| {
                nifti::writer::WriterOptions::new(p).write_nifti(&mask).unwrap()
            }),
        ],
        file_name: "a.nii",
        read: |p| {
            let _ = rankseg::data::prepare::read_volume(p);
        },
    }
}

fn safetensors() -> Format {
    let dev = Device::Cpu;
    let tensors = |dtype| {
        [
            (
                "a.weight",
                Tensor::arange(0f32, 6.0, &dev).unwrap().reshape((2, 3)).unwrap(),
            ),
            ("b.bias", Tensor::new(&[1f32, 2.0], &dev).unwrap()),
        ]
        .into_iter()
        .map(|(name, t)| (name.to_string(), t.to_dtype(dtype).unwrap()))
        .collect::<std::collections::HashMap<_, _>>()
    };
    let save = |dtype| {
        written("a.safetensors", |p| {
            candle_core::safetensors::save(&tensors(dtype), p).unwrap()
        })
    };
    Format {
        seeds: vec![save(candle_core::DType::F32), save(candle_core::DType::F16)],
        file_name: "a.safetensors",
        read: read_state_dict,
    }
}

/// Opens a state dict and reads every tensor in it.
fn read_state_dict(path: &Path) {
    let Ok(dict) = rankseg::models::StateDict::open(path) else {
        return;
    };
    let vb = dict.var_builder(&Device::Cpu);
    for name in dict.unexpected_keys() {
        let _ = vb.get_unchecked(&name);
    }
}

fn pth() -> Format {
    let fixture = |name: &str| -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/zoo/pth")
            .join(name)
    };
    Format {
        seeds: vec![std::fs::read(fixture("state_dict.pth")).unwrap()],
        file_name: "a.pth",
        read: read_state_dict,
    }
}

macro_rules! fuzz {
    ($name:ident, $format:expr, $magic:expr) => {
        mod $name {
            use super::*;

            // The seed files, written once per test binary.
            static FORMAT: LazyLock<Format> = LazyLock::new(|| $format);

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn mutated_files(m in mutation()) {
                    FORMAT.check(&FORMAT.mutated(&m));
                }

                #[test]
                fn random_bytes(bytes in noise($magic)) {
                    FORMAT.check(&bytes);
                }
            }
        }
    };
}

fuzz!(npy_reader, npy(), b"\x93NUMPY\x01\x00");
fuzz!(npz_reader, npz(), b"PK\x03\x04");
fuzz!(yaml_reader, yaml(), b"dataset: ");
fuzz!(png_reader, png_format(), b"\x89PNG\r\n\x1a\n");
fuzz!(jpeg_reader, jpeg(), b"\xff\xd8\xff\xe0");
fuzz!(nifti_reader, nifti_format(), b"\x5c\x01\x00\x00");
fuzz!(
    safetensors_reader,
    safetensors(),
    b"\x40\x00\x00\x00\x00\x00\x00\x00{"
);
fuzz!(pth_reader, pth(), b"PK\x03\x04");

/// A .npy header with arbitrary dimensions (huge ones included) and a short body: the
/// element count must be checked before anything multiplies or allocates by it.
fn npy_with_shape() -> impl Strategy<Value = Vec<u8>> {
    let dim = prop_oneof![0u64..8, any::<u64>(), Just(u64::MAX), Just(1 << 32)];
    let descr = prop::sample::select(vec!["<f4", "<f8", "|u1", "<i8", "|b1", "<c16"]);
    (
        descr,
        prop::collection::vec(dim, 0..5),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(descr, dims, body)| {
            let dims: Vec<String> = dims.iter().map(u64::to_string).collect();
            let mut text = format!(
                "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
                dims.join(", ")
            );
            text.push('\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend((text.len() as u16).to_le_bytes());
            bytes.extend(text.into_bytes());
            bytes.extend(body);
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn npy_headers_with_any_shape(bytes in npy_with_shape()) {
        npy().check(&bytes);
    }
}
