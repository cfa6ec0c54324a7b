//! The binned volume search against a plain full sort, and its independence from the
//! thread count. Rows are long enough (> 4096) to take the screening path.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rankseg::predict::volume::{optimal_cut, Cut};
use rankseg::predict::{
    predict, torch_sort_order, torch_sum, Metric, OutputMode, PredictOptions, Prob, ProbMap, RmaObjective,
};
use rankseg::synthetic::{softmax_map, MapSpec};

/// The definition: sort the whole row as torch does, score every volume in the input
/// precision, take the first argmax.
fn cut_by_full_sort<T: Prob>(row: &[T], objective: &RmaObjective) -> Option<Cut<T>> {
    let order = torch_sort_order(row);
    let mu_t = torch_sum(row);
    let (mut best_t, mut best) = (0, objective.in_precision(0, T::ZERO, mu_t));
    let mut s = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        s += row[i as usize].to_f64();
        let score = objective.in_precision(k + 1, T::from_f64(s), mu_t);
        if score > best {
            (best_t, best) = (k + 1, score);
        }
    }
    if best_t == 0 {
        return None;
    }
    let value = row[order[best_t - 1] as usize];
    let splits = order.get(best_t).is_some_and(|&i| row[i as usize] == value);
    let ties = splits.then(|| {
        let mut ties: Vec<u32> = order[..best_t]
            .iter()
            .copied()
            .filter(|&i| row[i as usize] == value)
            .collect();
        ties.sort_unstable();
        ties.into_boxed_slice()
    });
    Some(Cut { value, ties })
}

fn rows(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 20_000 + rng.random_range(0..20_000);
    vec![
        // Uniform.
        (0..n).map(|_| rng.random::<f32>()).collect(),
        // Mostly near zero with a confident blob, like a softmax channel.
        (0..n)
            .map(|i| {
                if i % 7 < 2 {
                    0.6 + 0.4 * rng.random::<f32>()
                } else {
                    0.05 * rng.random::<f32>()
                }
            })
            .collect(),
        // Heavy ties: multiples of 1/8.
        (0..n).map(|_| rng.random_range(0..=8) as f32 / 8.0).collect(),
        // Blocky, as nearest-upsampled logits give: a few hundred values, each in runs of
        // 64, so the bins near the cut hold only exact ties and the tail is large.
        {
            let levels: Vec<f32> = (0..n / 64 + 1).map(|_| rng.random::<f32>().powi(4)).collect();
            (0..n).map(|i| levels[i / 64]).collect()
        },
        // A huge run of one value right at the decision boundary region.
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    0.4
                } else {
                    rng.random::<f32>().powi(3)
                }
            })
            .collect(),
    ]
}

#[test]
fn binned_search_equals_full_sort() {
    for seed in 0..4 {
        for row in rows(seed) {
            let max = row.iter().copied().fold(0.0f32, f32::max);
            let mu: f64 = row.iter().map(|&p| p as f64).sum();
            let mu_t = torch_sum(&row);
            for metric in [Metric::Dice, Metric::Iou] {
                for smooth in [0.0, 1.0, 100.0] {
                    let objective = RmaObjective { metric, smooth };
                    let slow = cut_by_full_sort(&row, &objective);
                    let selected = |cut: &Option<Cut<f32>>| -> Vec<bool> {
                        row.iter()
                            .enumerate()
                            .map(|(i, &p)| cut.as_ref().is_some_and(|c| c.selects(i, p)))
                            .collect()
                    };
                    // The floor is only a hint: right, wrong or absent, the cut is the same.
                    for floor in [0.0, 0.3, 0.45, 0.99] {
                        let fast = optimal_cut(&row, max, (mu, mu_t), floor, &objective);
                        assert_eq!(
                            selected(&fast),
                            selected(&slow),
                            "seed {seed} {metric} smooth {smooth} floor {floor}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let spec = MapSpec {
        classes: 19,
        height: 256,
        width: 320,
        grid: 9,
        sharpness: 2.5,
        present: 6,
    };
    let probs = softmax_map(&spec, 7);
    let shape = [1, 19, 256, 320];
    for (metric, output_mode) in [
        (Metric::Dice, OutputMode::Multiclass),
        (Metric::Iou, OutputMode::Multilabel),
    ] {
        let options = PredictOptions {
            metric,
            output_mode,
            ..PredictOptions::default()
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| predict(&ProbMap::new(&probs, &shape).unwrap(), &options).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one, run(8));
    }
}

#[test]
fn sort_order_matches_torch_including_ties() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sort");
    for name in ["uniform", "eighths", "few_values", "short"] {
        let values = match rankseg::tensor_io::read_probs(&dir.join(format!("{name}.values.npy"))).unwrap() {
            rankseg::tensor_io::ProbArray::F32(v, _) => v,
            _ => panic!("{name}: expected float32 values"),
        };
        let expected = rankseg::tensor_io::read_ints(&dir.join(format!("{name}.order.npy")))
            .unwrap()
            .data;
        let ours: Vec<i64> = torch_sort_order(&values).into_iter().map(i64::from).collect();
        assert_eq!(ours, expected, "{name}");
    }
}
