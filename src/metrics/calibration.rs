//! Calibration of the probabilities, as the experiment's ECE and SCE metrics: expected
//! calibration error over `num_bins` equal-width confidence bins, dataset-wide (D) and per
//! image (I); SCE per class, reported in permille as the reference does.

/// Confidence bins: pixel count, correct count and summed confidence per bin.
#[derive(Clone, Debug)]
struct Bins {
    total: Vec<f64>,
    correct: Vec<f64>,
    confidence: Vec<f64>,
}

impl Bins {
    fn new(n: usize) -> Self {
        Bins {
            total: vec![0.0; n],
            correct: vec![0.0; n],
            confidence: vec![0.0; n],
        }
    }

    /// The bin of a confidence: the last lower edge at or below it
    /// (`bucketize(conf, linspace(0, 1 - 1/n, n), right=True) - 1`).
    fn add(&mut self, conf: f32, correct: bool) {
        let n = self.total.len();
        let edge = |k: usize| linspace_edge(k, n);
        let mut k = ((conf * n as f32) as usize).min(n - 1);
        while k > 0 && edge(k) > conf {
            k -= 1;
        }
        while k + 1 < n && edge(k + 1) <= conf {
            k += 1;
        }
        self.total[k] += 1.0;
        self.correct[k] += correct as u8 as f64;
        self.confidence[k] += conf as f64;
    }

    /// 100 x the count-weighted mean |accuracy - confidence| over non-empty bins.
    fn ece(&self) -> f64 {
        let all: f64 = self.total.iter().sum();
        let mut sum = 0.0;
        for k in 0..self.total.len() {
            if self.total[k] > 0.0 {
                let gap = (self.correct[k] - self.confidence[k]).abs() / self.total[k];
                sum += self.total[k] / all * gap;
            }
        }
        100.0 * sum
    }
}

/// `torch.linspace(0, 1 - 1/n, n)[k]` in float32: the first half counted up from 0, the
/// second down from the end.
fn linspace_edge(k: usize, n: usize) -> f32 {
    if n == 1 {
        return 0.0;
    }
    let end = (1.0 - 1.0 / n as f64) as f32;
    let step = end / (n - 1) as f32;
    if k < n / 2 {
        step * k as f32
    } else {
        end - step * (n - 1 - k) as f32
    }
}

/// Which calibration values to take (the test yaml's ECED/ECEI/SCED/SCEI switches).
#[derive(Clone, Copy, Debug, Default)]
pub struct CalibrationSpec {
    pub eced: bool,
    pub ecei: bool,
    pub sced: bool,
    pub scei: bool,
    pub num_bins: usize,
    pub num_classes: usize,
    pub ignore_index: i64,
}

impl CalibrationSpec {
    pub fn any(&self) -> bool {
        self.eced || self.ecei || self.sced || self.scei
    }
}

/// Accumulates calibration over images.
#[derive(Clone, Debug)]
pub struct Calibration {
    spec: CalibrationSpec,
    dataset: Bins,
    per_class: Vec<Bins>,
    image_ece: Vec<f64>,
    image_sce: Vec<f64>,
}

impl Calibration {
    pub fn new(spec: CalibrationSpec) -> Self {
        Calibration {
            spec,
            dataset: Bins::new(spec.num_bins),
            per_class: vec![Bins::new(spec.num_bins); spec.num_classes],
            image_ece: Vec::new(),
            image_sce: Vec::new(),
        }
    }

    /// One image: probabilities (C, D) and labels (D).
    pub fn add(&mut self, probs: &[f32], label: &[i64]) {
        let spec = self.spec;
        let (n, dim) = (spec.num_classes, label.len());
        let argmax = |i: usize| -> (usize, f32) {
            (0..n).fold((0, probs[i]), |(best, top), c| {
                let p = probs[c * dim + i];
                if p > top {
                    (c, p)
                } else {
                    (best, top)
                }
            })
        };
        let mut image = Bins::new(spec.num_bins);
        let mut image_classes = vec![Bins::new(spec.num_bins); n];
        // The reference clamps the label into 0..n-1 before listing an image's classes, so
        // ignored pixels make the last class count as present.
        let mut present = vec![false; n];
        for (i, &l) in label.iter().enumerate() {
            present[l.clamp(0, n as i64 - 1) as usize] = true;
            if l == spec.ignore_index {
                continue;
            }
            let (pred, conf) = argmax(i);
            let correct = pred as i64 == l;
            if spec.eced {
                self.dataset.add(conf, correct);
            }
            if spec.ecei {
                image.add(conf, correct);
            }
            if spec.sced || spec.scei {
                for c in 0..n {
                    let hit = correct && l == c as i64;
                    if spec.sced {
                        self.per_class[c].add(probs[c * dim + i], hit);
                    }
                    if spec.scei {
                        image_classes[c].add(probs[c * dim + i], hit);
                    }
                }
            }
        }
        if spec.ecei {
            self.image_ece.push(image.ece());
        }
        if spec.scei {
            let classes: Vec<usize> = if n > 2 {
                (0..n).filter(|&c| present[c]).collect()
            } else {
                vec![1]
            };
            let sum: f64 = classes.iter().map(|&c| image_classes[c].ece()).sum();
            self.image_sce.push(sum / classes.len() as f64);
        }
    }

    /// The enabled values, keyed as the reference: ECED, ECEI, SCED, SCEI (SCE in permille).
    pub fn values(&self) -> Vec<(String, f64)> {
        let spec = self.spec;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mut out = Vec::new();
        if spec.eced {
            out.push(("ECED".to_string(), self.dataset.ece()));
        }
        if spec.ecei {
            out.push(("ECEI".to_string(), mean(&self.image_ece)));
        }
        if spec.sced {
            let classes: Vec<usize> = if spec.num_classes > 2 {
                (0..spec.num_classes).collect()
            } else {
                vec![1]
            };
            let sum: f64 = classes.iter().map(|&c| self.per_class[c].ece()).sum();
            out.push(("SCED".to_string(), sum * 10.0 / classes.len() as f64));
        }
        if spec.scei {
            out.push(("SCEI".to_string(), 10.0 * mean(&self.image_sce)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CalibrationSpec {
        CalibrationSpec {
            eced: true,
            ecei: true,
            sced: false,
            scei: false,
            num_bins: 10,
            num_classes: 2,
            ignore_index: 255,
        }
    }

    #[test]
    fn a_perfectly_calibrated_bin_has_no_error() {
        // Four pixels at confidence 0.75, three of them right: |0.75 - 0.75| = 0.
        let probs = [0.25f32, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let label = [1, 1, 1, 0];
        let mut cal = Calibration::new(spec());
        cal.add(&probs, &label);
        assert_eq!(cal.values(), vec![("ECED".into(), 0.0), ("ECEI".into(), 0.0)]);
    }

    #[test]
    fn errors_weigh_bins_by_their_pixels_and_skip_ignored_ones() {
        // Bin 0.9: two pixels, both right (gap 0.1); bin 0.6: one pixel, wrong (gap 0.6).
        let probs = [0.1f32, 0.1, 0.6, 0.5, 0.9, 0.9, 0.4, 0.5];
        let label = [1, 1, 1, 255];
        let mut cal = Calibration::new(spec());
        cal.add(&probs, &label);
        let expected = 100.0 * (2.0 / 3.0 * (1.0 - 0.9f32 as f64) + 1.0 / 3.0 * 0.6f32 as f64);
        let got = cal.values()[0].1;
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }
}
