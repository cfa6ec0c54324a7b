use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::predict::{
    self, Metric, OutputMode, PredictOptions, Prediction, Prob, ProbMap, Solver, UnassignedPolicy,
};
use crate::tensor_io::{open_probs, write_npy_pod, ProbSlice};

#[derive(Args)]
pub struct PredictArgs {
    /// Probabilities, (B, C, *spatial) float32 or float64, C order.
    #[arg(long)]
    probs: PathBuf,
    /// Where to write the prediction (.npy); nothing is written on error.
    #[arg(long)]
    out: PathBuf,
    /// argmax, threshold, rma, ba, trna, ba+trna or exact.
    #[arg(long, default_value = "rma")]
    solver: Solver,
    /// The metric RMA optimises (argmax and threshold ignore it).
    #[arg(long, default_value = "dice")]
    metric: Metric,
    /// multiclass: an int64 class map (B, *spatial); multilabel: uint8 0/1 masks (B, C, *spatial).
    #[arg(long, default_value = "multiclass")]
    output_mode: OutputMode,
    /// The smoothing term of the Dice/IoU being optimised.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    smooth: f64,
    /// Classes whose largest probability is at most this select nothing.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pruning_prob: f64,
    /// Multiclass RMA, pixels no class selected: max_score (best incremental score among the
    /// active classes) or void (--void-index).
    #[arg(long, default_value = "max_score")]
    unassigned_policy: UnassignedPolicy,
    /// The label of unassigned pixels under --unassigned-policy void (outside 0..C).
    #[arg(long, default_value_t = predict::DEFAULT_VOID_INDEX, allow_negative_numbers = true)]
    void_index: i64,
    /// BA/TRNA: tail mass left out of the refined-normal interval [default: 1e-4].
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// cpu, or cuda / cuda:N (a build with the `cuda` feature: argmax class maps and
    /// threshold masks run on the GPU, float32 input).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let options = PredictOptions {
        solver: args.solver,
        metric: args.metric,
        output_mode: args.output_mode,
        smooth: args.smooth,
        pruning_prob: args.pruning_prob,
        unassigned_policy: args.unassigned_policy,
        void_index: args.void_index,
        eps: args.eps,
    };
    let probs = open_probs(&args.probs)?;
    let shape = probs.shape().to_vec();
    let device = crate::models::device(&args.device)?;
    let prediction = match probs.view() {
        ProbSlice::F32(data) if !device.is_cpu() => crate::gpu::predict_on(&device, data, &shape, &options),
        ProbSlice::F64(_) if !device.is_cpu() => {
            anyhow::bail!(
                "--device {}: float64 probabilities run on the CPU only (cast to float32)",
                args.device
            )
        }
        ProbSlice::F32(data) => run_typed(data, &shape, &options),
        ProbSlice::F64(data) => run_typed(data, &shape, &options),
    }
    .with_context(|| format!("cannot predict from {}", args.probs.display()))?;
    match prediction {
        Prediction::ClassMap(classes) => {
            let out_shape: Vec<usize> = [shape[0]].into_iter().chain(shape[2..].iter().copied()).collect();
            write_npy_pod(&args.out, &out_shape, &classes)
        }
        Prediction::Masks(masks) => write_npy_pod(&args.out, &shape, &masks),
    }
}

fn run_typed<T: Prob>(data: &[T], shape: &[usize], options: &PredictOptions) -> Result<Prediction> {
    let map = ProbMap::new(data, shape)?;
    Ok(predict::predict(&map, options)?)
}
