//! The training loader: per epoch a seeded shuffle, batches of `batch_size` with the last
//! partial one dropped (the experiment's `DataLoader(shuffle=True, drop_last=True)`), each
//! batch decoded and augmented by a pool of `workers` threads while the step runs, at most
//! `prefetch` ready batches waiting.
//!
//! Determinism: the order comes from (seed, epoch), and every sample's draws from a generator
//! of its own keyed by (seed, epoch, dataset index), so neither the thread count nor the
//! scheduling changes a batch. (torch's generator and Python's `random` cannot be matched.)

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::Draws;
use crate::data::Sample;

/// What the loader draws samples from (a [`super::TrainSet`], or a synthetic set in tests).
pub trait Source: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Input channels of every sample.
    fn channels(&self) -> usize;
    /// Sample `index`, augmented with draws taken from `rng` (its own generator).
    fn load(&self, index: usize, rng: &mut StdRng) -> Result<(Sample, Draws)>;
}

#[derive(Clone, Copy, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Decoding threads (the schedule yaml's `num_workers`; 0 still decodes on one thread
    /// of its own, ahead of the step).
    pub workers: usize,
    /// Ready batches allowed to wait for the step.
    pub prefetch: usize,
    pub seed: u64,
}

/// One batch, images (B, C, H, W) and labels (B, H, W) in row-major order.
#[derive(Clone, Debug)]
pub struct Batch {
    pub epoch: u64,
    /// Position of the batch in its epoch, from 0.
    pub index: usize,
    /// The dataset indices of its samples, in order.
    pub samples: Vec<usize>,
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub draws: Vec<Draws>,
}

pub struct Loader {
    source: Arc<dyn Source>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

/// Streams of the loader's generators, so that no two share a key.
const SHUFFLE: u64 = 1;
const SAMPLE: u64 = 2;

/// A ChaCha generator keyed by the whole tuple (no hashing that two tuples could share).
fn generator(seed: u64, stream: u64, epoch: u64, index: u64) -> StdRng {
    let mut key = [0u8; 32];
    for (i, word) in [seed, stream, epoch, index].into_iter().enumerate() {
        key[i * 8..(i + 1) * 8].copy_from_slice(&word.to_le_bytes());
    }
    StdRng::from_seed(key)
}

impl Loader {
    pub fn new(source: Arc<dyn Source>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if source.len() < config.batch_size {
            bail!(
                "{} training images make no full batch of {} (the last partial batch is dropped)",
                source.len(),
                config.batch_size
            );
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .context("cannot start the data loader's threads")?;
        Ok(Loader {
            source,
            config,
            pool: Arc::new(pool),
        })
    }

    /// `len(loader)` with `drop_last`.
    pub fn batches_per_epoch(&self) -> usize {
        self.source.len() / self.config.batch_size
    }

    /// The epoch's permutation of the dataset indices.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        order.shuffle(&mut generator(self.config.seed, SHUFFLE, epoch, 0));
        order
    }

    /// The epoch's batches, produced in the background from now on.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let (tx, rx) = sync_channel(self.config.prefetch);
        let (source, pool, config) = (self.source.clone(), self.pool.clone(), self.config);
        let order = self.order(epoch);
        let batches = self.batches_per_epoch();
        let worker = std::thread::Builder::new().name("loader".into()).spawn(move || {
            for (index, samples) in order.chunks_exact(config.batch_size).take(batches).enumerate() {
                let batch = pool.install(|| load_batch(&*source, &config, epoch, index, samples));
                let failed = batch.is_err();
                // A closed channel means the epoch was dropped: stop.
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        match worker {
            Ok(worker) => Epoch {
                rx: Some(rx),
                worker: Some(worker),
                error: None,
            },
            Err(e) => Epoch {
                rx: None,
                worker: None,
                error: Some(anyhow!("cannot start the data loader thread: {e}")),
            },
        }
    }
}

fn load_batch(
    source: &dyn Source,
    config: &LoaderConfig,
    epoch: u64,
    index: usize,
    samples: &[usize],
) -> Result<Batch> {
    let loaded: Vec<(Sample, Draws)> = samples
        .par_iter()
        .map(|&i| source.load(i, &mut generator(config.seed, SAMPLE, epoch, i as u64)))
        .collect::<Result<_>>()?;
    let (height, width) = (loaded[0].0.height, loaded[0].0.width);
    let channels = source.channels();
    let mut batch = Batch {
        epoch,
        index,
        samples: samples.to_vec(),
        images: Vec::with_capacity(samples.len() * channels * height * width),
        labels: Vec::with_capacity(samples.len() * height * width),
        channels,
        height,
        width,
        draws: Vec::with_capacity(samples.len()),
    };
    for (&i, (sample, draws)) in samples.iter().zip(loaded) {
        let pixels = sample.height * sample.width;
        if (sample.height, sample.width) != (height, width)
            || sample.input.len() != channels * pixels
            || sample.label.len() != pixels
        {
            bail!(
                "training sample {i} is {}x{} ({} input values), the batch's first {height}x{width}x{channels}",
                sample.height,
                sample.width,
                sample.input.len()
            );
        }
        batch.images.extend_from_slice(&sample.input);
        batch.labels.extend_from_slice(&sample.label);
        batch.draws.push(draws);
    }
    Ok(batch)
}

/// An epoch's batches in order; an error ends it. Dropping it stops the background work
/// (after the batch in progress).
pub struct Epoch {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    error: Option<anyhow::Error>,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        if let Ok(batch) = self.rx.as_ref()?.recv() {
            return Some(batch);
        }
        // The producer is gone: finished, or a panic in a worker (which must not pass for
        // a short epoch).
        self.rx = None;
        match self.worker.take()?.join() {
            Ok(()) => None,
            Err(panic) => Some(Err(anyhow!(
                "the data loader panicked: {}",
                panic_message(&*panic)
            ))),
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channel first makes a producer blocked on a full queue return.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}
