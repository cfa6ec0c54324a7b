//! Predictors, softmax and metric counts as candle custom ops, so that probabilities can
//! stay on the device from the model to the counts. On the CPU each op runs the CPU path
//! (`predict`, `runner::inference`), so results are the same on every device and the ops
//! are tested here; with the `cuda` feature, on CUDA they run `kernels/predict.cu`.

#[cfg(feature = "cuda")]
mod cuda;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use crate::predict::{self, OutputMode, PredictOptions, Prediction, ProbMap, Solver};

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// (B, C, H, W) dimensions as (batch, classes, pixels).
fn dims(shape: &Shape, op: &str) -> candle_core::Result<(usize, usize, usize)> {
    match shape.dims() {
        [b, c, rest @ ..] if !rest.is_empty() => Ok((*b, *c, rest.iter().product())),
        other => candle_core::bail!("{op}: expected (B, C, H, W) probabilities, got {other:?}"),
    }
}

fn prob_map<'a>(data: &'a [f32], shape: &Shape, op: &str) -> candle_core::Result<ProbMap<'a, f32>> {
    let (b, c, pixels) = dims(shape, op)?;
    ProbMap::new(data, &[b, c, pixels]).map_err(|e| candle_core::Error::Msg(format!("{op}: {e}")))
}

/// The CPU predictor with `solver` (argmax or threshold, whose outputs are per pixel).
fn cpu_predict(
    map: &ProbMap<f32>,
    solver: Solver,
    output_mode: OutputMode,
) -> candle_core::Result<Prediction> {
    let options = PredictOptions {
        solver,
        output_mode,
        ..PredictOptions::default()
    };
    predict::predict(map, &options).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(data) => contiguous(data, layout, op),
        other => candle_core::bail!(
            "{op}: expected float32, got {:?}",
            candle_core::backend::BackendStorage::dtype(other)
        ),
    }
}

/// argmax over classes: (B, C, *spatial) float32 -> (B, *spatial) int64.
pub struct Argmax;

impl CustomOp1 for Argmax {
    fn name(&self) -> &'static str {
        "rankseg-argmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = f32_input(storage, layout, self.name())?;
        let map = prob_map(data, layout.shape(), self.name())?;
        let Prediction::ClassMap(classes) = cpu_predict(&map, Solver::Argmax, OutputMode::Multiclass)? else {
            unreachable!("multiclass output is a class map")
        };
        Ok((CpuStorage::I64(classes), class_map_shape(layout.shape())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, pixels) = dims(layout.shape(), self.name())?;
        Ok((
            cuda::argmax(storage, layout, b, c, pixels)?,
            class_map_shape(layout.shape()),
        ))
    }
}

fn class_map_shape(shape: &Shape) -> Shape {
    let dims = shape.dims();
    Shape::from(
        std::iter::once(dims[0])
            .chain(dims[2..].iter().copied())
            .collect::<Vec<_>>(),
    )
}

/// threshold: p > 0.5 per class, (B, C, *spatial) float32 -> the same shape of uint8.
pub struct Threshold;

impl CustomOp1 for Threshold {
    fn name(&self) -> &'static str {
        "rankseg-threshold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = f32_input(storage, layout, self.name())?;
        let map = prob_map(data, layout.shape(), self.name())?;
        let Prediction::Masks(masks) = cpu_predict(&map, Solver::Threshold, OutputMode::Multilabel)? else {
            unreachable!("multilabel output is masks")
        };
        Ok((CpuStorage::U8(masks), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Ok((cuda::threshold(storage, layout)?, layout.shape().clone()))
    }
}

/// `(logits / temperature)` softmaxed over classes, (B, C, *spatial) float32.
pub struct SoftmaxTemperature(pub f32);

impl CustomOp1 for SoftmaxTemperature {
    fn name(&self) -> &'static str {
        "rankseg-softmax-temperature"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = f32_input(storage, layout, self.name())?;
        let (b, c, _) = dims(layout.shape(), self.name())?;
        let probs = crate::runner::inference::softmax(data.to_vec(), b, c, self.0 as f64);
        Ok((CpuStorage::F32(probs), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (b, c, pixels) = dims(layout.shape(), self.name())?;
        Ok((
            cuda::softmax(storage, layout, b, c, pixels, self.0)?,
            layout.shape().clone(),
        ))
    }
}

/// Per-image confusion counts of a class map (B, *spatial) int64 against its labels (the
/// same shape, int64; labels must lie in 0..C or be `ignore`: checked on the host, where
/// the labels are read): (B, 3, C) int64 holding tp, fp and fn per class.
pub struct ConfusionCounts {
    pub num_classes: usize,
    pub ignore: i64,
}

impl ConfusionCounts {
    fn counts(&self, pred: &[i64], label: &[i64], batch: usize) -> Vec<i64> {
        let (n, pixels) = (self.num_classes, pred.len() / batch.max(1));
        let mut out = vec![0i64; batch * 3 * n];
        for b in 0..batch {
            let counts = &mut out[b * 3 * n..(b + 1) * 3 * n];
            let range = b * pixels..(b + 1) * pixels;
            for (&p, &l) in pred[range.clone()].iter().zip(&label[range]) {
                if l == self.ignore || !(0..n as i64).contains(&l) {
                    continue;
                }
                if p == l {
                    counts[l as usize] += 1;
                } else {
                    counts[2 * n + l as usize] += 1;
                    if (0..n as i64).contains(&p) {
                        counts[n + p as usize] += 1;
                    }
                }
            }
        }
        out
    }
}

impl CustomOp2 for ConfusionCounts {
    fn name(&self) -> &'static str {
        "rankseg-confusion-counts"
    }

    fn cpu_fwd(
        &self,
        pred: &CpuStorage,
        pred_layout: &Layout,
        label: &CpuStorage,
        label_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let batch = self.check(pred_layout, label_layout)?;
        let (CpuStorage::I64(pred), CpuStorage::I64(label)) = (pred, label) else {
            candle_core::bail!("{}: class maps and labels must be int64", self.name());
        };
        let pred = contiguous(pred, pred_layout, self.name())?;
        let label = contiguous(label, label_layout, self.name())?;
        Ok((
            CpuStorage::I64(self.counts(pred, label, batch)),
            Shape::from((batch, 3, self.num_classes)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        pred: &candle_core::CudaStorage,
        pred_layout: &Layout,
        label: &candle_core::CudaStorage,
        label_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let batch = self.check(pred_layout, label_layout)?;
        let pixels = pred_layout.shape().elem_count() / batch.max(1);
        let counts = cuda::confusion_counts(
            pred,
            pred_layout,
            label,
            label_layout,
            batch,
            self.num_classes,
            pixels,
            self.ignore,
        )?;
        Ok((counts, Shape::from((batch, 3, self.num_classes))))
    }
}

impl ConfusionCounts {
    fn check(&self, pred: &Layout, label: &Layout) -> candle_core::Result<usize> {
        if pred.shape() != label.shape() || pred.shape().rank() < 2 {
            candle_core::bail!(
                "{}: the class map {:?} and the labels {:?} must have one (B, *spatial) shape",
                self.name(),
                pred.shape(),
                label.shape()
            );
        }
        Ok(pred.shape().dims()[0])
    }
}

/// The class map of a (B, C, *spatial) probability tensor on its own device.
pub fn argmax_classes(probs: &Tensor) -> candle_core::Result<Tensor> {
    probs.apply_op1_no_bwd(&Argmax)
}

/// Threshold masks of a (B, C, *spatial) probability tensor on its own device.
pub fn threshold_masks(probs: &Tensor) -> candle_core::Result<Tensor> {
    probs.apply_op1_no_bwd(&Threshold)
}

/// `rankseg predict` on a device other than the CPU: argmax (class maps) and threshold run
/// as the ops above, on the same validation as the CPU path; the other solvers have no
/// device kernels yet and say so.
pub fn predict_on(
    device: &candle_core::Device,
    data: &[f32],
    shape: &[usize],
    options: &PredictOptions,
) -> anyhow::Result<Prediction> {
    let pixels: usize = shape[2..].iter().product();
    let map = ProbMap::new(data, &[shape[0], shape[1], pixels])?;
    options.validate(map.classes)?;
    let supported = matches!(
        (options.solver, options.output_mode),
        (Solver::Argmax, OutputMode::Multiclass) | (Solver::Threshold, OutputMode::Multilabel)
    );
    if !supported {
        anyhow::bail!(
            "--solver {} --output-mode {} has no {device:?} kernel yet (argmax class maps and threshold masks do): use --device cpu",
            options.solver,
            options.output_mode
        );
    }
    predict::check_values(&map)?;
    let probs = Tensor::from_slice(data, shape, device)?;
    Ok(match options.solver {
        Solver::Argmax => Prediction::ClassMap(argmax_classes(&probs)?.flatten_all()?.to_vec1()?),
        _ => Prediction::Masks(threshold_masks(&probs)?.flatten_all()?.to_vec1()?),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::metrics::{ImageCounts, MetricSpec, Prediction};

    fn probs(b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut x = 12345u64;
        (0..b * c * h * w)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Coarse values, so that ties between classes occur.
                ((x >> 40) % 8) as f32 / 8.0
            })
            .collect()
    }

    #[test]
    fn ops_agree_with_the_cpu_predictors() {
        let (b, c, h, w) = (2, 5, 7, 9);
        let data = probs(b, c, h, w);
        let tensor = Tensor::from_vec(data.clone(), (b, c, h, w), &Device::Cpu).unwrap();
        let classes = argmax_classes(&tensor).unwrap();
        assert_eq!(classes.dims(), &[b, h, w]);
        let classes = classes.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        // Ties resolve to the first class, as the CPU path: class 0 wins every tie with it.
        for (i, &class) in classes.iter().enumerate() {
            let (image, pixel) = (i / (h * w), i % (h * w));
            let row = |k: usize| data[(image * c + k) * h * w + pixel];
            let best = (0..c).fold(0, |best, k| if row(k) > row(best) { k } else { best });
            assert_eq!(class as usize, best);
        }
        let masks = threshold_masks(&tensor).unwrap();
        let want: Vec<u8> = data.iter().map(|&p| u8::from(p > 0.5)).collect();
        assert_eq!(masks.flatten_all().unwrap().to_vec1::<u8>().unwrap(), want);
    }

    #[test]
    fn predict_on_a_device_matches_the_cpu_path_and_names_what_it_lacks() {
        let (b, c, h, w) = (1, 3, 4, 5);
        let data = probs(b, c, h, w);
        let sum: Vec<f32> = (0..b * c * h * w)
            .map(|i| {
                data[i]
                    / (0..c)
                        .map(|k| data[k * h * w + i % (h * w)])
                        .sum::<f32>()
                        .max(1.0)
            })
            .collect();
        let shape = [b, c, h, w];
        let map = ProbMap::new(&sum, &[b, c, h * w]).unwrap();
        for (solver, mode) in [
            (Solver::Argmax, OutputMode::Multiclass),
            (Solver::Threshold, OutputMode::Multilabel),
        ] {
            let options = PredictOptions {
                solver,
                output_mode: mode,
                ..PredictOptions::default()
            };
            let want = predict::predict(&map, &options).unwrap();
            assert_eq!(predict_on(&Device::Cpu, &sum, &shape, &options).unwrap(), want);
        }
        let rma = PredictOptions::default();
        let error = predict_on(&Device::Cpu, &sum, &shape, &rma)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--device cpu") && error.contains("rma"), "{error}");
    }

    #[test]
    fn confusion_counts_match_the_metrics() {
        let (b, c, h, w) = (2, 4, 5, 6);
        let pred: Vec<i64> = (0..b * h * w).map(|i| (i * 7 % 5) as i64 % c as i64).collect();
        let label: Vec<i64> = (0..b * h * w)
            .map(|i| if i % 11 == 0 { 255 } else { (i * 3 % 4) as i64 })
            .collect();
        let op = ConfusionCounts {
            num_classes: c,
            ignore: 255,
        };
        let t = |v: &Vec<i64>| Tensor::from_vec(v.clone(), (b, h, w), &Device::Cpu).unwrap();
        let counts = t(&pred).apply_op2_no_bwd(&t(&label), &op).unwrap();
        let counts = counts.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        let spec = MetricSpec {
            num_classes: c,
            ignore_index: 255,
        };
        for image in 0..b {
            let range = image * h * w..(image + 1) * h * w;
            let want = ImageCounts::of(Prediction::ClassMap(&pred[range.clone()]), &label[range], &spec)
                .unwrap()
                .unwrap();
            let got = &counts[image * 3 * c..(image + 1) * 3 * c];
            for class in 0..c {
                assert_eq!(got[class] as u64, want.tp[class], "tp of class {class}");
                assert_eq!(got[c + class] as u64, want.fp[class], "fp of class {class}");
                assert_eq!(got[2 * c + class] as u64, want.fn_[class], "fn of class {class}");
            }
        }
    }
}
