//! `cut split`: a model run partly on a device and partly in the cloud, with what crosses the link
//! compressed (Device Tuning, arXiv 2302.10820, as `docs/split.md` reconstructs it).
//!
//! A cut is a node boundary where exactly one tensor crosses (an attention mask the cloud also
//! reads travels as a token count). [`joined`] writes the whole split into one graph with the seam
//! in it: `split.pool` (token or spatial pooling, device side), `split.wire` (what the link does
//! to the values) and, cloud side, `split.unpool` (a pooled feature map resized back),
//! `split.mask` (the attention mask pooled with the tokens) and `split.unpool.<task>` (a token
//! task's predictions repeated back to one per token). Evaluating and fine-tuning that graph is
//! evaluating and fine-tuning the split; [`separate`] cuts it into the two checkpoints.

pub mod payload;

use crate::graph::interpreter::{forward_inputs, Inputs, Mode};
use crate::graph::ops::{AvgPool, MaskPool, Resize, ScaleGranularity, TokenPool, TokenUnpool, Wire, WireFormat};
use crate::graph::{
    shapes, Dim, Graph, GraphInput, GraphOutput, InputDType, Model, Node, Op, Params, TaskKind, TaskSpec,
};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// The name of the tensor the device part outputs and the cloud part reads.
pub const FEATURES: &str = "features";
/// The named size of a pooled sequence in the cloud part's inputs.
pub const POOLED_SEQ: &str = "pooled_seq";

/// A valid place to split: after `after`, only `tensor` crosses (besides the attention mask,
/// which travels as a token count).
#[derive(Clone, Debug)]
pub struct Cut {
    /// The last node before the cut, in graph order.
    pub after: String,
    /// The one tensor that crosses.
    pub tensor: String,
    /// Its per-sample shape at the graph's default sizes.
    pub shape: Vec<usize>,
}

/// How what crosses is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// 1: none; k: mean of k adjacent tokens, or of k x k pixels of a feature map.
    pub pool: usize,
    pub wire: WireFormat,
    pub scale: ScaleGranularity,
}

impl Compression {
    pub const NONE: Compression = Compression {
        pool: 1,
        wire: WireFormat::F32,
        scale: ScaleGranularity::Tensor,
    };
    /// "pool x2, int8/channel", "no pool, f32".
    pub fn label(&self) -> String {
        let pool = if self.pool > 1 {
            format!("pool x{}", self.pool)
        } else {
            "no pool".into()
        };
        let wire = match (self.wire, self.scale) {
            (WireFormat::Int8, ScaleGranularity::Channel) => "int8/channel".to_string(),
            (w, _) => w.as_str().to_string(),
        };
        format!("{pool}, {wire}")
    }
}

/// The attention-mask input, as the graph's roles say.
fn mask_input(graph: &Graph) -> Option<String> {
    graph
        .input_named_by(crate::graph::InputRole::AttentionMask)
        .map(String::from)
}

/// For each node boundary (after node p, p in graph order): the tensors made at or before p that a
/// later node or a task output reads, graph inputs included except the mask. A task's output made
/// before the boundary crosses too: the cloud part gives every task's output.
fn boundaries(graph: &Graph) -> Vec<(usize, Vec<String>)> {
    let mask = mask_input(graph);
    let position: BTreeMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut last_read = vec![0usize; graph.nodes.len()];
    for (r, node) in graph.nodes.iter().enumerate() {
        for input in &node.inputs {
            if let Some(&p) = position.get(input.as_str()) {
                last_read[p] = last_read[p].max(r);
            }
        }
    }
    for output in &graph.outputs {
        if let Some(&p) = position.get(output.node.as_str()) {
            last_read[p] = graph.nodes.len();
        }
    }
    let is_input = |i: usize| matches!(graph.nodes[i].op, Op::Input);
    (0..graph.nodes.len().saturating_sub(1))
        .filter(|&p| !is_input(p))
        .map(|p| {
            let crossing = (0..=p)
                .filter(|&q| last_read[q] > p)
                .filter(|&q| !(is_input(q) && mask.as_deref() == Some(graph.nodes[q].name.as_str())))
                .map(|q| graph.nodes[q].name.clone())
                .collect();
            (p, crossing)
        })
        .collect()
}

fn cut_at(graph: &Graph, shapes: &std::collections::HashMap<String, Vec<usize>>, p: usize, tensor: &str) -> Cut {
    Cut {
        after: graph.nodes[p].name.clone(),
        tensor: tensor.to_string(),
        shape: shapes[tensor].clone(),
    }
}

/// Every valid cut of `model` (restricted to the tasks that stay), input to output; one per
/// crossing tensor.
pub fn cuts(model: &Model) -> Result<Vec<Cut>> {
    let graph = &model.graph;
    let shapes = shapes::infer_sizes(graph, &graph.sizes)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (p, crossing) in boundaries(graph) {
        let [tensor] = crossing.as_slice() else { continue };
        if matches!(graph.node(tensor).map(|n| &n.op), Some(Op::Input)) || !seen.insert(tensor.clone()) {
            continue;
        }
        out.push(cut_at(graph, &shapes, p, tensor));
    }
    Ok(out)
}

/// The cut after node `name`, or an error naming what crosses there.
pub fn cut_after(model: &Model, name: &str) -> Result<Cut> {
    let graph = &model.graph;
    let Some(p) = graph.nodes.iter().position(|n| n.name == name) else {
        let valid: Vec<String> = cuts(model)?.into_iter().map(|c| c.after).collect();
        crate::usage_bail!(
            "--at '{name}': no such node among those the selected tasks need (valid cuts: {})",
            valid.join(", ")
        );
    };
    let Some((_, crossing)) = boundaries(graph).into_iter().find(|(q, _)| *q == p) else {
        crate::usage_bail!("--at '{name}': nothing runs after an input or the last node; cut after a later node");
    };
    match crossing.as_slice() {
        [tensor] if !matches!(graph.node(tensor).map(|n| &n.op), Some(Op::Input)) => {
            Ok(cut_at(graph, &shapes::infer_sizes(graph, &graph.sizes)?, p, tensor))
        }
        _ => {
            let valid: Vec<String> = cuts(model)?.into_iter().map(|c| c.after).collect();
            crate::usage_bail!(
                "--at '{name}': {} tensors cross there ({}); cut where one does: {}",
                crossing.len(),
                crossing.join(", "),
                valid.join(", ")
            )
        }
    }
}

/// The whole split as one graph: the model with the seam after `cut`'s tensor (see the module
/// comment). Its parameters are the model's.
pub fn joined(model: &Model, cut: &Cut, c: &Compression) -> Result<Model> {
    let graph = &model.graph;
    let k = c.pool;
    let pos = graph
        .nodes
        .iter()
        .position(|n| n.name == cut.after)
        .ok_or_else(|| anyhow::anyhow!("no node '{}'", cut.after))?;
    let x = cut.tensor.as_str();
    let mut seam: Vec<Node> = Vec::new();
    let mut sent = x.to_string();
    let mut pooled_mask = None;
    if k > 1 {
        match cut.shape.len() {
            2 => {
                let Some(mask) = mask_input(graph) else {
                    crate::usage_bail!(
                        "--pool {k} at '{}': pooling tokens needs an attention mask input; the graph has none",
                        cut.after
                    );
                };
                seam.push(Node::new(
                    "split.pool",
                    &[x, &mask],
                    Op::TokenPool(TokenPool { factor: k }),
                ));
                pooled_mask = Some(mask);
            }
            3 => {
                seam.push(Node::new("split.pool", &[x], Op::AvgPool(AvgPool { factor: k })));
            }
            _ => crate::usage_bail!(
                "--pool {k} at '{}': '{x}' is {:?} per sample, with no sequence or spatial axis to pool",
                cut.after,
                cut.shape
            ),
        }
        sent = "split.pool".into();
    }
    seam.push(Node::new(
        "split.wire",
        &[&sent],
        Op::Wire(Wire {
            format: c.wire,
            scale: c.scale,
        }),
    ));
    let mut received = "split.wire".to_string();
    if let Some(mask) = &pooled_mask {
        // Cloud side: the cloud pools the mask it rebuilds from the token count.
        seam.push(Node::new("split.mask", &[mask], Op::MaskPool(MaskPool { factor: k })));
    }
    if k > 1 && cut.shape.len() == 3 {
        seam.push(Node::new(
            "split.unpool",
            &["split.wire"],
            Op::Resize(Resize {
                height: cut.shape[1],
                width: cut.shape[2],
            }),
        ));
        received = "split.unpool".into();
    }
    let mut nodes: Vec<Node> = graph.nodes[..=pos].to_vec();
    nodes.extend(seam);
    for node in &graph.nodes[pos + 1..] {
        let mut node = node.clone();
        for input in &mut node.inputs {
            if input == x {
                *input = received.clone();
            } else if pooled_mask.as_deref() == Some(input.as_str()) {
                *input = "split.mask".into();
            }
        }
        nodes.push(node);
    }
    let mut outputs = graph.outputs.clone();
    if let Some(mask) = &pooled_mask {
        for out in &mut outputs {
            if model.task(&out.task).is_some_and(|t| t.kind == TaskKind::Token) {
                let name = format!("split.unpool.{}", out.task);
                let mut node = Node::new(&name, &[&out.node, mask], Op::TokenUnpool(TokenUnpool { factor: k }));
                node.head = Some(out.task.clone());
                nodes.push(node);
                out.node = name;
            }
        }
    }
    let joined = Model {
        graph: Graph {
            nodes,
            outputs,
            ..graph.clone()
        },
        ..model.clone()
    };
    joined.validate()?;
    Ok(joined)
}

/// The parameters `graph` reads, taken from `params`.
fn params_of(graph: &Graph, params: &Params) -> Result<Params> {
    graph
        .param_specs()
        .into_iter()
        .map(|s| {
            let t = params
                .get(&s.name)
                .ok_or_else(|| anyhow::anyhow!("tensor '{}' is missing", s.name))?;
            Ok((s.name, t.shallow_clone()))
        })
        .collect()
}

/// The two halves of a split.
pub struct Parts {
    pub device: Model,
    pub device_params: Params,
    pub cloud: Model,
    pub cloud_params: Params,
}

impl Parts {
    /// The inputs the device part reads, taken from the whole model's.
    pub fn device_inputs(&self, all: &Inputs) -> Result<Inputs> {
        self.device
            .graph
            .inputs
            .iter()
            .map(|d| match all.get(&d.name) {
                Some(t) => Ok((d.name.clone(), t.shallow_clone())),
                None => anyhow::bail!("no batch was given for input '{}'", d.name),
            })
            .collect()
    }

    /// What the device part sends for the whole model's inputs (f32, inference mode).
    pub fn features(&self, all: &Inputs) -> Result<tch::Tensor> {
        let _guard = tch::no_grad_guard();
        let mut out = forward_inputs(
            &self.device.graph,
            &self.device_params,
            &self.device_inputs(all)?,
            &[FEATURES],
            Mode::Eval,
        )?;
        let features = out.remove(FEATURES).expect("the device part outputs its features");
        Ok(features.to_kind(tch::Kind::Float))
    }
}

/// Cuts a [`joined`] graph at its wire: the device part outputs what the wire reads (as the task
/// [`FEATURES`] of kind features); the cloud part reads it as an input of that name.
pub fn separate(joined: &Model, params: &Params) -> Result<Parts> {
    let graph = &joined.graph;
    let w = graph
        .nodes
        .iter()
        .position(|n| n.name == "split.wire")
        .ok_or_else(|| anyhow::anyhow!("the graph has no split.wire node"))?;
    let sent = graph.nodes[w].inputs[0].clone();
    let shapes = shapes::infer_sizes(graph, &graph.sizes)?;
    let sent_shape = shapes[&sent].clone();
    // Device: what the sent tensor needs.
    let mut needed: BTreeSet<String> = BTreeSet::from([sent.clone()]);
    for node in graph.nodes[..w].iter().rev() {
        if needed.contains(&node.name) {
            needed.extend(node.inputs.iter().cloned());
        }
    }
    let device_nodes: Vec<Node> = graph.nodes[..w]
        .iter()
        .filter(|n| needed.contains(&n.name))
        .map(|n| Node {
            head: None,
            ..n.clone()
        })
        .collect();
    let device_graph = Graph {
        inputs: graph
            .inputs
            .iter()
            .filter(|i| needed.contains(&i.name))
            .cloned()
            .collect(),
        nodes: device_nodes,
        outputs: vec![GraphOutput {
            task: FEATURES.into(),
            node: sent.clone(),
        }],
        ..graph.clone()
    };
    let width = if sent_shape.len() == 2 {
        sent_shape[1]
    } else {
        sent_shape[0]
    };
    let device = Model {
        graph: device_graph,
        tasks: vec![TaskSpec {
            name: FEATURES.into(),
            kind: TaskKind::Features,
            outputs: width,
            labels: None,
            distill: false,
        }],
        tokenizer: joined.tokenizer.clone(),
    };
    device.validate()?;
    // Cloud: everything after the wire, reading the features (and the mask) as inputs.
    let mut cloud_nodes = vec![Node::new(FEATURES, &[], Op::Input)];
    let rest: Vec<Node> = graph.nodes[w + 1..]
        .iter()
        .map(|n| {
            let mut n = n.clone();
            for input in &mut n.inputs {
                if input == "split.wire" {
                    *input = FEATURES.into();
                }
            }
            n
        })
        .collect();
    let read: BTreeSet<&String> = rest.iter().flat_map(|n| n.inputs.iter()).collect();
    let mut inputs = Vec::new();
    let mut sizes = graph.sizes.clone();
    let feature_dims = if sent_shape.len() == 2 {
        // Tokens: their count is a size of its own when pooled (ceil(seq / k)).
        let pooled = matches!(graph.node(&sent).map(|n| &n.op), Some(Op::TokenPool(_)));
        let seq = if pooled {
            if let (Some(Op::TokenPool(tp)), Some(&s)) = (graph.node(&sent).map(|n| &n.op), graph.sizes.get("seq")) {
                sizes.insert(POOLED_SEQ.into(), s.div_ceil(tp.factor));
            }
            POOLED_SEQ
        } else {
            "seq"
        };
        vec![Dim::Named(seq.into()), Dim::Fixed(sent_shape[1])]
    } else if sent_shape.len() != 3 {
        sent_shape.iter().map(|&d| Dim::Fixed(d)).collect()
    } else {
        // A feature map is an image input of its own size ([C, height, width] at the sizes below),
        // so the cloud part reads, counts and times like any image model.
        sizes = crate::graph::image_sizes(sent_shape[1], sent_shape[2]);
        vec![
            Dim::Fixed(sent_shape[0]),
            Dim::Named("height".into()),
            Dim::Named("width".into()),
        ]
    };
    inputs.push(GraphInput {
        name: FEATURES.into(),
        dtype: InputDType::F32,
        dims: feature_dims,
        normalise: None,
    });
    for decl in &graph.inputs {
        if read.contains(&decl.name) {
            if decl.dtype != InputDType::I64 {
                anyhow::bail!("the cloud part would read input '{}' besides the features", decl.name);
            }
            inputs.push(decl.clone());
            cloud_nodes.push(Node::new(&decl.name, &[], Op::Input));
        }
    }
    cloud_nodes.extend(rest);
    let cloud_graph = Graph {
        inputs,
        sizes,
        nodes: cloud_nodes,
        outputs: graph.outputs.clone(),
        ..graph.clone()
    };
    let cloud = Model {
        graph: cloud_graph,
        tasks: joined.tasks.clone(),
        tokenizer: None,
    };
    cloud.validate()?;
    Ok(Parts {
        device_params: params_of(&device.graph, params)?,
        cloud_params: params_of(&cloud.graph, params)?,
        device,
        cloud,
    })
}

/// The wire node of a [`joined`] graph.
pub fn wire_of(joined: &Model) -> Option<Wire> {
    joined.graph.nodes.iter().find_map(|n| match &n.op {
        Op::Wire(w) => Some(w.clone()),
        _ => None,
    })
}
