//! What a file `cut export` wrote records about its model in the ONNX metadata (task kinds and
//! labels under `cut.tasks`, image normalisation under `cut.normalise`), read back so that a
//! round trip through ONNX keeps them. Files from other exporters have neither key.

use crate::graph::onnx::proto::StringStringEntryProto;
use crate::graph::{Graph, Normalisation, TaskKind, TaskSpec};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;

pub const TASKS_KEY: &str = "cut.tasks";
pub const NORMALISE_KEY: &str = "cut.normalise";
/// A text model's tokenizer (its tokenizer.json), so that `cut` reads text for the file.
pub const TOKENIZER_KEY: &str = "cut.tokenizer";

#[derive(serde::Deserialize)]
struct RecordedTask {
    name: String,
    kind: String,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

fn field<'a>(props: &'a [StringStringEntryProto], key: &str) -> Option<&'a str> {
    props.iter().find(|p| p.key == key).map(|p| p.value.as_str())
}

/// Gives each task of kind `output` that `--task-kinds` left unnamed the kind and labels the file
/// records for it.
pub fn apply_tasks(
    props: &[StringStringEntryProto],
    tasks: &mut [TaskSpec],
    named: &BTreeMap<String, TaskKind>,
) -> Result<()> {
    let Some(text) = field(props, TASKS_KEY) else {
        return Ok(());
    };
    let recorded: Vec<RecordedTask> = serde_json::from_str(text).map_err(|e| anyhow!("metadata '{TASKS_KEY}': {e}"))?;
    for task in tasks.iter_mut().filter(|t| !named.contains_key(&t.name)) {
        if let Some(r) = recorded.iter().find(|r| r.name == task.name) {
            task.kind = TaskKind::parse(&r.kind).with_context(|| format!("metadata '{TASKS_KEY}'"))?;
            task.labels = r.labels.clone();
        }
    }
    Ok(())
}

/// Records on each input the normalisation the file states for it.
pub fn apply_normalisation(props: &[StringStringEntryProto], graph: &mut Graph) -> Result<()> {
    let Some(text) = field(props, NORMALISE_KEY) else {
        return Ok(());
    };
    let recorded: BTreeMap<String, Normalisation> =
        serde_json::from_str(text).map_err(|e| anyhow!("metadata '{NORMALISE_KEY}': {e}"))?;
    for (name, norm) in recorded {
        norm.check().with_context(|| format!("metadata '{NORMALISE_KEY}'"))?;
        let input = graph
            .inputs
            .iter_mut()
            .find(|i| i.name == name)
            .ok_or_else(|| anyhow!("metadata '{NORMALISE_KEY}' names '{name}', which is not an input"))?;
        input.normalise = Some(norm);
    }
    Ok(())
}

/// The metadata `cut export` writes for `graph`'s inputs (none when no input records one).
pub fn normalisation_entry(graph: &Graph) -> Result<Option<StringStringEntryProto>> {
    let recorded: BTreeMap<&str, &Normalisation> = graph
        .inputs
        .iter()
        .filter_map(|i| Some((i.name.as_str(), i.normalise.as_ref()?)))
        .collect();
    if recorded.is_empty() {
        return Ok(None);
    }
    Ok(Some(StringStringEntryProto {
        key: NORMALISE_KEY.into(),
        value: serde_json::to_string(&recorded)?,
    }))
}

/// The metadata `cut export` writes for a text model's tokenizer (none without one).
pub fn tokenizer_entry(model: &crate::graph::Model) -> Option<StringStringEntryProto> {
    model.tokenizer.as_ref().map(|t| StringStringEntryProto {
        key: TOKENIZER_KEY.into(),
        value: t.to_string(),
    })
}

/// The tokenizer a file records, if any.
pub fn tokenizer(props: &[StringStringEntryProto]) -> Option<std::sync::Arc<String>> {
    field(props, TOKENIZER_KEY).map(|t| std::sync::Arc::new(t.to_string()))
}
