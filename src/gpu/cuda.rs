//! Launches of `kernels/predict.cu` (compiled to PTX by build.rs) on candle's CUDA device.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

const MODULE: &str = "rankseg_predict";
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/predict.ptx"));

fn config(threads: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(threads as u32)
}

fn start(layout: &Layout, op: &str) -> Result<usize> {
    match layout.contiguous_offsets() {
        Some((start, _)) => Ok(start),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

fn u32_of(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| candle_core::Error::Msg(format!("{what} {value} is too large for the CUDA kernels")))
}

fn device(storage: &CudaStorage) -> &CudaDevice {
    storage.device()
}

pub fn argmax(
    storage: &CudaStorage,
    layout: &Layout,
    batch: usize,
    classes: usize,
    pixels: usize,
) -> Result<CudaStorage> {
    let dev = device(storage);
    let probs = storage.as_cuda_slice::<f32>()?.slice(start(layout, "argmax")?..);
    // Safety: every element is written by the kernel (one thread per pixel).
    let out = unsafe { dev.alloc::<i64>(batch * pixels)? };
    let func = dev.get_or_load_custom_func("argmax_f32", MODULE, PTX)?;
    let (b, c, p) = (
        u32_of(batch, "batch")?,
        u32_of(classes, "classes")?,
        u32_of(pixels, "pixels")?,
    );
    let mut builder = func.builder();
    builder.arg(&probs);
    builder.arg(&out);
    builder.arg(&b);
    builder.arg(&c);
    builder.arg(&p);
    // Safety: the arguments match the kernel's signature; the buffers hold B x C x P and B x P.
    unsafe { builder.launch(config(batch * pixels)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

pub fn threshold(storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
    let dev = device(storage);
    let count = layout.shape().elem_count();
    let probs = storage
        .as_cuda_slice::<f32>()?
        .slice(start(layout, "threshold")?..);
    // Safety: every element is written by the kernel.
    let out = unsafe { dev.alloc::<u8>(count)? };
    let func = dev.get_or_load_custom_func("threshold_f32", MODULE, PTX)?;
    let n = count as u64;
    let mut builder = func.builder();
    builder.arg(&probs);
    builder.arg(&out);
    builder.arg(&n);
    // Safety: the arguments match the kernel's signature; both buffers hold `count` values.
    unsafe { builder.launch(config(count)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

pub fn softmax(
    storage: &CudaStorage,
    layout: &Layout,
    batch: usize,
    classes: usize,
    pixels: usize,
    temperature: f32,
) -> Result<CudaStorage> {
    let dev = device(storage);
    let logits = storage.as_cuda_slice::<f32>()?.slice(start(layout, "softmax")?..);
    // Safety: every element is written by the kernel (one thread per pixel, all classes).
    let out = unsafe { dev.alloc::<f32>(batch * classes * pixels)? };
    let func = dev.get_or_load_custom_func("softmax_temperature_f32", MODULE, PTX)?;
    let (b, c, p) = (
        u32_of(batch, "batch")?,
        u32_of(classes, "classes")?,
        u32_of(pixels, "pixels")?,
    );
    let mut builder = func.builder();
    builder.arg(&logits);
    builder.arg(&out);
    builder.arg(&b);
    builder.arg(&c);
    builder.arg(&p);
    builder.arg(&temperature);
    // Safety: the arguments match the kernel's signature; both buffers hold B x C x P.
    unsafe { builder.launch(config(batch * pixels)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

#[allow(clippy::too_many_arguments)]
pub fn confusion_counts(
    pred: &CudaStorage,
    pred_layout: &Layout,
    label: &CudaStorage,
    label_layout: &Layout,
    batch: usize,
    classes: usize,
    pixels: usize,
    ignore: i64,
) -> Result<CudaStorage> {
    let dev = device(pred);
    let pred = pred
        .as_cuda_slice::<i64>()?
        .slice(start(pred_layout, "confusion counts")?..);
    let label = label
        .as_cuda_slice::<i64>()?
        .slice(start(label_layout, "confusion counts")?..);
    // tp, fp and fn side by side: (B, 3, C), zeroed for the atomics.
    let counts = dev.alloc_zeros::<i64>(batch * 3 * classes)?;
    let func = dev.get_or_load_custom_func("confusion_counts", MODULE, PTX)?;
    let (b, c, p) = (
        u32_of(batch, "batch")?,
        u32_of(classes, "classes")?,
        u32_of(pixels, "pixels")?,
    );
    let mut builder = func.builder();
    builder.arg(&pred);
    builder.arg(&label);
    builder.arg(&b);
    builder.arg(&c);
    builder.arg(&p);
    builder.arg(&ignore);
    builder.arg(&counts);
    // Safety: the arguments match the kernel's signature; the class map and labels hold
    // B x P values and the counts B x 3 x C (the kernel indexes tp, fp, fn from one base).
    unsafe { builder.launch(config(batch * pixels)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(counts, dev.clone()))
}
