//! Charts as PNG files: drawn in memory with the font built into the binary, then written
//! in one atomic step (a failed or interrupted run never leaves a partial picture).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::style::{register_font, FontStyle};

use crate::atomic::write_atomic;

/// DejaVu Sans (Bitstream Vera licence, assets/fonts/LICENSE), built into the binary so that
/// charts draw their labels on any machine, whatever fonts it has installed.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Every chart's size in pixels.
pub const SIZE: (u32, u32) = (900, 600);

/// `draw` fills an RGB buffer of `SIZE` (registered font: "sans-serif"); the result goes to
/// `path`.
pub fn write_chart(path: &Path, draw: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<()> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow!("the built-in plot font is not a usable TrueType font"))?;
    let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw(&mut rgb)?;
    write_atomic(path, |out| {
        let mut encoder = png::Encoder::new(out, SIZE.0, SIZE.1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&rgb)?;
        Ok(())
    })
}
