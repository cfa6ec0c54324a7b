//! Image and label files: JPEG through libjpeg-turbo's decoder (mozjpeg), so pixels equal
//! what OpenCV and Pillow decode; PNG through the png crate; labels as class indices.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::tensor_io::read_ints;

/// An 8-bit RGB image, row-major (H, W, 3).
pub struct Rgb {
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
}

/// Reads a colour image as `cv2.imread(IMREAD_COLOR)` then BGR -> RGB does: grey is
/// replicated, alpha dropped, 16-bit reduced to its high byte. Like OpenCV, the format is
/// told by the file's first bytes, not its name (a PNG named .jpg reads as a PNG).
pub fn read_rgb(path: &Path) -> Result<Rgb> {
    let image = match sniff(path) {
        Some(Format::Png) => read_png(
            path,
            png::Transformations::EXPAND | png::Transformations::STRIP_16,
        )
        .and_then(|(data, info)| to_rgb(data, info)),
        Some(Format::Jpeg) => read_jpeg(path),
        None => bail!("unsupported image format (expected a JPEG or PNG file)"),
    };
    image.with_context(|| format!("cannot read the image {}", path.display()))
}

enum Format {
    Png,
    Jpeg,
}

/// The format by its signature; by the extension when the file cannot be read (its error
/// then comes from the reader, naming the file).
fn sniff(path: &Path) -> Option<Format> {
    let mut head = [0u8; 8];
    let read = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    match read {
        Ok(()) if head == *b"\x89PNG\r\n\x1a\n" => Some(Format::Png),
        Ok(()) if head[..3] == [0xff, 0xd8, 0xff] => Some(Format::Jpeg),
        Ok(()) => None,
        Err(_) if has_extension(path, "png") => Some(Format::Png),
        Err(_) if ["jpg", "jpeg"].iter().any(|e| has_extension(path, e)) => Some(Format::Jpeg),
        Err(_) => None,
    }
}

/// Reads a label map as class indices: a grey or palette PNG (the palette indices, as
/// VOC's SegmentationClass stores them) or an integer .npy of shape (H, W).
pub fn read_label(path: &Path) -> Result<(Vec<i64>, usize, usize)> {
    if has_extension(path, "npy") {
        let array = read_ints(path)?;
        if array.shape.len() != 2 {
            bail!(
                "{}: a label .npy must have shape (H, W), got {:?}",
                path.display(),
                array.shape
            );
        }
        return Ok((array.data, array.shape[0], array.shape[1]));
    }
    let (data, info) = read_png(path, png::Transformations::IDENTITY)
        .with_context(|| format!("cannot read the label {}", path.display()))?;
    let (height, width) = (info.height as usize, info.width as usize);
    let values: Vec<i64> = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, png::BitDepth::Eight) => {
            data.iter().map(|&v| v as i64).collect()
        }
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => {
            data.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as i64).collect()
        }
        (color, depth) => bail!(
            "{}: a label PNG must hold one 8- or 16-bit class index per pixel (grey or palette), this one is {color:?} at {depth:?} bits",
            path.display()
        ),
    };
    Ok((values, height, width))
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn read_png(path: &Path, transformations: png::Transformations) -> Result<(Vec<u8>, png::OutputInfo)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(transformations);
    let mut reader = decoder.read_info()?;
    let mut data = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut data)?;
    data.truncate(info.buffer_size());
    Ok((data, info))
}

fn to_rgb(data: Vec<u8>, info: png::OutputInfo) -> Result<Rgb> {
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("palette PNG not expanded"),
    };
    let pixels = if channels == 3 {
        data
    } else {
        data.chunks_exact(channels)
            .flat_map(|px| {
                if channels <= 2 {
                    [px[0]; 3]
                } else {
                    [px[0], px[1], px[2]]
                }
            })
            .collect()
    };
    Ok(Rgb {
        pixels,
        height: info.height as usize,
        width: info.width as usize,
    })
}

fn read_jpeg(path: &Path) -> Result<Rgb> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
    // libjpeg reports corrupt data through a panic in this binding; turn it into an error.
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Rgb> {
        let mut jpeg = mozjpeg::Decompress::new_mem(&bytes)?.rgb()?;
        let (width, height) = (jpeg.width(), jpeg.height());
        let rows: Vec<[u8; 3]> = jpeg.read_scanlines()?;
        jpeg.finish()?;
        Ok(Rgb {
            pixels: rows.into_iter().flatten().collect(),
            height,
            width,
        })
    });
    match decoded {
        Ok(result) => Ok(result?),
        Err(payload) => bail!("not a decodable JPEG ({})", panic_reason(payload.as_ref())),
    }
}

/// libjpeg's reason for giving up: the binding unwinds with its message as a `String`
/// (through `resume_unwind`, so no panic message is printed).
fn panic_reason(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "libjpeg gave no reason".to_string())
}

/// Writes class indices (H, W) as an 8-bit palette PNG: coloured in any viewer, and
/// `read_label` gives the indices back.
pub fn write_palette_png(
    path: &Path,
    indices: &[u8],
    height: usize,
    width: usize,
    palette: &[[u8; 3]],
) -> Result<()> {
    crate::atomic::write_atomic(path, |out| {
        let mut encoder = png::Encoder::new(out, width as u32, height as u32);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette.iter().flatten().copied().collect::<Vec<u8>>());
        let mut writer = encoder.write_header()?;
        writer.write_image_data(indices)?;
        writer.finish()?;
        Ok(())
    })
}
