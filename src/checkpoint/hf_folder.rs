//! A text encoder written back as a Hugging Face folder: `model.safetensors` (the graph's tensors
//! under their Hugging Face names, f32, with `{"format": "pt"}` metadata), `config.json`,
//! `tokenizer.json` and `labels.json`, so that the folder loads in `cut` (with `--task-kinds`) and
//! the encoder in `transformers`.

use super::format::{serialize, TensorBytes};
use super::DType;
use crate::families::bert::BertConfig;
use crate::graph::interpreter::Params;
use crate::graph::Model;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;

/// The folder's files, by name.
pub fn files(model: &Model, params: &Params) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let config = BertConfig::of_graph(&model.graph)?;
    let Some(tokenizer) = &model.tokenizer else {
        bail!("the model carries no tokenizer");
    };
    let mut tensors = model
        .graph
        .param_specs()
        .iter()
        .map(|spec| {
            let t = params
                .get(&spec.name)
                .ok_or_else(|| anyhow!("tensor '{}' is missing from the parameters", spec.name))?;
            TensorBytes::from_tensor(&spec.name, t, DType::F32)
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = serialize(
        &mut tensors,
        &BTreeMap::from([("format".to_string(), "pt".to_string())]),
    )?;
    let labels: BTreeMap<&str, Vec<String>> = model
        .tasks
        .iter()
        .map(|t| {
            let names = t
                .labels
                .clone()
                .unwrap_or_else(|| (0..t.outputs).map(|i| i.to_string()).collect());
            (t.name.as_str(), names)
        })
        .collect();
    let kinds: Vec<String> = model
        .tasks
        .iter()
        .map(|t| format!("{}:{}", t.name, t.kind.as_str()))
        .collect();
    let mut config_json = config.hugging_face_json();
    // Not read by transformers; says how to load the folder back into cut.
    config_json["cut_task_kinds"] = serde_json::Value::String(kinds.join(","));
    Ok(vec![
        ("model.safetensors", weights),
        ("config.json", serde_json::to_vec_pretty(&config_json)?),
        ("tokenizer.json", tokenizer.as_bytes().to_vec()),
        ("labels.json", serde_json::to_vec_pretty(&labels)?),
    ])
}
