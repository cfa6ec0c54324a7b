//! The configs shipped inside the binary (`configs/`), so that a name like
//! `--model segformer_b0_ade` works from any directory.

use include_dir::{include_dir, Dir};

static CONFIGS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/configs");

/// The text of `configs/models/NAME.yaml`, if shipped.
pub fn model_yaml(name: &str) -> Option<&'static str> {
    CONFIGS.get_file(format!("models/{name}.yaml"))?.contents_utf8()
}

/// The shipped model names, sorted.
pub fn model_names() -> Vec<String> {
    let mut names: Vec<String> = CONFIGS
        .get_dir("models")
        .map(|dir| {
            dir.files()
                .filter_map(|f| f.path().file_stem().and_then(|s| s.to_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
