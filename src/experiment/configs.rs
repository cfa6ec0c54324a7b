//! The yamls of one run, found, parsed and checked against each other.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::data::DataConfig;
use crate::config::predict::PredictConfig;
use crate::config::test::TestConfig;
use crate::config::training::{LossConfig, OptimConfig, ScheduleConfig};
use crate::config::{self, Kind, Source};
use crate::models::ModelYaml;
use crate::runner::run_json::YamlRecord;

/// The config names (or paths) a run was given, one per `--*_yaml` flag.
#[derive(Clone, Debug)]
pub struct YamlNames {
    pub model: Option<String>,
    pub data: String,
    pub loss: String,
    pub schedule: String,
    pub optim: String,
    pub test: String,
    pub predict: String,
}

/// A parsed config beside its source and its values as resolved (defaults filled in).
pub struct Loaded<T> {
    pub source: Source,
    pub value: T,
    pub resolved: serde_json::Value,
}

impl<T> Loaded<T> {
    pub fn record(&self) -> YamlRecord {
        YamlRecord {
            name: self.source.name.clone(),
            origin: self.source.origin.clone(),
            values: self.resolved.clone(),
        }
    }
}

/// Every config of a run.
pub struct Configs {
    pub data: Loaded<DataConfig>,
    pub test: Loaded<TestConfig>,
    pub predict: Loaded<PredictConfig>,
    pub loss: Loaded<LossConfig>,
    pub schedule: Loaded<ScheduleConfig>,
    pub optim: Loaded<OptimConfig>,
    pub model: Option<Loaded<ModelYaml>>,
}

fn find(kind: Kind, spec: &str) -> Result<Source> {
    config::find(kind, spec).with_context(|| format!("--{}", kind.flag()))
}

fn load<T: serde::de::DeserializeOwned + Serialize>(kind: Kind, spec: &str) -> Result<Loaded<T>> {
    let source = find(kind, spec)?;
    let value: T = source.parse()?;
    let resolved = serde_json::to_value(&value)?;
    Ok(Loaded {
        source,
        value,
        resolved,
    })
}

impl Configs {
    pub fn load(names: &YamlNames) -> Result<Self> {
        let data: Loaded<DataConfig> = load(Kind::Datas, &names.data)?;
        data.value
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", data.source.origin))?;
        let test: Loaded<TestConfig> = load(Kind::Test, &names.test)?;
        test.value
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", test.source.origin))?;
        let predict_source = find(Kind::Predict, &names.predict)?;
        let predict_value = PredictConfig::from_yaml(&predict_source.text)
            .with_context(|| format!("{}: invalid config", predict_source.origin))?;
        predict_value
            .check(data.value.num_classes)
            .with_context(|| format!("{} with {}", predict_source.origin, data.source.origin))?;
        let predict = Loaded {
            resolved: predict_value.resolved.clone(),
            source: predict_source,
            value: predict_value,
        };
        let loss: Loaded<LossConfig> = load(Kind::Losses, &names.loss)?;
        // Resolved now so a loss yaml's bad key or value fails before any work, naming the file.
        crate::train::loss::LossSpec::from_config(&loss.value, data.value.num_classes)
            .with_context(|| format!("{} with {}", loss.source.origin, data.source.origin))?;
        Ok(Configs {
            loss,
            schedule: load(Kind::Schedules, &names.schedule)?,
            optim: load(Kind::Optims, &names.optim)?,
            model: names
                .model
                .as_deref()
                .map(|spec| load(Kind::Models, spec))
                .transpose()?,
            data,
            test,
            predict,
        })
    }

    /// Every config by its flag, as the run used it.
    pub fn records(&self) -> Vec<(&'static str, YamlRecord)> {
        let mut records = vec![
            (Kind::Datas.flag(), self.data.record()),
            (Kind::Test.flag(), self.test.record()),
            (Kind::Predict.flag(), self.predict.record()),
            (Kind::Losses.flag(), self.loss.record()),
            (Kind::Schedules.flag(), self.schedule.record()),
            (Kind::Optims.flag(), self.optim.record()),
        ];
        if let Some(model) = &self.model {
            records.push((Kind::Models.flag(), model.record()));
        }
        records
    }

    /// Input channels the data gives the model (1 for CT slices unless the yaml says).
    pub fn in_channels(&self) -> usize {
        let data = &self.data.value;
        data.in_channels
            .unwrap_or(if data.dataset.medical() { 1 } else { 3 })
    }
}
