//! Training building blocks (issue 12): differentiable versions of the ops whose candle
//! forward has no backward, BatchNorm in train mode, torch's optimizers over parameter
//! groups, the experiment's per-iteration learning-rate schedule and the losses (`loss`).
//! The training loop itself (`rankseg exp` without `--test-only`) builds on these.
//!
//! One iteration of `train.py` with these pieces:
//!
//! ```text
//! let mut opt = Optimizer::new(from_config::rule(&optim)?, optim::segmentor_groups(..))?;
//! let mut sched = LambdaLr::new(from_config::schedule(&optim, &schedule, train_iters)?, &mut opt)?;
//! // per batch:
//! let loss = model.forward_loss(&image, &label)?;  // BatchNorm via batch_norm2d_train
//! opt.step(&loss.backward()?)?;                      // at the rates of lambda(k - 1)
//! sched.step(&mut opt)?;
//! ```
//!
//! The custom ops have CPU kernels only (float32, and float64 for the finite-difference
//! checks); on another device they fail with candle's "no cuda implementation" error.

pub mod batch_norm;
pub mod checkpoint;
pub mod conv;
pub mod conv_bn;
pub mod from_config;
pub mod gradcheck;
pub(crate) mod kernel;
pub mod log;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod residual;
pub mod schedule;
pub mod softmax;
pub mod store;
pub mod upsample;

pub use batch_norm::{batch_norm2d_train, BatchNormStats};
pub use norm::{layer_norm, rms_norm};
pub use optim::{Optimizer, ParamGroup, ParamState, Rule};
pub use pool::{avg_pool2d, max_pool2d, Pool2d};
pub use schedule::{LambdaLr, WarmupPoly};
pub use softmax::softmax_last_dim;
pub use upsample::upsample_bilinear2d;
