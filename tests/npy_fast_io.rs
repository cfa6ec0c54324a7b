//! The .npy fast paths of `predict`: `open_probs` (mapped, or read when the file cannot be
//! mapped as it stands), `read_probs` (one read into the final buffer) and `write_npy_pod`
//! (header plus one block of bytes), on ordinary and odd files.

use std::path::Path;

use rankseg::tensor_io::{
    open_probs, read_probs, write_npy, write_npy_pod, LoadedProbs, ProbArray, ProbSlice,
};

/// A version 1.0 .npy with the given header dict, padded with `pad` spaces (numpy pads to
/// 64 bytes; other writers may not), then `data`.
fn npy_bytes(dict: &str, pad: usize, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_dict(descr: &str, fortran: bool, shape: &str) -> String {
    let order = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}")
}

fn values() -> Vec<f32> {
    (0..24).map(|i| i as f32 / 24.0).collect()
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_of(loaded: &LoadedProbs) -> Vec<f32> {
    match loaded.view() {
        ProbSlice::F32(data) => data.to_vec(),
        ProbSlice::F64(_) => panic!("expected float32"),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn aligned_file_is_mapped_and_matches_npyz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.npy");
    write_npy(&path, &[1, 2, 3, 4], &values()).unwrap();
    let loaded = open_probs(&path).unwrap();
    assert!(
        matches!(loaded, LoadedProbs::Mapped { .. }),
        "a numpy-padded header is mapped"
    );
    assert_eq!(loaded.shape(), &[1, 2, 3, 4]);
    assert_eq!(f32_of(&loaded), values());
    let ProbArray::F32(read, shape) = read_probs(&path).unwrap() else {
        panic!("expected float32")
    };
    assert_eq!((read, shape), (values(), vec![1, 2, 3, 4]));
}

#[test]
fn unaligned_header_falls_back_to_reading() {
    let dir = tempfile::tempdir().unwrap();
    // Data offset 10 + header length: an odd pad puts it off a 4-byte boundary.
    let dict = f32_dict("<f4", false, "(1, 2, 12)");
    let pad = (0..4)
        .find(|p| !(10 + dict.len() + p + 1).is_multiple_of(4))
        .unwrap();
    let path = write(
        dir.path(),
        "odd.npy",
        &npy_bytes(&dict, pad, &le_bytes(&values())),
    );
    let loaded = open_probs(&path).unwrap();
    assert!(matches!(loaded, LoadedProbs::Read(_)));
    assert_eq!(f32_of(&loaded), values());
}

#[test]
fn big_endian_is_read_and_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = values().iter().flat_map(|v| v.to_be_bytes()).collect();
    let path = write(
        dir.path(),
        "be.npy",
        &npy_bytes(&f32_dict(">f4", false, "(2, 3, 4)"), 53, &data),
    );
    let loaded = open_probs(&path).unwrap();
    assert!(matches!(loaded, LoadedProbs::Read(_)));
    assert_eq!(f32_of(&loaded), values());
}

#[test]
fn float64_is_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npy");
    let doubles: Vec<f64> = values().iter().map(|&v| f64::from(v)).collect();
    write_npy(&path, &[1, 2, 12], &doubles).unwrap();
    let loaded = open_probs(&path).unwrap();
    let ProbSlice::F64(data) = loaded.view() else {
        panic!("expected float64")
    };
    assert_eq!(data, &doubles[..]);
}

fn error_of(path: &Path) -> String {
    match open_probs(path) {
        Ok(_) => panic!("{} should be refused", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn fortran_order_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "f.npy",
        &npy_bytes(&f32_dict("<f4", true, "(1, 2, 12)"), 53, &le_bytes(&values())),
    );
    let message = error_of(&path);
    assert!(
        message.contains("Fortran order") && message.contains("f.npy"),
        "{message}"
    );
    assert!(read_probs(&path).is_err());
}

#[test]
fn truncated_data_is_refused_with_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = le_bytes(&values());
    let path = write(
        dir.path(),
        "short.npy",
        &npy_bytes(
            &f32_dict("<f4", false, "(1, 2, 12)"),
            53,
            &bytes[..bytes.len() - 4],
        ),
    );
    let message = error_of(&path);
    assert!(
        message.contains("short.npy") && message.contains("truncated") && message.contains("[1, 2, 12]"),
        "{message}"
    );
    let message = format!("{:#}", read_probs(&path).err().unwrap());
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn huge_shape_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "huge.npy",
        &npy_bytes(
            // 2^62 elements (npyz's own product fits u64), 2^64 bytes (does not fit).
            &f32_dict("<f4", false, "(1, 2147483648, 2147483648)"),
            13,
            &le_bytes(&values()),
        ),
    );
    let message = error_of(&path);
    assert!(
        message.contains("huge.npy") && message.contains("too many elements"),
        "{message}"
    );
    assert!(read_probs(&path).is_err());
}

#[test]
fn other_dtypes_get_the_float_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.npy");
    write_npy(&path, &[1, 2, 2], &[0i64, 1, 1, 0]).unwrap();
    let message = error_of(&path);
    assert!(message.contains("float32 or float64"), "{message}");
}

#[test]
fn pod_writer_matches_npyz_writer() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<i64> = (0..30).map(|i| (i * 7) % 5).collect();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    write_npy(&a, &[1, 5, 6], &labels).unwrap();
    write_npy_pod(&b, &[1, 5, 6], &labels).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let masks: Vec<u8> = (0..30).map(|i| (i % 3 == 0) as u8).collect();
    write_npy(&a, &[1, 3, 10], &masks).unwrap();
    write_npy_pod(&b, &[1, 3, 10], &masks).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}
