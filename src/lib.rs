//! rankseg: metric-optimal segmentation predictors (RankSEG) and the harness that
//! reproduces the RankSEG papers' tables.
//!
//! Data flows one way: [`config`] -> [`data`] -> [`models`] -> probabilities ->
//! [`predict`] -> [`metrics`] -> [`runner`] results -> [`report`] tables; [`experiment`]
//! drives one `exp` run through them.

pub mod ablation;
pub mod atomic;
pub mod chart;
pub mod cli;
pub mod config;
pub mod data;
pub mod experiment;
pub mod gpu;
pub mod metrics;
pub mod models;
pub mod paths;
pub mod predict;
pub mod report;
pub mod runner;
mod simd;
pub mod synthetic;
pub mod tensor_io;
pub mod train;
