//! Model families: each builds graphs of its kind from a configuration and recognises a
//! checkpoint of its kind that carries no graph (a state dict as users have it) from its tensor
//! names and shapes. A new family is one new module here plus one line in [`FAMILIES`].

pub mod bert;
pub mod scenenet;

use crate::graph::{Model, TaskKind};
use anyhow::{bail, Result};
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
