//! BERT-family encoders (BERT, RoBERTa, MiniLM, ...) with one head per task, as Hugging Face saves
//! them: a folder with `model.safetensors`, `config.json`, `tokenizer.json` and, for cut,
//! `labels.json` (`{"task": ["label of row 0", ...]}`). `recognise.rs` reads such a folder; the
//! builder here turns a [`BertConfig`] into a graph of the core's ops whose tensor names are
//! Hugging Face's, so weights load as they are.
//!
//! Heads, per task: `heads.<task>.weight/bias` (one linear layer) or `heads.<task>.dense.*` then
//! `heads.<task>.out_proj.*` (two, tanh between, as RoBERTa's classifier). A `token` task's head
//! reads every position; a `sequence` task's the first token (through the pooler when the encoder
//! has one); a `sequence-mean` task's the attention-masked mean of the last hidden states.

pub mod recognise;

use super::{Family, LoadOptions, LoadedModel, TensorShapes};
use crate::graph::ops::{Dropout, Embeddings, Gelu, GeluApproximation, LayerNorm, SelfAttention};
use crate::graph::{Dim, Graph, GraphInput, GraphOutput, InputDType, Linear, Model, Node, Op, TaskKind, TaskSpec};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// The graph inputs of every encoder: token ids and the attention mask, [seq] each.
pub const IDS: &str = "input_ids";
pub const MASK: &str = "attention_mask";
/// The default sequence length for compute counts.
pub const DEFAULT_SEQ: usize = 128;

/// The encoder, as Hugging Face's config.json spells it (unknown fields are ignored), plus what
/// cut adds: the tensor name prefix, the pooler, and the heads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BertConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Tensor name prefix ("bert.", "roberta.", "").
    #[serde(default)]
    pub prefix: String,
    /// Whether the encoder has `pooler.dense`.
    #[serde(default)]
    pub pooler: bool,
    /// Layer norms named `gamma`/`beta` (older files) instead of `weight`/`bias`.
    #[serde(default)]
    pub gamma_beta: bool,
    #[serde(default)]
    pub heads: Vec<HeadConfig>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadConfig {
    pub task: String,
    pub kind: TaskKind,
    pub classes: usize,
    /// `dense` + tanh + `out_proj` instead of one linear layer.
    #[serde(default)]
    pub two_layer: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

impl BertConfig {
    fn roberta(&self) -> bool {
        self.model_type == "roberta" || self.model_type == "xlm-roberta" || self.model_type == "camembert"
    }

    /// The longest sequence the position table covers (RoBERTa's positions start after the
    /// padding id).
    pub fn max_tokens(&self) -> usize {
        let first = if self.roberta() {
            self.pad_token_id.map_or(0, |p| p.max(0) as usize + 1)
        } else {
            0
        };
        self.max_position_embeddings.saturating_sub(first).max(1)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    fn gelu(&self) -> Result<Gelu> {
        let approximate = match self.hidden_act.as_str() {
            "gelu" => GeluApproximation::None,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => GeluApproximation::Tanh,
            other => bail!("hidden_act '{other}' is not supported (cut runs gelu, gelu_new and gelu_pytorch_tanh)"),
        };
        Ok(Gelu { approximate })
    }

    /// Refuses sizes the graph cannot have.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in sizes {
            if value == 0 {
                bail!("field '{field}' must be positive");
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.roberta() && self.pad_token_id.is_none() {
            bail!(
                "a {} encoder needs pad_token_id (its positions count from it)",
                self.model_type
            );
        }
        self.gelu()?;
        if self.heads.is_empty() {
            bail!("no task heads");
        }
        for h in &self.heads {
            if !matches!(h.kind, TaskKind::Token | TaskKind::Sequence | TaskKind::SequenceMean) {
                bail!(
                    "task '{}' has kind {}; encoder heads are token, sequence or sequence-mean",
                    h.task,
                    h.kind.as_str()
                );
            }
            if h.classes == 0 {
                bail!("task '{}' has no classes", h.task);
            }
        }
        Ok(())
    }

    /// The model: encoder and heads, tensor names as Hugging Face's (under `prefix`).
    pub fn build(&self) -> Result<Model> {
        self.validate()?;
        let (h, p) = (self.hidden_size, &self.prefix);
        let mut b = Builder::default();
        b.push(Node::new(IDS, &[], Op::Input));
        b.push(Node::new(MASK, &[], Op::Input));
        let (norm_w, norm_b) = if self.gamma_beta {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let norm = |b: &mut Builder, name: &str, x: &str| {
            b.add(
                name,
                &[x],
                Op::LayerNorm(LayerNorm {
                    weight: format!("{name}.{norm_w}"),
                    bias: format!("{name}.{norm_b}"),
                    features: h,
                    eps: self.layer_norm_eps,
                }),
            )
        };
        let dropout = |b: &mut Builder, name: &str, x: &str| {
            b.add(
                &format!("{name}.dropout"),
                &[x],
                Op::Dropout(Dropout {
                    p: self.hidden_dropout_prob,
                }),
            )
        };
        let emb = format!("{p}embeddings");
        let mut x = b.add(
            &emb,
            &[IDS],
            Op::Embeddings(Embeddings {
                word: format!("{emb}.word_embeddings.weight"),
                position: format!("{emb}.position_embeddings.weight"),
                token_type: (self.type_vocab_size > 0).then(|| format!("{emb}.token_type_embeddings.weight")),
                vocab: self.vocab_size,
                positions: self.max_position_embeddings,
                types: self.type_vocab_size,
                hidden: h,
                padding_idx: if self.roberta() { self.pad_token_id } else { None },
            }),
        );
        x = norm(&mut b, &format!("{emb}.LayerNorm"), &x);
        x = dropout(&mut b, &emb, &x);
        for i in 0..self.num_hidden_layers {
            let layer = format!("{p}encoder.layer.{i}");
            let att = format!("{layer}.attention");
            let ctx = b.add(
                &format!("{att}.self"),
                &[&x, MASK],
                Op::SelfAttention(SelfAttention {
                    query: format!("{att}.self.query.weight"),
                    query_bias: format!("{att}.self.query.bias"),
                    key: format!("{att}.self.key.weight"),
                    key_bias: format!("{att}.self.key.bias"),
                    value: format!("{att}.self.value.weight"),
                    value_bias: format!("{att}.self.value.bias"),
                    hidden: h,
                    heads: self.num_attention_heads,
                    head_dim: self.head_dim(),
                }),
            );
            let out = b.linear(&format!("{att}.output.dense"), &ctx, h, h);
            let out = dropout(&mut b, &format!("{att}.output"), &out);
            let sum = b.add(&format!("{att}.output.residual"), &[&out, &x], Op::Add);
            let attended = norm(&mut b, &format!("{att}.output.LayerNorm"), &sum);
            let inner = b.linear(
                &format!("{layer}.intermediate.dense"),
                &attended,
                h,
                self.intermediate_size,
            );
            let act = b.add(&format!("{layer}.intermediate.act"), &[&inner], Op::Gelu(self.gelu()?));
            let out = b.linear(&format!("{layer}.output.dense"), &act, self.intermediate_size, h);
            let out = dropout(&mut b, &format!("{layer}.output"), &out);
            let sum = b.add(&format!("{layer}.output.residual"), &[&out, &attended], Op::Add);
            x = norm(&mut b, &format!("{layer}.output.LayerNorm"), &sum);
        }
        let hidden = x;
        let mut first: Option<String> = None;
        let mut mean: Option<String> = None;
        let mut tasks = Vec::new();
        let mut outputs = Vec::new();
        for head in &self.heads {
            let input = match head.kind {
                TaskKind::Token => hidden.clone(),
                TaskKind::SequenceMean => mean
                    .get_or_insert_with(|| b.add("pool.mean", &[&hidden, MASK], Op::MaskedMean))
                    .clone(),
                _ => first
                    .get_or_insert_with(|| {
                        let cls = b.add("pool.first", &[&hidden], Op::FirstToken);
                        if self.pooler {
                            let dense = b.linear(&format!("{p}pooler.dense"), &cls, h, h);
                            b.add(&format!("{p}pooler.activation"), &[&dense], Op::Tanh)
                        } else {
                            cls
                        }
                    })
                    .clone(),
            };
            let name = format!("heads.{}", head.task);
            let start = b.nodes.len();
            let out = if head.two_layer {
                let dense = b.linear(&format!("{name}.dense"), &input, h, h);
                let act = b.add(&format!("{name}.activation"), &[&dense], Op::Tanh);
                b.linear(&format!("{name}.out_proj"), &act, h, head.classes)
            } else {
                b.linear(&name, &input, h, head.classes)
            };
            for node in &mut b.nodes[start..] {
                node.head = Some(head.task.clone());
            }
            tasks.push(TaskSpec {
                name: head.task.clone(),
                kind: head.kind,
                outputs: head.classes,
                labels: head.labels.clone(),
                distill: false,
            });
            outputs.push(GraphOutput {
                task: head.task.clone(),
                node: out,
            });
        }
        let seq = || vec![Dim::Named("seq".into())];
        let graph = Graph {
            family: Some(Bert.name().into()),
            inputs: vec![
                GraphInput {
                    name: IDS.into(),
                    dtype: InputDType::I64,
                    dims: seq(),
                    normalise: None,
                },
                GraphInput {
                    name: MASK.into(),
                    dtype: InputDType::I64,
                    dims: seq(),
                    normalise: None,
                },
            ],
            sizes: BTreeMap::from([("seq".to_string(), DEFAULT_SEQ.min(self.max_tokens()))]),
            nodes: b.nodes,
            outputs,
        };
        graph.validate()?;
        Ok(Model {
            graph,
            tasks,
            tokenizer: None,
        })
    }
}

impl BertConfig {
    /// The configuration a graph of this family was built from, read back from its ops (for
    /// writing the model as a Hugging Face folder); heads are not included.
    pub fn of_graph(graph: &Graph) -> Result<BertConfig> {
        let (mut emb, mut layers, mut heads, mut eps, mut act, mut dropout) = (None, 0, 0, 1e-12, None, 0.1);
        let mut intermediate = None;
        let (mut all_heads, mut widths) = (BTreeSet::new(), BTreeSet::new());
        for node in &graph.nodes {
            match &node.op {
                Op::Embeddings(e) => emb = Some((node.name.clone(), e.clone())),
                Op::SelfAttention(a) => {
                    layers += 1;
                    heads = a.heads;
                    all_heads.insert(a.heads);
                }
                Op::LayerNorm(l) => eps = l.eps,
                Op::Gelu(g) => act = Some(g.approximate),
                Op::Dropout(d) => dropout = d.p,
                Op::Linear(l) if node.name.ends_with(".intermediate.dense") => {
                    intermediate = Some(l.out_features);
                    widths.insert(l.out_features);
                }
                _ => {}
            }
        }
        if all_heads.len() > 1 || widths.len() > 1 {
            bail!(
                "its layers differ in attention heads ({all_heads:?}) or FFN width ({widths:?}), which a Hugging Face config cannot describe; export it with --format onnx"
            );
        }
        let Some((name, e)) = emb else {
            bail!("the graph has no embeddings: not a text encoder");
        };
        let prefix = name.strip_suffix("embeddings").unwrap_or("").to_string();
        let norm_gamma = graph
            .nodes
            .iter()
            .any(|n| matches!(&n.op, Op::LayerNorm(l) if l.weight.ends_with(".gamma")));
        Ok(BertConfig {
            model_type: if e.padding_idx.is_some() { "roberta" } else { "bert" }.into(),
            vocab_size: e.vocab,
            hidden_size: e.hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate
                .ok_or_else(|| anyhow::anyhow!("the graph has no intermediate.dense layer"))?,
            max_position_embeddings: e.positions,
            type_vocab_size: e.types,
            layer_norm_eps: eps,
            hidden_act: match act {
                Some(GeluApproximation::Tanh) => "gelu_new",
                _ => "gelu",
            }
            .into(),
            pad_token_id: e.padding_idx.or(Some(0)),
            hidden_dropout_prob: dropout,
            pooler: graph.node(&format!("{prefix}pooler.dense")).is_some(),
            prefix,
            gamma_beta: norm_gamma,
            heads: Vec::new(),
        })
    }

    /// Hugging Face's `config.json` for this encoder.
    pub fn hugging_face_json(&self) -> serde_json::Value {
        let architecture = if self.roberta() { "RobertaModel" } else { "BertModel" };
        serde_json::json!({
            "architectures": [architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "pad_token_id": self.pad_token_id,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.hidden_dropout_prob,
        })
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        self.nodes.push(node);
    }
    fn add(&mut self, name: &str, inputs: &[&str], op: Op) -> String {
        self.nodes.push(Node::new(name, inputs, op));
        name.to_string()
    }
    fn linear(&mut self, name: &str, x: &str, inputs: usize, outputs: usize) -> String {
        self.add(
            name,
            &[x],
            Op::Linear(Linear {
                weight: format!("{name}.weight"),
                bias: Some(format!("{name}.bias")),
                in_features: inputs,
                out_features: outputs,
            }),
        )
    }
}

pub struct Bert;

impl Family for Bert {
    fn name(&self) -> &'static str {
        "bert"
    }
    fn build(&self, config: &serde_json::Value) -> Result<Model> {
        let config: BertConfig = serde_json::from_value(config.clone())
            .map_err(|e| anyhow::anyhow!("not a BERT-family configuration: {e}"))?;
        config.build()
    }
    fn recognises(&self, shapes: &TensorShapes) -> bool {
        recognise::prefix(shapes).is_some()
    }
    fn signature(&self) -> &'static str {
        "Hugging Face encoder names such as 'embeddings.word_embeddings.weight', bare or under one prefix"
    }
    fn infer(&self, shapes: &TensorShapes, opts: &LoadOptions) -> Result<LoadedModel> {
        recognise::infer(shapes, opts)
    }
}
