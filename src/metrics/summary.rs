//! Reductions of per-image counts into the reference's D, I and C metrics (x100).

use super::{ImageCounts, MetricSpec};

/// The three per-(image, class) ratios the reference reports.
#[derive(Clone, Copy)]
enum Ratio {
    Acc,
    IoU,
    Dice,
}

impl Ratio {
    const ALL: [(Ratio, &'static str); 3] = [(Ratio::Acc, "Acc"), (Ratio::IoU, "IoU"), (Ratio::Dice, "Dice")];

    /// NaN for 0/0, as the reference divides.
    fn of(self, tp: u64, fp: u64, fn_: u64) -> f64 {
        let (tp, fp, fn_) = (tp as f64, fp as f64, fn_ as f64);
        match self {
            Ratio::Acc => tp / (tp + fn_),
            Ratio::IoU => tp / (tp + fp + fn_),
            Ratio::Dice => 2.0 * tp / (2.0 * tp + fp + fn_),
        }
    }
}

/// One image's scores: the mean over its scored classes (binary: class 1's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageMetrics {
    pub iou: f64,
    pub dice: f64,
}

/// The named metric values, in the reference's key order, plus per-image scores.
#[derive(Clone, Debug)]
pub struct Summary {
    pub values: Vec<(String, f64)>,
    pub per_image: Vec<ImageMetrics>,
}

impl Summary {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

/// The mean of the values that are not NaN (a 0/0 class or image is left out: the
/// reference would propagate NaN through the whole mean instead).
fn nan_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// Mean of the `count(len)` smallest values.
fn worst_mean(values: &[f64], count: impl Fn(usize) -> usize) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let n = count(sorted.len()).clamp(1, sorted.len());
    sorted[..n].iter().sum::<f64>() / n as f64
}

/// Image reductions take the worst `int(q / 100 * n)` in float64, as Python does.
fn image_count(q: u32, n: usize) -> usize {
    (q as f64 / 100.0 * n as f64) as usize
}

/// Class reductions compute the same product in float32, as the reference's torch code
/// does (so e.g. q = 70 of 10 images keeps 6, not 7).
fn class_count(q: u32, n: usize) -> usize {
    ((q as f64 / 100.0) as f32 * n as f32) as usize
}

const QS: [u32; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];

pub fn summarize(images: &[ImageCounts], spec: &MetricSpec, q: u32) -> Summary {
    let n = spec.num_classes;
    let mut values = Vec::new();
    let mut put = |key: String, v: f64| values.push((key, 100.0 * v));

    // D: counts pooled over the dataset.
    let pooled = |field: fn(&ImageCounts) -> &Vec<u64>| -> Vec<u64> {
        (0..n)
            .map(|c| images.iter().map(|im| field(im)[c]).sum())
            .collect()
    };
    let (tp, fp, fn_) = (pooled(|im| &im.tp), pooled(|im| &im.fp), pooled(|im| &im.fn_));
    let classes: Vec<usize> = if spec.binary() { vec![1] } else { (0..n).collect() };
    let acc_num: u64 = classes.iter().map(|&c| tp[c]).sum();
    let acc_den: u64 = classes.iter().map(|&c| tp[c] + fn_[c]).sum();
    put("Acc".into(), acc_num as f64 / acc_den as f64);
    for (ratio, name) in Ratio::ALL {
        put(
            format!("m{name}D"),
            nan_mean(classes.iter().map(|&c| ratio.of(tp[c], fp[c], fn_[c]))),
        );
    }

    // I: per image, the mean over its scored classes; then over images.
    let image_value = |im: &ImageCounts, ratio: Ratio| -> f64 {
        if spec.binary() {
            if im.active[1] {
                ratio.of(im.tp[1], im.fp[1], im.fn_[1])
            } else {
                1.0
            }
        } else {
            let scored: Vec<f64> = (0..n)
                .filter(|&c| im.active[c])
                .map(|c| ratio.of(im.tp[c], im.fp[c], im.fn_[c]))
                .collect();
            scored.iter().sum::<f64>() / scored.len() as f64
        }
    };
    let per_ratio: Vec<Vec<f64>> = Ratio::ALL
        .iter()
        .map(|&(r, _)| images.iter().map(|im| image_value(im, r)).collect())
        .collect();
    // Key suffixes: "" (all), "Q" (the mean of worst-10% .. worst-100%), "{q}" (worst-q%).
    let q_only = [q];
    let reductions: [(String, Option<&[u32]>); 3] = [
        (String::new(), None),
        ("Q".into(), Some(&QS)),
        (q.to_string(), Some(&q_only)),
    ];
    // A mean over all values, or the mean over `qs` of the worst-q means.
    let reduce = |vals: &[f64], qs: Option<&[u32]>, count: fn(u32, usize) -> usize| match qs {
        None => nan_mean(vals.iter().copied()),
        Some(qs) => qs.iter().map(|&q| worst_mean(vals, |n| count(q, n))).sum::<f64>() / qs.len() as f64,
    };
    for (suffix, qs) in &reductions {
        for ((_, name), vals) in Ratio::ALL.iter().zip(&per_ratio) {
            put(format!("m{name}I{suffix}"), reduce(vals, *qs, image_count));
        }
    }

    // C: per class, over the images where it is scored; then over classes.
    let class_values = |ratio: Ratio, c: usize| -> Vec<f64> {
        images
            .iter()
            .filter(|im| im.active[c])
            .map(|im| ratio.of(im.tp[c], im.fp[c], im.fn_[c]))
            .collect()
    };
    for (suffix, qs) in &reductions {
        for (ratio, name) in Ratio::ALL {
            let per_class = (0..n).map(|c| reduce(&class_values(ratio, c), *qs, class_count));
            put(format!("m{name}C{suffix}"), nan_mean(per_class));
        }
    }

    let per_image = (0..images.len())
        .map(|i| ImageMetrics {
            iou: per_ratio[1][i],
            dice: per_ratio[2][i],
        })
        .collect();
    Summary { values, per_image }
}
