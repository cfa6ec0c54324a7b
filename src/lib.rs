//! rankseg: metric-optimal segmentation predictors (RankSEG) and the harness that
//! reproduces the RankSEG papers' tables.
//!
//! Data flows one way: probabilities -> [`predict`] -> [`metrics`] -> [`report`].

pub mod ablation;
pub mod atomic;
pub mod cli;
pub mod configs;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod report;
pub mod synthetic;
pub mod tensor_io;
