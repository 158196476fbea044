//! The `__metadata__` entries `cut` reads and writes: graph, tasks and provenance, as JSON strings.

use crate::graph::{Graph, Model, TaskSpec, GRAPH_FORMAT};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GRAPH_KEY: &str = "cut.graph";
pub const TASKS_KEY: &str = "cut.tasks";
/// A text model's `tokenizer.json`, as text.
pub const TOKENIZER_KEY: &str = "cut.tokenizer";
pub const PROVENANCE_KEY: &str = "cut.provenance";
/// "dense" (plain tensors) or "packed" (bitmask plus kept values); absent means dense.
pub const LAYOUT_KEY: &str = "cut.layout";

/// Where a file `cut` wrote came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub tool: String,
    pub version: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
}

impl Provenance {
    pub fn new(command: impl Into<String>, source_sha256: Option<String>) -> Provenance {
        Provenance {
            tool: "cut".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            source_sha256,
        }
    }
}

/// Metadata entries for a model and its provenance.
pub fn model_metadata(model: &Model, provenance: Option<&Provenance>) -> Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    meta.insert(GRAPH_KEY.to_string(), serde_json::to_string(&model.graph)?);
    meta.insert(TASKS_KEY.to_string(), serde_json::to_string(&model.tasks)?);
    if let Some(t) = &model.tokenizer {
        meta.insert(TOKENIZER_KEY.to_string(), t.to_string());
    }
    if let Some(p) = provenance {
        meta.insert(PROVENANCE_KEY.to_string(), serde_json::to_string(p)?);
    }
    Ok(meta)
}

/// Reads graph and tasks back from metadata and checks that they agree.
pub fn read_model(meta: &BTreeMap<String, String>) -> Result<Model> {
    let graph_text = meta
        .get(GRAPH_KEY)
        .ok_or_else(|| anyhow!("metadata has no '{GRAPH_KEY}'"))?;
    let version: serde_json::Value =
        serde_json::from_str(graph_text).with_context(|| format!("metadata field '{GRAPH_KEY}' is not JSON"))?;
    match version.get("format").and_then(|v| v.as_u64()) {
        Some(0) => bail!("metadata field '{GRAPH_KEY}' has format 0, not a version cut knows"),
        Some(v) if v <= u64::from(GRAPH_FORMAT) => {}
        Some(v) => bail!(
            "metadata field '{GRAPH_KEY}' has format {v}, newer than this cut reads ({GRAPH_FORMAT}); upgrade cut"
        ),
        None => bail!("metadata field '{GRAPH_KEY}' has no format version"),
    }
    if let Some(problem) = negative_count(&version) {
        bail!("metadata field '{GRAPH_KEY}': {problem}");
    }
    let graph: Graph = serde_json::from_value(version)
        .with_context(|| format!("metadata field '{GRAPH_KEY}' is not a valid graph"))?;
    let tasks_text = meta
        .get(TASKS_KEY)
        .ok_or_else(|| anyhow!("metadata has '{GRAPH_KEY}' but no '{TASKS_KEY}'"))?;
    let tasks: Vec<TaskSpec> = serde_json::from_str(tasks_text)
        .with_context(|| format!("metadata field '{TASKS_KEY}' is not a valid task list"))?;
    let tokenizer = meta.get(TOKENIZER_KEY).map(|t| std::sync::Arc::new(t.clone()));
    let model = Model {
        graph,
        tasks,
        tokenizer,
    };
    model
        .validate()
        .with_context(|| format!("metadata field '{GRAPH_KEY}'"))?;
    Ok(model)
}

pub fn read_provenance(meta: &BTreeMap<String, String>) -> Option<Provenance> {
    meta.get(PROVENANCE_KEY).and_then(|t| serde_json::from_str(t).ok())
}

/// A negative number where a graph holds counts and sizes, named by node and field (serde would
/// say only "expected usize" and a column).
fn negative_count(graph: &serde_json::Value) -> Option<String> {
    let negative = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_i64().is_some_and(|i| i < 0),
        serde_json::Value::Array(items) => items.iter().any(|i| i.as_i64().is_some_and(|i| i < 0)),
        _ => false,
    };
    for node in graph.get("nodes")?.as_array()? {
        let name = node.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        for (field, value) in node.as_object()? {
            if negative(value) {
                return Some(format!(
                    "graph node '{name}' has {field} {value}; sizes and counts cannot be negative"
                ));
            }
        }
    }
    for (section, value) in graph.as_object()? {
        let nested = value.as_object().into_iter().flat_map(|o| o.iter());
        for (field, v) in nested {
            if negative(v) {
                return Some(format!("graph {section} has {field} {v}; sizes cannot be negative"));
            }
        }
    }
    None
}
