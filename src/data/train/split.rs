//! The train splits, as the experiments' `get_image_list(train=True)` builds them: VOC's
//! `train_aug.txt` in its order; Cityscapes' `leftImg8bit/train/**/*.png`, ADE20K's
//! `images/training/*.jpg` and the LiTS / KiTS slices of the four folds not tested. Those
//! the experiment globs come in the directory's listing order, which no filesystem fixes:
//! we sort them (by path; CT slices by case then slice) so a seed means one order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::data::{DataConfig, DatasetKind};
use crate::data::medical::{case_and_slice, fold_cases};
use crate::data::{id_of, label_path, Entry};

pub fn entries(config: &DataConfig, data_dir: &Path) -> Result<Vec<Entry>> {
    let image = |input: PathBuf| Entry {
        id: id_of(&input, config.image_suffix.as_deref()),
        label: label_path(config, &input),
        input,
        case: None,
    };
    Ok(match config.dataset {
        DatasetKind::PascalVoc => voc(data_dir)?.into_iter().map(image).collect(),
        DatasetKind::Cityscapes => {
            let mut files = Vec::new();
            glob_recursive(&data_dir.join("cityscapes/leftImg8bit/train"), ".png", &mut files)?;
            files.sort();
            files.into_iter().map(image).collect()
        }
        DatasetKind::Ade20k => {
            let dir = data_dir.join("ade/ADEChallengeData2016/images/training");
            let mut files = glob(&dir, ".jpg")?;
            files.sort();
            files.into_iter().map(image).collect()
        }
        DatasetKind::Lits | DatasetKind::Kits => ct_slices(config, data_dir)?,
        DatasetKind::Probs => bail!("a `probs` dataset holds model outputs: there is nothing to train on"),
    })
}

/// `f"{data_dir}/VOCdevkit/VOC2012{line.split()[0]}"` per line: the first column is the
/// image (the label is found from it as at test time; the second column is not read).
fn voc(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let list = data_dir.join("VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt");
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("cannot read the VOC train list {} (see DATA.md)", list.display()))?;
    let root = data_dir.join("VOCdevkit/VOC2012");
    let mut images = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(image) = line.split_whitespace().next() else {
            continue;
        };
        if !image.starts_with('/') {
            bail!(
                "{} line {}: expected `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`, got {line:?}",
                list.display(),
                n + 1
            );
        }
        // String concatenation, as the experiment's f-string (the entry starts with '/').
        images.push(PathBuf::from(format!("{}{image}", root.display())));
    }
    Ok(images)
}

/// The slices whose case is outside the fold's validation cases, by (case, slice).
fn ct_slices(config: &DataConfig, data_dir: &Path) -> Result<Vec<Entry>> {
    let name = if config.dataset == DatasetKind::Lits {
        "lits"
    } else {
        "kits"
    };
    let val = fold_cases(config.fold.unwrap_or(0), config.num_cases.unwrap_or(0));
    let mut slices = Vec::new();
    for file in glob(&data_dir.join(name).join("train"), ".npz")? {
        let id = id_of(&file, Some(".npz"));
        let Some((case, slice)) = case_and_slice(&id) else {
            bail!(
                "{}: a slice file must be named <case>_<slice>.npz",
                file.display()
            );
        };
        if !val.contains(&(case as usize)) {
            let entry = Entry {
                id,
                label: file.clone(),
                input: file,
                case: Some(case),
            };
            slices.push(((case, slice), entry));
        }
    }
    slices.sort_by_key(|(key, _)| *key);
    Ok(slices.into_iter().map(|(_, e)| e).collect())
}

/// `glob(dir/*suffix)`: plain files, hidden names skipped as glob skips them.
fn glob(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in read_dir(dir)? {
        if entry.is_file() && matches(&entry, suffix) {
            files.push(entry);
        }
    }
    Ok(files)
}

/// `glob(dir/**/*suffix, recursive=True)`: `dir` itself and every non-hidden folder below.
fn glob_recursive(dir: &Path, suffix: &str, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in read_dir(dir)? {
        if entry.is_dir() && !hidden(&entry) {
            glob_recursive(&entry, suffix, files)?;
        } else if entry.is_file() && matches(&entry, suffix) {
            files.push(entry);
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot list {} (see DATA.md for the expected layout)",
            dir.display()
        )
    })?;
    listing
        .map(|e| {
            Ok(e.with_context(|| format!("cannot list {}", dir.display()))?
                .path())
        })
        .collect()
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn matches(path: &Path, suffix: &str) -> bool {
    !hidden(path) && path.to_string_lossy().ends_with(suffix)
}
