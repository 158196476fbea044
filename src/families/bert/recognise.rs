//! Reads a Hugging Face encoder folder: the tensor names (bare or under one prefix such as `bert.`
//! or `roberta.`), `config.json` beside them (inferred from the shapes, with a warning, when
//! missing), the heads `heads.<task>.*`, `labels.json`, and the task kinds the user gives.

use super::{BertConfig, HeadConfig};
use crate::families::{LoadOptions, LoadedModel, TensorShapes};
use crate::graph::TaskKind;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

const WORDS: &str = "embeddings.word_embeddings.weight";

/// The prefix under which the encoder's tensors sit ("" when bare), if they are there.
pub fn prefix(shapes: &TensorShapes) -> Option<String> {
    shapes.keys().find_map(|name| {
        let p = name.strip_suffix(WORDS)?;
        // Bare, or one dotted prefix ("bert.", "roberta.", "encoder.").
        (p.is_empty() || (p.ends_with('.') && !p[..p.len() - 1].contains('.'))).then(|| p.to_string())
    })
}

fn shape<'a>(shapes: &'a TensorShapes, name: &str) -> Result<&'a [usize]> {
    shapes
        .get(name)
        .copied()
        .ok_or_else(|| anyhow!("tensor '{name}' is missing"))
}

/// The heads found: task -> (classes, two layers).
fn heads(shapes: &TensorShapes) -> BTreeMap<String, (usize, bool)> {
    let mut out = BTreeMap::new();
    for (name, s) in shapes {
        let Some(rest) = name.strip_prefix("heads.") else {
            continue;
        };
        if let Some(task) = rest.strip_suffix(".out_proj.weight") {
            out.insert(task.to_string(), (s[0], true));
        } else if let Some(task) = rest.strip_suffix(".weight") {
            if !task.contains('.') {
                out.insert(task.to_string(), (s[0], false));
            }
        }
    }
    out
}

pub fn infer(shapes: &TensorShapes, opts: &LoadOptions) -> Result<LoadedModel> {
    let p = prefix(shapes).ok_or_else(|| anyhow!("no tensor named '{WORDS}' (bare or under one prefix)"))?;
    let mut warnings = Vec::new();
    let words = shape(shapes, &format!("{p}{WORDS}"))?;
    let positions = shape(shapes, &format!("{p}embeddings.position_embeddings.weight"))?;
    let types = shapes.get(format!("{p}embeddings.token_type_embeddings.weight").as_str());
    let layers = (0..)
        .take_while(|i| shapes.contains_key(format!("{p}encoder.layer.{i}.attention.self.query.weight").as_str()))
        .count();
    if layers == 0 {
        bail!("no encoder layers (expected '{p}encoder.layer.0.attention.self.query.weight')");
    }
    let inner = shape(shapes, &format!("{p}encoder.layer.0.intermediate.dense.weight"))?;
    let folder = opts.folder.as_deref();
    let config_path = folder.map(|f| f.join("config.json"));
    // Task kinds a folder written by `cut export` records for itself.
    let mut recorded_kinds: Option<String> = None;
    let mut config: BertConfig = match config_path.as_ref().filter(|p| p.exists()) {
        Some(path) => {
            let text = crate::fsio::read_input_text(path, crate::fsio::limit::JSON, "the model configuration")?;
            let raw: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| anyhow!("{}: not JSON ({e})", path.display()))?;
            recorded_kinds = raw.get("cut_task_kinds").and_then(|v| v.as_str()).map(str::to_string);
            serde_json::from_value(raw).map_err(|e| anyhow!("{}: not an encoder config ({e})", path.display()))?
        }
        None => {
            let heads = (words[1] / 64).max(1);
            let roberta = positions[0] == 514;
            warnings.push(format!(
                "no config.json beside the model: sizes read from the tensors, {heads} attention heads of 64 assumed, {} positions; put the model's config.json there to be sure",
                if roberta { "RoBERTa" } else { "BERT" }
            ));
            BertConfig {
                model_type: if roberta { "roberta" } else { "bert" }.into(),
                vocab_size: words[0],
                hidden_size: words[1],
                num_hidden_layers: layers,
                num_attention_heads: heads,
                intermediate_size: inner[0],
                max_position_embeddings: positions[0],
                type_vocab_size: types.map_or(0, |s| s[0]),
                layer_norm_eps: 1e-12,
                hidden_act: "gelu".into(),
                pad_token_id: Some(if roberta { 1 } else { 0 }),
                hidden_dropout_prob: 0.1,
                prefix: String::new(),
                pooler: false,
                gamma_beta: false,
                heads: Vec::new(),
            }
        }
    };
    let shown = config_path
        .as_ref()
        .map_or("config.json".to_string(), |p| p.display().to_string());
    for (field, said, found, tensor) in [
        ("vocab_size", config.vocab_size, words[0], WORDS),
        ("hidden_size", config.hidden_size, words[1], WORDS),
        ("num_hidden_layers", config.num_hidden_layers, layers, "encoder.layer.N"),
        (
            "intermediate_size",
            config.intermediate_size,
            inner[0],
            "encoder.layer.0.intermediate.dense.weight",
        ),
        (
            "max_position_embeddings",
            config.max_position_embeddings,
            positions[0],
            "embeddings.position_embeddings.weight",
        ),
    ] {
        if said != found {
            bail!("{shown}: field '{field}' is {said}, but tensor '{p}{tensor}' says {found}");
        }
    }
    config.type_vocab_size = types.map_or(0, |s| s[0]);
    config.prefix = p.clone();
    config.pooler = shapes.contains_key(format!("{p}pooler.dense.weight").as_str());
    config.gamma_beta = shapes.contains_key(format!("{p}embeddings.LayerNorm.gamma").as_str());

    let found = heads(shapes);
    if found.is_empty() {
        bail!("no task heads (expected tensors 'heads.<task>.weight' or 'heads.<task>.out_proj.weight')");
    }
    let kinds: BTreeMap<String, TaskKind> = match (&opts.task_names, &opts.task_kinds) {
        (Some(names), Some(kinds)) if names.len() == kinds.len() => {
            names.iter().cloned().zip(kinds.iter().copied()).collect()
        }
        (None, None) => match &recorded_kinds {
            Some(text) => recorded(text).with_context(|| format!("{shown}: field 'cut_task_kinds'"))?,
            None => BTreeMap::new(),
        },
        _ => crate::usage_bail!("give text task kinds by name: --task-kinds genre:sequence-mean,pos:token"),
    };
    for name in kinds.keys() {
        if !found.contains_key(name) {
            let known: Vec<&str> = found.keys().map(String::as_str).collect();
            crate::usage_bail!(
                "--task-kinds names task '{name}', which has no head (heads: {})",
                known.join(", ")
            );
        }
    }
    let labels = read_labels(folder)?;
    if let Some((path, by_task)) = &labels {
        check_labels(path, by_task, &found)?;
    }
    // Heads in the order --task-kinds (or the recorded kinds) name them, then any without a kind.
    let named: Vec<String> = match (&opts.task_names, &recorded_kinds) {
        (Some(names), _) => names.clone(),
        (None, Some(text)) => text
            .split(',')
            .filter_map(|i| i.split_once(':'))
            .map(|(n, _)| n.to_string())
            .collect(),
        (None, None) => Vec::new(),
    };
    let order: Vec<&String> = named
        .iter()
        .filter(|n| found.contains_key(*n))
        .chain(found.keys().filter(|n| !kinds.contains_key(*n)))
        .collect();
    for task in order {
        let (classes, two_layer) = found[task];
        let Some(&kind) = kinds.get(task) else {
            crate::usage_bail!(
                "task '{task}' needs a kind: --task-kinds {task}:token, {task}:sequence or {task}:sequence-mean"
            );
        };
        let task_labels = labels.as_ref().and_then(|(_, l)| l.get(task).cloned());
        if let (Some(l), Some((path, _))) = (&task_labels, &labels) {
            if l.len() != classes {
                bail!(
                    "{}: task '{task}' lists {} labels, but its head 'heads.{task}' has {classes} rows",
                    path.display(),
                    l.len()
                );
            }
        }
        config.heads.push(HeadConfig {
            task: task.clone(),
            kind,
            classes,
            two_layer,
            labels: task_labels,
        });
    }
    let mut model = config.build().with_context(|| shown.clone())?;
    if let Some(path) = folder.map(|f| f.join("tokenizer.json")).filter(|p| p.exists()) {
        let text = crate::fsio::read_input_text(&path, crate::fsio::limit::TOKENIZER, "the tokenizer")?;
        model.tokenizer = Some(std::sync::Arc::new(text));
    }
    // What the graph does not read: position ids some files keep, an unused pooler, other heads
    // of pre-training (masked LM), said once.
    let used: std::collections::BTreeSet<String> = model.graph.param_specs().into_iter().map(|s| s.name).collect();
    let ignored: Vec<String> = shapes
        .keys()
        .filter(|n| !used.contains(**n))
        .map(|n| n.to_string())
        .collect();
    let unexpected: Vec<&String> = ignored
        .iter()
        .filter(|n| !n.ends_with("position_ids") && !n.starts_with(&format!("{p}pooler.")))
        .collect();
    if !unexpected.is_empty() {
        let shown: Vec<&str> = unexpected.iter().take(3).map(|s| s.as_str()).collect();
        warnings.push(format!(
            "{} tensors are not part of the encoder or a head and are ignored ({}{})",
            unexpected.len(),
            shown.join(", "),
            if unexpected.len() > 3 { ", ..." } else { "" }
        ));
    }
    Ok(LoadedModel {
        model,
        warnings,
        inferred: true,
        ignored,
    })
}

/// "a:token,b:sequence" as written by `cut export`.
fn recorded(text: &str) -> Result<BTreeMap<String, TaskKind>> {
    match LoadOptions::from_flags(None, Some(text))? {
        LoadOptions {
            task_names: Some(names),
            task_kinds: Some(kinds),
            ..
        } => Ok(names.into_iter().zip(kinds).collect()),
        _ => bail!("'{text}' is not name:kind pairs"),
    }
}

/// A `labels.json`: its path and the label names by task.
type LabelsFile = (std::path::PathBuf, BTreeMap<String, Vec<String>>);

/// `labels.json` beside the model, if there is one.
fn read_labels(folder: Option<&std::path::Path>) -> Result<Option<LabelsFile>> {
    let Some(path) = folder.map(|f| f.join("labels.json")).filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text = crate::fsio::read_input_text(&path, crate::fsio::limit::JSON, "the label names")?;
    let labels: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: expected {{\"task\": [\"label of row 0\", ...]}} ({e})",
            path.display()
        )
    })?;
    Ok(Some((path, labels)))
}

/// Every entry of a `labels.json` names a head, and no head's list names a label twice (the data
/// reader would map that label to one of its rows by accident).
fn check_labels(
    path: &std::path::Path,
    labels: &BTreeMap<String, Vec<String>>,
    heads: &BTreeMap<String, (usize, bool)>,
) -> Result<()> {
    for (task, names) in labels {
        if !heads.contains_key(task) {
            let known: Vec<&str> = heads.keys().map(String::as_str).collect();
            bail!(
                "{}: names task '{task}', which has no head (heads: {})",
                path.display(),
                known.join(", ")
            );
        }
        if let Some(label) = crate::tasks::first_duplicate(names) {
            bail!("{}: task '{task}' lists label '{label}' twice", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(names: &[&'static str]) -> BTreeMap<&'static str, &'static [usize]> {
        names.iter().map(|n| (*n, &[4usize, 2][..])).collect()
    }

    #[test]
    fn prefixes_bare_and_one_level() {
        let bare = shapes(&[
            "embeddings.word_embeddings.weight",
            "encoder.layer.0.output.dense.weight",
        ]);
        assert_eq!(prefix(&bare).as_deref(), Some(""));
        for p in ["bert.", "roberta.", "encoder."] {
            let name: &'static str = Box::leak(format!("{p}{WORDS}").into_boxed_str());
            assert_eq!(prefix(&shapes(&[name])).as_deref(), Some(p));
        }
        // Two levels deep is not an encoder cut reads as is; nor is a vision model.
        assert_eq!(prefix(&shapes(&["model.text.embeddings.word_embeddings.weight"])), None);
        assert_eq!(prefix(&shapes(&["backbone.conv1.weight"])), None);
    }

    #[test]
    fn heads_one_and_two_layers() {
        let mut s: TensorShapes = BTreeMap::new();
        s.insert("heads.pos.weight", &[9, 32]);
        s.insert("heads.pos.bias", &[9]);
        s.insert("heads.mood.dense.weight", &[32, 32]);
        s.insert("heads.mood.out_proj.weight", &[2, 32]);
        let h = heads(&s);
        assert_eq!(h["pos"], (9, false));
        assert_eq!(h["mood"], (2, true));
        assert_eq!(h.len(), 2, "{h:?}");
    }
}
