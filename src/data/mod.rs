//! Data: the NYUv2 3-task layout reader, its splits, a background batch loader, and the synthetic
//! scene generator that writes the same layout.

pub mod arrays;
pub mod example;
pub mod images;
pub mod layout;
pub mod loader;
pub mod synth;
pub mod teacher;
pub mod text;
pub mod unlabelled;

use anyhow::{bail, Context, Result};
use example::{Samples, Subset, Values};
use layout::{DatasetIndex, Item, INDEX_FILE};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training list minus the validation share.
    Train,
    /// A deterministic share of the training list, held out for model selection.
    Val,
    Test,
}

crate::choices!(Split { Train => "train", Val => "val", Test => "test" });

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// A dataset: its training and test lists, whatever the files behind them.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub root: PathBuf,
    /// What names the dataset in messages (its index file, or its folder).
    pub index_path: PathBuf,
    pub train: Samples,
    pub test: Samples,
    /// A validation list of its own (a text dataset's `val.jsonl`); without one, validation is
    /// carved out of `train`.
    pub val: Option<Samples>,
}

/// Fixed seed of the train/validation carve: the split must not change with the training seed.
const VAL_SPLIT_SEED: u64 = 0x5_EED0_F5A1;

impl Dataset {
    /// Opens `root`, reading `index` (default `nyu_v2_3task.json`) inside it; its images become
    /// inputs by `norm`.
    pub fn open(root: &Path, index: Option<&str>, norm: &crate::graph::Normalisation) -> Result<Dataset> {
        let (index_path, train, test) = read_index(root, index, norm)?;
        Ok(Dataset {
            root: root.to_path_buf(),
            index_path,
            train: Arc::new(train),
            test: Arc::new(test),
            val: None,
        })
    }

    /// The items of a split. Validation is the dataset's own list when it has one; otherwise a
    /// deterministic `val_fraction` of the training list (at least one item when the fraction is
    /// positive), and train is the rest.
    pub fn split(&self, split: Split, val_fraction: f64) -> Result<Samples> {
        if !(0.0..1.0).contains(&val_fraction) {
            crate::usage_bail!("--val-fraction {val_fraction} must be in [0, 1)");
        }
        let items: Samples = match (split, &self.val) {
            (Split::Test, _) => self.test.clone(),
            (Split::Train, Some(_)) => self.train.clone(),
            (Split::Val, Some(val)) => val.clone(),
            (Split::Train | Split::Val, None) => {
                let count = self.train.count();
                let mut order: Vec<usize> = (0..count).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(VAL_SPLIT_SEED));
                let n_val = if val_fraction > 0.0 {
                    ((count as f64 * val_fraction).round() as usize).max(1)
                } else {
                    0
                };
                let mut chosen: Vec<usize> = if split == Split::Val {
                    order[..n_val.min(order.len())].to_vec()
                } else {
                    order[n_val.min(order.len())..].to_vec()
                };
                chosen.sort_unstable();
                Arc::new(Subset {
                    source: self.train.clone(),
                    indices: chosen,
                })
            }
        };
        if items.count() == 0 {
            bail!("{}: the {} split is empty", self.index_path.display(), split.as_str());
        }
        Ok(items)
    }
}

/// The NYUv2-layout items of `root`'s index (default `nyu_v2_3task.json`), their images read by
/// `norm`: the index's path, the training items and the test items.
pub fn read_index(
    root: &Path,
    index: Option<&str>,
    norm: &crate::graph::Normalisation,
) -> Result<(PathBuf, Vec<Item>, Vec<Item>)> {
    if !root.is_dir() {
        bail!("{}: dataset folder does not exist", root.display());
    }
    let index_path = root.join(index.unwrap_or(INDEX_FILE));
    let text = crate::fsio::read_input_text(&index_path, crate::fsio::limit::JSON, "the dataset index")?;
    let parsed: DatasetIndex = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a dataset index ({{\"train\": [[img, seg, normal, depth], ...], \"test\": [...]}})",
            index_path.display()
        )
    })?;
    let items = |list: &[[String; 4]]| -> Vec<Item> {
        list.iter()
            .map(|[i, s, n, d]| Item {
                image: root.join(i),
                seg: root.join(s),
                normal: root.join(n),
                depth: root.join(d),
                norm: norm.clone(),
            })
            .collect()
    };
    let (train, test) = (items(&parsed.train), items(&parsed.test));
    Ok((index_path, train, test))
}

/// Where a job's data comes from and how it is batched, the same for every command that reads a
/// dataset.
#[derive(Clone, Debug)]
pub struct DataSettings {
    /// The dataset folder and its index file name, when given.
    pub folder: Option<(std::path::PathBuf, String)>,
    /// The share of the training list held out as the validation split.
    pub val_fraction: f64,
    pub batch: usize,
    /// Text data: the most tokens per line.
    pub max_len: Option<usize>,
    /// A folder of images: the (height, width) they are resized to; default the model's input.
    pub resize: Option<[usize; 2]>,
}

impl DataSettings {
    /// The dataset in the form `model` reads ([`open_for`]), when a folder is given; its
    /// warnings go to `warn`.
    pub fn open(&self, model: &crate::graph::Model, warn: &mut dyn FnMut(&str)) -> Result<Option<Dataset>> {
        let Some((dir, index)) = &self.folder else {
            return Ok(None);
        };
        let (data, warnings) = open_with(model, dir, Some(index), self.max_len, self.resize)?;
        for w in &warnings {
            warn(w);
        }
        Ok(Some(data))
    }

    /// [`DataSettings::open`], with the folder required `why` ("to train").
    pub fn require(&self, model: &crate::graph::Model, why: &str, warn: &mut dyn FnMut(&str)) -> Result<Dataset> {
        match self.open(model, warn)? {
            Some(d) => Ok(d),
            None => crate::usage_bail!("--data DIR is required {why}"),
        }
    }
}

/// The longest text line kept when `--max-len` is not given, unless the model's position table
/// holds fewer tokens.
pub const DEFAULT_MAX_LEN: usize = 128;

/// The dataset at `root` in the form `model` reads: text (`train.jsonl`, `test.jsonl`, tokenized
/// with the model's tokenizer, at most `max_len` tokens: by default [`DEFAULT_MAX_LEN`] or the
/// model's position table if shorter) for a model with token ids, else the NYUv2 layout through
/// `index`. Also returns warnings for the user.
pub fn open_for(
    model: &crate::graph::Model,
    root: &Path,
    index: Option<&str>,
    max_len: Option<usize>,
) -> Result<(Dataset, Vec<String>)> {
    open_with(model, root, index, max_len, None)
}

/// [`open_for`], and for any other `root` than a labelled dataset: unlabelled data (see
/// [`unlabelled`]), its images resized to `resize` (default the model's input size).
pub fn open_with(
    model: &crate::graph::Model,
    root: &Path,
    index: Option<&str>,
    max_len: Option<usize>,
    resize: Option<[usize; 2]>,
) -> Result<(Dataset, Vec<String>)> {
    if max_len.is_some_and(|n| n < 2) {
        crate::usage_bail!("--max-len must be at least 2 (the special tokens)");
    }
    if resize.is_some_and(|[h, w]| h == 0 || w == 0) {
        crate::usage_bail!("--resize needs a positive height and width, such as 224x224");
    }
    use crate::graph::InputRole;
    let Some(ids) = model.graph.input_named_by(InputRole::TokenIds) else {
        if !root.exists() {
            bail!("{}: dataset folder does not exist", root.display());
        }
        // A folder without the default index is unlabelled data; an index named otherwise must exist.
        let named = index.is_some_and(|i| i != layout::INDEX_FILE);
        if named || root.join(index.unwrap_or(layout::INDEX_FILE)).exists() {
            let norm = image_normalisation(&model.graph);
            return Ok((Dataset::open(root, index, &norm)?, Vec::new()));
        }
        return open_unlabelled(&model.graph, root, resize);
    };
    let Some(tokenizer) = &model.tokenizer else {
        // Token ids as arrays need no tokenizer (an imported text model carries none).
        if unlabelled::holds_arrays(root) {
            return open_unlabelled(&model.graph, root, resize);
        }
        bail!("the model reads text but carries no tokenizer: put its tokenizer.json beside model.safetensors, or give token ids as .npz");
    };
    // A split's device part outputs features, which have no labels to read.
    let labelled: Vec<crate::graph::TaskSpec> = model.tasks.iter().filter(|t| t.kind.has_labels()).cloned().collect();
    let positions = model.graph.max_tokens();
    let max_len = max_len.unwrap_or_else(|| positions.map_or(DEFAULT_MAX_LEN, |p| p.min(DEFAULT_MAX_LEN)));
    let (data, stats) = text::open(
        root,
        &text::TextOptions {
            tokenizer,
            tasks: &labelled,
            max_len,
            positions,
            ids,
            mask: model.graph.input_named_by(InputRole::AttentionMask),
        },
    )?;
    let mut warnings = Vec::new();
    if stats.truncated > 0 {
        warnings.push(format!(
            "{} of {} lines are longer than --max-len {max_len} tokens and were truncated",
            stats.truncated, stats.lines
        ));
    }
    Ok((data, warnings))
}

/// Unlabelled data for `graph` at `root`, with a warning when its images are read with no
/// normalisation the model records.
fn open_unlabelled(
    graph: &crate::graph::Graph,
    root: &Path,
    resize: Option<[usize; 2]>,
) -> Result<(Dataset, Vec<String>)> {
    let guessed = std::cell::Cell::new(false);
    let reading = || {
        let norm = graph.image_normalisation().cloned().unwrap_or_else(|| {
            guessed.set(true);
            crate::graph::Normalisation::default()
        });
        unlabelled::image_reading(graph, resize, norm)
    };
    let data = unlabelled::open(root, graph, &reading)?;
    let mut warnings = Vec::new();
    if guessed.get() {
        warnings.push(
            "the model records no input normalisation: images are read as RGB in [0, 1]; state it with --mean, --std, --bgr, --pixel-range".to_string(),
        );
    }
    Ok((data, warnings))
}

/// How the NYUv2 layout's images become `graph`'s image input: as the graph records, else the
/// reference's (the layout's own convention, which models written before graphs recorded it take).
pub fn image_normalisation(graph: &crate::graph::Graph) -> crate::graph::Normalisation {
    graph
        .image_normalisation()
        .cloned()
        .unwrap_or_else(layout::reference_normalisation)
}

/// The count of real (unpadded) tokens of every example of a text split, read from its input
/// `mask` (the graph's attention mask).
pub fn token_counts(items: &Samples, mask: &str) -> Result<Vec<usize>> {
    (0..items.count())
        .map(|i| {
            let example = items.load(i)?;
            let Some(field) = example.inputs.iter().find(|f| f.name == mask) else {
                bail!("{}: has no '{mask}' input to count tokens in", items.describe(i));
            };
            Ok(match &field.values {
                Values::I64(v) => v.iter().filter(|&&m| m != 0).count(),
                Values::F32(v) => v.iter().filter(|&&m| m != 0.0).count(),
            })
        })
        .collect()
}

/// The mean count of real (unpadded) tokens per example of a text split, rounded, at least 1.
pub fn mean_tokens(items: &Samples, mask: &str) -> Result<usize> {
    let counts = token_counts(items, mask)?;
    if counts.is_empty() {
        bail!("the calibration split is empty");
    }
    let total: usize = counts.iter().sum();
    Ok(((total as f64 / counts.len() as f64).round() as usize).max(1))
}
