//! Model families: each builds graphs of its kind from a configuration and recognises a
//! checkpoint of its kind that carries no graph (a state dict as users have it) from its tensor
//! names and shapes. A new family is one new module here plus one line in [`FAMILIES`].

pub mod bert;
pub mod scenenet;

use crate::graph::parse_task_list;
use crate::graph::{Model, TaskKind};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// Tensor name -> shape, as a checkpoint's header lists them.
pub type TensorShapes<'a> = BTreeMap<&'a str, &'a [usize]>;

/// How to interpret a checkpoint that has no `cut.graph` (for example a converted reference state dict).
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub task_names: Option<Vec<String>>,
    pub task_kinds: Option<Vec<TaskKind>>,
    /// The folder holding the checkpoint (set by the reader), where a family finds the files that
    /// travel with a model (a Hugging Face `config.json`, `labels.json`).
    pub folder: Option<std::path::PathBuf>,
    /// Per-sample sizes by input name for an ONNX file's symbolic dimensions (`--input
    /// NAME:SIZE`); the name "" stands for a file's only input.
    pub input_sizes: BTreeMap<String, Vec<usize>>,
    /// How image files become the image input, as the user states it (`--mean`, `--std`, `--bgr`,
    /// `--pixel-range`): recorded on the model as loaded, in place of what it records.
    pub normalisation: Option<crate::graph::Normalisation>,
}

impl LoadOptions {
    /// How to read a checkpoint without a cut graph, from `--task-names` ("a,b") and
    /// `--task-kinds` (kinds in head order, "k1,k2", or names with kinds, "a:k1,b:k2").
    pub fn from_flags(task_names: Option<&str>, task_kinds: Option<&str>) -> Result<LoadOptions> {
        let (named, task_kinds) = match task_kinds {
            Some(text) => parse_task_kinds(text)?,
            None => (None, None),
        };
        if named.is_some() && task_names.is_some() {
            crate::usage_bail!("--task-kinds name:kind pairs name the tasks already: drop --task-names");
        }
        Ok(LoadOptions {
            task_names: named.or_else(|| task_names.map(parse_task_list)),
            task_kinds,
            ..Default::default()
        })
    }
}

impl LoadOptions {
    /// `--input NAME:3x224x224` or `--input 3x224x224` (repeated) as per-sample sizes by input
    /// name ("" for the unnamed one).
    pub fn parse_input_sizes(items: &[String]) -> Result<BTreeMap<String, Vec<usize>>> {
        let mut sizes = BTreeMap::new();
        for item in items {
            let (name, size) = item.rsplit_once(':').unwrap_or(("", item));
            let Some(dims) = parse_dims(size) else {
                crate::usage_bail!(
                    "--input '{item}': expected NAME:CxHxW, NAME:L or CxHxW (sizes positive, joined by x)"
                );
            };
            if sizes.insert(name.to_string(), dims).is_some() {
                let which = if name.is_empty() { "an unnamed size" } else { name };
                crate::usage_bail!("--input gives {which} twice");
            }
        }
        Ok(sizes)
    }
}

/// Positive sizes joined by x ("3x224x224", "128"), or `None`.
fn parse_dims(text: &str) -> Option<Vec<usize>> {
    text.split('x')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect::<Option<Vec<usize>>>()
        .filter(|d| !d.is_empty())
}

/// An image size: "3x480x640", or "480x640" taking `channels`.
pub fn parse_image_size(text: &str, channels: usize) -> Result<[usize; 3]> {
    let parts: Vec<usize> = text
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--input '{text}': expected CxHxW such as 3x480x640"))?;
    match parts.as_slice() {
        [c, h, w] if *c > 0 && *h > 0 && *w > 0 => Ok([*c, *h, *w]),
        [h, w] if *h > 0 && *w > 0 => Ok([channels, *h, *w]),
        _ => crate::usage_bail!("--input '{text}': expected CxHxW such as 3x480x640"),
    }
}

/// `--task-kinds`: "k1,k2" (kinds in head order) or "a:k1,b:k2" (names with kinds).
type TaskKinds = (Option<Vec<String>>, Option<Vec<TaskKind>>);

fn parse_task_kinds(text: &str) -> Result<TaskKinds> {
    let items = parse_task_list(text);
    let pairs: Vec<Option<(&str, &str)>> = items.iter().map(|i| i.split_once(':')).collect();
    if pairs.iter().all(Option::is_some) && !pairs.is_empty() {
        let mut names = Vec::new();
        let mut kinds = Vec::new();
        for (name, kind) in pairs.into_iter().flatten() {
            if name.is_empty() || names.iter().any(|n| n == name) {
                crate::usage_bail!("--task-kinds '{text}': each task named once, as name:kind");
            }
            names.push(name.to_string());
            kinds.push(TaskKind::parse(kind).context("--task-kinds")?);
        }
        return Ok((Some(names), Some(kinds)));
    }
    if pairs.iter().any(Option::is_some) {
        crate::usage_bail!("--task-kinds '{text}': give every task as name:kind, or only kinds in head order");
    }
    let kinds = items
        .iter()
        .map(|k| TaskKind::parse(k))
        .collect::<Result<Vec<_>>>()
        .context("--task-kinds")?;
    Ok((None, Some(kinds)))
}

/// A model read from a checkpoint, with what was guessed on the way.
pub struct LoadedModel {
    pub model: Model,
    pub warnings: Vec<String>,
    /// True when the graph was inferred from tensor names rather than read from metadata.
    pub inferred: bool,
    /// Tensors of the file the family knowingly leaves unread (position ids, an unused pooler).
    pub ignored: Vec<String>,
}

/// One model family.
pub trait Family: Sync {
    /// The name `cut new --family` and the graph's `family` field use.
    fn name(&self) -> &'static str;
    /// A model from a family-specific configuration (JSON).
    fn build(&self, config: &serde_json::Value) -> Result<Model>;
    /// Whether a checkpoint without a graph has this family's tensor names.
    fn recognises(&self, shapes: &TensorShapes) -> bool;
    /// What [`Family::recognises`] looks for, for the message when nothing matches.
    fn signature(&self) -> &'static str;
    /// The graph such a checkpoint holds, inferred from names and shapes.
    fn infer(&self, shapes: &TensorShapes, opts: &LoadOptions) -> Result<LoadedModel>;
    /// How image files become the family's image input, for a checkpoint that does not record it
    /// (one written before graphs recorded it).
    fn image_normalisation(&self) -> Option<crate::graph::Normalisation> {
        None
    }
}

/// Records the family's image normalisation on a graph of a known family that records none.
pub fn fill_image_normalisation(graph: &mut crate::graph::Graph) -> Result<()> {
    if graph.image_normalisation().is_some() {
        return Ok(());
    }
    let family = graph
        .family
        .as_deref()
        .and_then(|name| FAMILIES.iter().find(|f| f.name() == name));
    match family.and_then(|f| f.image_normalisation()) {
        Some(norm) => graph.set_image_normalisation(&norm),
        None => Ok(()),
    }
}

/// Every family `cut` knows.
pub const FAMILIES: &[&dyn Family] = &[&scenenet::SceneNet, &bert::Bert];

/// The family of that name.
pub fn find(name: &str) -> Result<&'static dyn Family> {
    match FAMILIES.iter().find(|f| f.name() == name) {
        Some(f) => Ok(*f),
        None => {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.name()).collect();
            crate::usage_bail!("unknown model family '{name}' (cut knows: {})", known.join(", "))
        }
    }
}

/// The model a checkpoint without a graph holds, from the first family that recognises its
/// tensor names; `no_graph` starts the message when none does.
pub fn recognise(shapes: &TensorShapes, opts: &LoadOptions, no_graph: &str) -> Result<LoadedModel> {
    match FAMILIES.iter().find(|f| f.recognises(shapes)) {
        Some(f) => f.infer(shapes, opts),
        None => {
            let tried: Vec<String> = FAMILIES
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.signature()))
                .collect();
            bail!(
                "{no_graph}, and the tensor names are not those of a model family cut knows ({})",
                tried.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_kind_flags() {
        let o = LoadOptions::from_flags(Some("a,b"), Some("segmentation,depth")).unwrap();
        assert_eq!(o.task_names, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(o.task_kinds, Some(vec![TaskKind::Segmentation, TaskKind::Depth]));
        let o = LoadOptions::from_flags(None, Some("pos:token, genre:sequence-mean")).unwrap();
        assert_eq!(o.task_names, Some(vec!["pos".to_string(), "genre".to_string()]));
        assert_eq!(o.task_kinds, Some(vec![TaskKind::Token, TaskKind::SequenceMean]));
        for (names, kinds, message) in [
            (None, "pos:token,depth", "give every task as name:kind"),
            (None, "pos:token,pos:sequence", "each task named once"),
            (Some("a"), "a:token", "drop --task-names"),
            (None, "pos:tokn", "unknown task kind 'tokn'"),
        ] {
            let err = format!("{:#}", LoadOptions::from_flags(names, Some(kinds)).unwrap_err());
            assert!(err.contains(message), "{err} / {message}");
        }
    }
}
