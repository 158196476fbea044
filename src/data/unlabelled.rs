//! Unlabelled data, for tasks distilled from the model itself (`crate::tasks::distill`): a folder
//! of images (any names and sizes, each resized to the model's input), a folder of `.npy` or `.npz`
//! files (one example each, arrays named by graph input), one `.npz` whose arrays hold one example
//! per row, or one `.jsonl` of texts. A folder with `train/` and `test/` subfolders gives its own
//! splits; otherwise a fixed share ([`HELD_BACK`]) of the examples, drawn by a fixed seed, is held
//! back as the test split.

use super::arrays::{field_of, read_npy, read_npz};
use super::example::{Example, Examples, Field, Samples, Subset, Values};
use super::Dataset;
use crate::graph::{Graph, InputRole, Normalisation};
use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The share of a folder without splits of its own held back as its test split.
pub const HELD_BACK: f64 = 0.2;
const HELD_BACK_SEED: u64 = 0x7E57_5EED;

/// How unlabelled images become the model's image input.
#[derive(Clone, Debug)]
pub struct ImageReading {
    /// The graph input the images feed.
    pub input: String,
    pub height: usize,
    pub width: usize,
    pub norm: Normalisation,
}

/// Image files, each one example of the image input.
struct ImageFiles {
    paths: Vec<PathBuf>,
    reading: ImageReading,
}

impl Examples for ImageFiles {
    fn count(&self) -> usize {
        self.paths.len()
    }
    fn load(&self, index: usize) -> Result<Example> {
        let r = &self.reading;
        let image = super::images::image_batch(&[&self.paths[index]], r.height, r.width, &r.norm)?.squeeze_dim(0);
        Ok(Example {
            inputs: vec![field_of(&r.input, &image)?],
            labels: Vec::new(),
        })
    }
    fn describe(&self, index: usize) -> String {
        self.paths[index].display().to_string()
    }
    fn labelled(&self) -> bool {
        false
    }
}

/// `.npy` or `.npz` files, each one example: arrays named by graph input (a `.npy` feeds the
/// graph's only input), with or without a leading axis of one.
struct ArrayFiles {
    paths: Vec<PathBuf>,
    inputs: Vec<(String, usize)>,
}

impl Examples for ArrayFiles {
    fn count(&self) -> usize {
        self.paths.len()
    }
    fn load(&self, index: usize) -> Result<Example> {
        let path = &self.paths[index];
        let arrays = if has_extension(path, &["npz"]) {
            read_npz(path)?
        } else {
            let [(only, _)] = self.inputs.as_slice() else {
                bail!(
                    "{}: a .npy file feeds a model with one input; this one reads {} (give .npz files)",
                    path.display(),
                    self.inputs.len()
                );
            };
            BTreeMap::from([(
                only.clone(),
                read_npy(path).with_context(|| path.display().to_string())?,
            )])
        };
        let inputs = self
            .inputs
            .iter()
            .map(|(name, rank)| {
                let Some(t) = arrays.get(name) else {
                    let given: Vec<&String> = arrays.keys().collect();
                    bail!("{}: has no array '{name}' (it has {given:?})", path.display());
                };
                let t = if t.dim() == rank + 1 && t.size()[0] == 1 {
                    t.squeeze_dim(0)
                } else {
                    t.shallow_clone()
                };
                if t.dim() != *rank {
                    bail!(
                        "{}: array '{name}' has shape {:?}; the model reads {rank} dimensions per example",
                        path.display(),
                        t.size()
                    );
                }
                field_of(name, &t)
            })
            .collect::<Result<_>>()?;
        Ok(Example {
            inputs,
            labels: Vec::new(),
        })
    }
    fn describe(&self, index: usize) -> String {
        self.paths[index].display().to_string()
    }
    fn labelled(&self) -> bool {
        false
    }
}

/// One `.npz` whose arrays hold one example per row.
struct ArrayRows {
    path: PathBuf,
    /// Each array whole, rows first.
    arrays: Vec<Field>,
    count: usize,
}

impl Examples for ArrayRows {
    fn count(&self) -> usize {
        self.count
    }
    fn load(&self, index: usize) -> Result<Example> {
        let row = |a: &Field| {
            let per_row: usize = a.shape[1..].iter().map(|&d| d as usize).product();
            let at = index * per_row..(index + 1) * per_row;
            Field {
                name: a.name.clone(),
                shape: a.shape[1..].to_vec(),
                values: match &a.values {
                    Values::F32(v) => Values::F32(v[at].to_vec()),
                    Values::I64(v) => Values::I64(v[at].to_vec()),
                },
            }
        };
        Ok(Example {
            inputs: self.arrays.iter().map(row).collect(),
            labels: Vec::new(),
        })
    }
    fn describe(&self, index: usize) -> String {
        format!("{} row {index}", self.path.display())
    }
    fn labelled(&self) -> bool {
        false
    }
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];
const ARRAY_EXTENSIONS: &[&str] = &["npy", "npz"];

/// `root` is one `.npz`, or a folder with `.npy`/`.npz` files (token ids for a text model that
/// carries no tokenizer).
pub fn holds_arrays(root: &Path) -> bool {
    if root.is_file() {
        return has_extension(root, &["npz"]);
    }
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| has_extension(&e.path(), ARRAY_EXTENSIONS))
    })
}

/// The files of `dir` (not its subfolders) with one of `extensions`, sorted by name.
fn files_in(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow!("{}: cannot read the folder ({e})", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| anyhow!("{}: {e}", dir.display()))?.path();
        if path.is_file() && has_extension(&path, extensions) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The per-example rank of each graph input.
fn input_ranks(graph: &Graph) -> Vec<(String, usize)> {
    graph.inputs.iter().map(|i| (i.name.clone(), i.dims.len())).collect()
}

/// The examples of one folder of files: images when it holds any, else arrays; `None` when it
/// holds neither.
fn folder_examples(dir: &Path, graph: &Graph, images: &dyn Fn() -> Result<ImageReading>) -> Result<Option<Samples>> {
    let image_files = files_in(dir, IMAGE_EXTENSIONS)?;
    if !image_files.is_empty() {
        return Ok(Some(Arc::new(ImageFiles {
            paths: image_files,
            reading: images()?,
        })));
    }
    let array_files = files_in(dir, ARRAY_EXTENSIONS)?;
    if !array_files.is_empty() {
        return Ok(Some(Arc::new(ArrayFiles {
            paths: array_files,
            inputs: input_ranks(graph),
        })));
    }
    Ok(None)
}

/// `all` split into a training list and the held-back test list ([`HELD_BACK`], at least one).
pub(super) fn hold_back(all: Samples) -> Result<(Samples, Samples)> {
    let count = all.count();
    if count < 2 {
        bail!(
            "{}: one example; hold-back and training need at least two",
            all.describe(0)
        );
    }
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(HELD_BACK_SEED));
    let held = ((count as f64 * HELD_BACK).round() as usize).clamp(1, count - 1);
    let (mut test, mut train) = (order[..held].to_vec(), order[held..].to_vec());
    test.sort_unstable();
    train.sort_unstable();
    let subset = |indices| -> Samples {
        Arc::new(Subset {
            source: all.clone(),
            indices,
        })
    };
    Ok((subset(train), subset(test)))
}

/// Unlabelled data at `root` (a folder, an `.npz` or a `.jsonl` handled by the caller) for
/// `graph`; `images` says how image files become its input, asked only when there are images.
pub fn open(root: &Path, graph: &Graph, images: &dyn Fn() -> Result<ImageReading>) -> Result<Dataset> {
    let shown = root.display();
    let (train, test) = if root.is_file() {
        if !has_extension(root, &["npz"]) {
            bail!("{shown}: give a folder, an .npz of inputs (one row per example) or a .jsonl of texts");
        }
        hold_back(array_rows(root, graph)?)?
    } else if root.join("train").is_dir() && root.join("test").is_dir() {
        let split = |name: &str| -> Result<Samples> {
            let dir = root.join(name);
            folder_examples(&dir, graph, images)?
                .ok_or_else(|| anyhow!("{}: no images (.png, .jpg) or arrays (.npy, .npz)", dir.display()))
        };
        (split("train")?, split("test")?)
    } else {
        match folder_examples(root, graph, images)? {
            Some(all) => hold_back(all)?,
            None => bail!(
                "{shown}: neither a dataset ({} or train.jsonl) nor a folder of images (.png, .jpg) or arrays (.npy, .npz)",
                super::layout::INDEX_FILE
            ),
        }
    };
    Ok(Dataset {
        root: root.to_path_buf(),
        index_path: root.to_path_buf(),
        train,
        test,
        val: None,
    })
}

/// The rows of one `.npz`: an array per graph input, each with one more (leading) axis than the
/// input has per example, all with one row count.
fn array_rows(path: &Path, graph: &Graph) -> Result<Samples> {
    let shown = path.display();
    let mut arrays = read_npz(path)?;
    let mut rows = Vec::new();
    for (name, rank) in input_ranks(graph) {
        let Some(t) = arrays.remove(&name) else {
            let given: Vec<&String> = arrays.keys().collect();
            bail!("{shown}: has no array '{name}' (it has {given:?})");
        };
        if t.dim() != rank + 1 {
            bail!(
                "{shown}: array '{name}' has shape {:?}; give one row per example of its {rank} dimensions",
                t.size()
            );
        }
        rows.push(field_of(&name, &t)?);
    }
    let count = rows[0].shape[0] as usize;
    if let Some(a) = rows.iter().find(|a| a.shape[0] as usize != count) {
        bail!(
            "{shown}: array '{}' has {} rows, '{}' {count}",
            a.name,
            a.shape[0],
            rows[0].name
        );
    }
    Ok(Arc::new(ArrayRows {
        path: path.to_path_buf(),
        arrays: rows,
        count,
    }))
}

/// `--resize HxW`: a positive height and width.
pub fn parse_resize(text: &str) -> std::result::Result<[usize; 2], String> {
    match text.split_once('x').map(|(h, w)| (h.trim().parse(), w.trim().parse())) {
        Some((Ok(h), Ok(w))) if h > 0 && w > 0 => Ok([h, w]),
        _ => Err(format!("'{text}': expected HxW such as 224x224")),
    }
}

/// How `graph` reads image files: into its image input at `resize` (height, width) or its own
/// size, normalised as it records, else as `fallback` says.
pub fn image_reading(graph: &Graph, resize: Option<[usize; 2]>, norm: Normalisation) -> Result<ImageReading> {
    let Some(input) = graph.input_named_by(InputRole::Image) else {
        bail!("the model reads no image");
    };
    let [channels, height, width] = graph.image_input()?;
    if channels != 3 {
        bail!("the model's image has {channels} channels; image files give 3");
    }
    let [height, width] = resize.unwrap_or([height, width]);
    Ok(ImageReading {
        input: input.to_string(),
        height,
        width,
        norm,
    })
}
