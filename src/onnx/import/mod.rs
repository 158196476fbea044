//! `cut import`: an ONNX file as a `cut` model. Initializers become parameters; constants and the
//! shape arithmetic exporters emit are folded at import (`fold.rs`); every other node becomes a
//! graph op through its converter, one file per ONNX op family (`conv.rs`, `norm.rs`,
//! `activation.rs`, `elementwise.rs`, `pool.rs`, `gemm.rs`, `resize.rs`, `layout.rs`). The
//! batch stays dynamic; other symbolic sizes are fixed at import (`--input`). Tasks are the
//! graph's outputs, named by output name.

mod activation;
mod conv;
mod elementwise;
mod fold;
mod gemm;
mod index_math;
mod layout;
mod norm;
mod pool;
mod quant;
pub mod recorded;
mod resize;
mod tensor;

use crate::graph::inputs::{Dim, GraphInput, InputDType};
use crate::graph::onnx::proto::{self, tensor_proto::DataType, NodeProto};
use crate::graph::ops::Op;
use crate::graph::{Graph, GraphOutput, Model, Node, Params, TaskKind, TaskSpec};
use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::Tensor;
pub use tensor::Attrs;

/// The opsets the importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// What to fix at import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Per-sample sizes of inputs by name, for dimensions the file leaves symbolic (or to
    /// override the file's): "image" -> [3, 224, 224].
    pub input_sizes: BTreeMap<String, Vec<usize>>,
    /// Task kinds by output name; an output not named here is of kind `output` (no labels).
    pub task_kinds: BTreeMap<String, TaskKind>,
}

/// An imported model, its parameters and what the import did.
pub struct Imported {
    pub model: Model,
    pub params: Params,
    pub opset: i64,
    /// ONNX nodes evaluated at import (constants, shape arithmetic) and nodes dropped (identities).
    pub folded: usize,
}

/// A value during import: known now (an initializer, a constant, folded shape arithmetic), or
/// computed by a graph node at run time, with its per-sample shape.
#[derive(Debug)]
pub enum Value {
    Const(Tensor),
    Live {
        node: String,
        shape: Vec<usize>,
    },
    /// A computed value (`node`, per-sample `shape`) seen through a transpose that moves the
    /// batch axis (`perm`, full rank): attention's `[B, N, 3, H, D] -> [3, B, H, N, D]`, resolved
    /// when the moved-in axis is split, gathered or squeezed away (`layout.rs`).
    Moved {
        node: String,
        shape: Vec<usize>,
        perm: Vec<usize>,
    },
    /// A computed value whose ONNX batch axis holds `shape[0]` pieces of each sample (a reshape to
    /// `[-1, ...]` of fewer values than a sample has: Swin's windows, the dynamo exporter's batched
    /// matmul of attention heads). `node` computes the per-sample `shape`; ONNX axis `a > 0` is its
    /// axis `a`. Read by reshapes and transposes (`layout.rs`) and by the ops of `FOLDED_OK`.
    Folded {
        node: String,
        shape: Vec<usize>,
    },
}

/// What a converter sees and adds to.
pub struct ImportCx {
    pub file: PathBuf,
    pub opset: i64,
    values: HashMap<String, Value>,
    nodes: Vec<Node>,
    /// Per-sample shapes of the graph nodes added so far.
    node_shapes: HashMap<String, Vec<usize>>,
    /// How many ONNX nodes (and graph outputs) read each value.
    readers: HashMap<String, usize>,
    /// Readers not yet converted: a constant nobody reads any more is dropped (a transposed
    /// weight's original, for one), so an import holds about one copy of the weights.
    pending: HashMap<String, usize>,
    /// The names of the file's initializers (trained tensors, unlike literal constants).
    initializers: std::collections::HashSet<String>,
    params: Params,
    folded: usize,
    /// The nodes that compute only from an attention mask input, and where they are read.
    mask: Option<index_math::IndexRegion>,
    /// `IsNaN` of a computed value, by output: the value it tests (softmax's NaN guard).
    nan_tests: HashMap<String, String>,
    /// Graph nodes held in a `Value::Moved` whose batch axis was a folded one (attention on
    /// windows): taking the moved axis apart leaves a `Value::Folded`.
    folded_moved: std::collections::HashSet<String>,
}

/// The ONNX ops that read a folded value as they read any other (none of them looks at the first
/// axis); their output is folded too.
const FOLDED_OK: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "MatMul",
    "Softmax",
    "Relu",
    "Gelu",
    "Erf",
    "Sigmoid",
    "Tanh",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// A converter: turns one ONNX node into graph nodes.
type Converter = fn(&mut ImportCx, &NodeProto) -> Result<()>;

/// Every ONNX op the importer turns into graph ops (folded ops are in `fold::FOLDABLE`).
const CONVERTERS: &[(&str, Converter)] = &[
    ("Conv", conv::conv),
    ("ConvTranspose", conv::conv_transpose),
    ("BatchNormalization", norm::batch_norm),
    ("LayerNormalization", norm::layer_norm),
    ("Relu", activation::relu),
    ("Sigmoid", activation::sigmoid),
    ("Tanh", activation::tanh),
    ("Clip", activation::clip),
    ("HardSigmoid", activation::hard_sigmoid),
    ("HardSwish", activation::hard_swish),
    ("Gelu", activation::gelu),
    ("Add", elementwise::add),
    ("Sum", elementwise::sum),
    ("Sub", elementwise::sub),
    ("Mul", elementwise::mul),
    ("Div", elementwise::div),
    ("Erf", activation::erf),
    ("Softmax", activation::softmax),
    ("IsNaN", activation::is_nan),
    ("Where", activation::where_nan_guard),
    ("MaxPool", pool::max_pool),
    ("AveragePool", pool::average_pool),
    ("GlobalAveragePool", pool::global_average_pool),
    ("ReduceMean", pool::reduce_mean),
    ("Gemm", gemm::gemm),
    ("MatMul", gemm::matmul),
    ("Resize", resize::resize),
    ("Concat", layout::concat),
    ("Flatten", layout::flatten),
    ("Reshape", layout::reshape),
    ("Squeeze", layout::squeeze),
    ("Unsqueeze", layout::unsqueeze),
    ("Transpose", layout::transpose),
    ("Split", layout::split),
    ("Slice", layout::slice),
    ("Gather", layout::gather),
    ("Pad", layout::pad),
    ("Identity", layout::identity),
    ("Dropout", layout::identity),
    ("QuantizeLinear", quant::quantize_linear),
    ("DequantizeLinear", quant::dequantize_linear),
];

/// The ONNX op types `cut import` reads: converted and folded, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut ops: Vec<&str> = CONVERTERS
        .iter()
        .map(|(n, _)| *n)
        .chain(fold::FOLDABLE.iter().copied())
        .collect();
    ops.sort_unstable();
    ops.dedup();
    ops
}

/// Reads `path` as a model: its inputs, every node converted or folded, its outputs as tasks.
/// Errors name the file and the node.
pub fn import(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let model = read_model(path)?;

    let opset = default_opset(&model, path)?;
    let graph = model
        .graph
        .ok_or_else(|| anyhow!("{}: the ONNX model has no graph", path.display()))?;
    let mut cx = ImportCx {
        file: path.to_path_buf(),
        opset,
        values: HashMap::new(),
        nodes: Vec::new(),
        node_shapes: HashMap::new(),
        readers: count_readers(&graph),
        pending: count_readers(&graph),
        initializers: graph.initializer.iter().map(|t| t.name.clone()).collect(),
        params: Params::new(),
        folded: 0,
        mask: index_math::IndexRegion::find(&graph),
        nan_tests: HashMap::new(),
        folded_moved: Default::default(),
    };
    for init in &graph.initializer {
        let t = tensor::tensor_of(init, path).with_context(|| format!("{}: initializer", path.display()))?;
        cx.values.insert(init.name.clone(), Value::Const(t));
    }
    let (inputs, sizes) = declare_inputs(&mut cx, &graph.input, opts)?;
    for node in &graph.node {
        cx.node(node).with_context(|| {
            format!(
                "{}: node '{}' ({}, opset {opset})",
                path.display(),
                node_name(node),
                node.op_type
            )
        })?;
    }
    let (outputs, mut tasks) = declare_outputs(&cx, &graph.output, opts)?;
    let mut graph = Graph {
        family: Some("onnx".into()),
        inputs,
        sizes,
        nodes: cx.nodes,
        outputs,
    };
    let props = &model.metadata_props;
    recorded::apply_tasks(props, &mut tasks, &opts.task_kinds)
        .and_then(|_| recorded::apply_normalisation(props, &mut graph))
        .with_context(|| format!("{}", path.display()))?;
    let model = Model {
        graph,
        tasks,
        tokenizer: recorded::tokenizer(props),
    };
    model
        .validate()
        .with_context(|| format!("{}: the imported graph", path.display()))?;
    Ok(Imported {
        model,
        params: cx.params,
        opset,
        folded: cx.folded,
    })
}

/// How many nodes and graph outputs read each value.
fn count_readers(graph: &proto::GraphProto) -> HashMap<String, usize> {
    let mut readers = HashMap::new();
    let names = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter())
        .chain(graph.output.iter().map(|o| &o.name));
    for name in names.filter(|n| !n.is_empty()) {
        *readers.entry(name.clone()).or_insert(0) += 1;
    }
    readers
}

/// The file as a `ModelProto`, decoded from a memory map: the initializers' bytes stay in the map
/// (no copy) until each is read into a tensor.
fn read_model(path: &Path) -> Result<proto::ModelProto> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{shown}: cannot read ({e})"))?;
    if !meta.is_file() {
        bail!("{shown}: not a regular file");
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{shown}: cannot read ({e})"))?;
    let bytes = if meta.len() == 0 {
        prost::bytes::Bytes::new()
    } else {
        // SAFETY: read-only map; a file changed underneath is the caller's race, as with any
        // memory-mapped reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| anyhow!("{shown}: cannot map ({e})"))?;
        prost::bytes::Bytes::from_owner(map)
    };
    proto::ModelProto::decode(bytes)
        .map_err(|e| anyhow!("{shown}: not an ONNX model (the protobuf does not parse: {e})"))
}

/// The opset of the default domain, one the importer reads.
fn default_opset(model: &proto::ModelProto, path: &Path) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| anyhow!("{}: the model imports no ONNX opset", path.display()))?;
    if !OPSETS.contains(&opset) {
        crate::usage_bail!(
            "{}: opset {opset}; cut imports opsets {} to {} (re-export with opset_version=17)",
            path.display(),
            OPSETS.start(),
            OPSETS.end()
        );
    }
    Ok(opset)
}

fn node_name(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

/// The graph's inputs (those that are not initializers), each an `input` node: the batch left
/// dynamic, other dimensions from the file or `--input`. A float input of rank 3 per sample is an
/// image whose height and width are the graph's named sizes; integer inputs of rank 1 (token ids,
/// masks) of one length read the named size `seq`.
fn declare_inputs(
    cx: &mut ImportCx,
    inputs: &[proto::ValueInfoProto],
    opts: &ImportOptions,
) -> Result<(Vec<GraphInput>, BTreeMap<String, usize>)> {
    let file = cx.file.display().to_string();
    let mut declared = Vec::new();
    let mut sizes = BTreeMap::new();
    let graph_inputs: Vec<&proto::ValueInfoProto> =
        inputs.iter().filter(|vi| !cx.values.contains_key(&vi.name)).collect();
    let given = sizes_by_input(&file, &graph_inputs, opts)?;
    for vi in graph_inputs {
        let (dtype, dims) = value_type(vi).with_context(|| format!("{file}: input '{}'", vi.name))?;
        let shape = per_sample_shape(&file, vi, &dims, given.get(&vi.name))?;
        if shape.len() + 1 != dims.len() {
            crate::usage_bail!(
                "{file}: input '{}' has {} dimensions after the batch; --input gives {}",
                vi.name,
                dims.len() - 1,
                shape.len()
            );
        }
        let image = dtype == InputDType::F32 && shape.len() == 3 && !sizes.contains_key("height");
        let dims = if image {
            sizes.insert("height".to_string(), shape[1]);
            sizes.insert("width".to_string(), shape[2]);
            vec![
                Dim::Fixed(shape[0]),
                Dim::Named("height".into()),
                Dim::Named("width".into()),
            ]
        } else if dtype == InputDType::I64
            && shape.len() == 1
            && *sizes.entry("seq".to_string()).or_insert(shape[0]) == shape[0]
        {
            // Token ids and masks share the sequence length, a named size as in text encoders
            // (the folded constants fix it at this length).
            vec![Dim::Named("seq".into())]
        } else {
            shape.iter().map(|&n| Dim::Fixed(n)).collect()
        };
        declared.push(GraphInput {
            name: vi.name.clone(),
            dtype,
            dims,
            normalise: None,
        });
        cx.nodes.push(Node {
            name: vi.name.clone(),
            inputs: Vec::new(),
            head: None,
            op: Op::Input,
        });
        cx.node_shapes.insert(vi.name.clone(), shape.clone());
        cx.values.insert(
            vi.name.clone(),
            Value::Live {
                node: vi.name.clone(),
                shape,
            },
        );
    }
    if declared.is_empty() {
        bail!("{file}: the graph reads no input");
    }
    Ok((declared, sizes))
}

/// `--input`'s sizes by input name: an unnamed size ("") is the only input's; a name that is not
/// an input is an error.
fn sizes_by_input(
    file: &str,
    inputs: &[&proto::ValueInfoProto],
    opts: &ImportOptions,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let names: Vec<&str> = inputs.iter().map(|vi| vi.name.as_str()).collect();
    let mut out = BTreeMap::new();
    for (name, size) in &opts.input_sizes {
        let name = match (name.as_str(), names.as_slice()) {
            ("", [only]) => *only,
            ("", _) => crate::usage_bail!(
                "{file}: the graph reads {} inputs ({}); name the one --input sizes, as NAME:SIZE",
                names.len(),
                names.join(", ")
            ),
            (n, _) if names.contains(&n) => n,
            (n, _) => crate::usage_bail!(
                "{file}: --input names '{n}', which is not an input (inputs: {})",
                names.join(", ")
            ),
        };
        if out.insert(name.to_string(), size.clone()).is_some() {
            crate::usage_bail!("{file}: --input gives input '{name}' twice");
        }
    }
    Ok(out)
}

/// An input's per-sample shape: `--input`'s (HxW taking the file's channels), else the file's (an
/// error where it is symbolic).
fn per_sample_shape(
    file: &str,
    vi: &proto::ValueInfoProto,
    dims: &[Option<usize>],
    given: Option<&Vec<usize>>,
) -> Result<Vec<usize>> {
    Ok(match given {
        Some(s) if s.len() == 2 && dims.len() == 4 => match dims[1] {
            Some(c) => vec![c, s[0], s[1]],
            None => crate::usage_bail!(
                "{file}: input '{}' leaves its channels symbolic; give --input {}:CxHxW",
                vi.name,
                vi.name
            ),
        },
        Some(s) => s.clone(),
        None => dims
            .iter()
            .skip(1)
            .enumerate()
            .map(|(i, d)| {
                d.ok_or_else(|| {
                    let flag = format!("--input {}:{}", vi.name, example_size(dims.len() - 1));
                    let fix = format!("give its size, e.g. {flag}");
                    anyhow::Error::new(crate::error::UsageError(format!(
                        "{file}: input '{}' leaves dimension {} symbolic: {fix}",
                        vi.name,
                        i + 1,
                    )))
                })
            })
            .collect::<Result<Vec<usize>>>()?,
    })
}

fn example_size(rank: usize) -> &'static str {
    match rank {
        3 => "3x224x224",
        1 => "128",
        _ => "AxB",
    }
}

/// An input's element type and dimensions (None where symbolic).
fn value_type(vi: &proto::ValueInfoProto) -> Result<(InputDType, Vec<Option<usize>>)> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let Some(T::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("is not a tensor");
    };
    let dtype = match DataType::try_from(t.elem_type) {
        Ok(DataType::Float) => InputDType::F32,
        Ok(DataType::Int64) => InputDType::I64,
        other => bail!("has element type {other:?}; cut reads float and int64 inputs"),
    };
    let dims = t
        .shape
        .as_ref()
        .ok_or_else(|| anyhow!("has no shape"))?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(n)) if *n > 0 => Some(*n as usize),
            _ => None,
        })
        .collect::<Vec<_>>();
    if dims.is_empty() {
        bail!("is a scalar; cut reads batched inputs");
    }
    Ok((dtype, dims))
}

/// Each graph output as a task of the same name: its kind from `--task-kinds` (else `output`),
/// its width the output's first per-sample size.
fn declare_outputs(
    cx: &ImportCx,
    outputs: &[proto::ValueInfoProto],
    opts: &ImportOptions,
) -> Result<(Vec<GraphOutput>, Vec<TaskSpec>)> {
    let file = cx.file.display();
    if let Some(unknown) = opts.task_kinds.keys().find(|k| !outputs.iter().any(|o| &o.name == *k)) {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        crate::usage_bail!(
            "{file}: --task-kinds names '{unknown}', which is not an output (outputs: {})",
            names.join(", ")
        );
    }
    let mut graph_outputs = Vec::new();
    let mut tasks = Vec::new();
    for o in outputs {
        let Some(Value::Live { node, shape }) = cx.values.get(&o.name) else {
            bail!("{file}: output '{}' is a constant or is never computed", o.name);
        };
        graph_outputs.push(GraphOutput {
            task: o.name.clone(),
            node: node.clone(),
        });
        tasks.push(TaskSpec {
            name: o.name.clone(),
            kind: opts.task_kinds.get(&o.name).copied().unwrap_or(TaskKind::Output),
            outputs: shape.first().copied().unwrap_or(1),
            labels: None,
            distill: false,
        });
    }
    Ok((graph_outputs, tasks))
}

impl ImportCx {
    /// One ONNX node: folded when its inputs are known now, else converted.
    fn node(&mut self, node: &NodeProto) -> Result<()> {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            bail!("is in domain '{}'; cut imports the default ONNX domain", node.domain);
        }
        if node.op_type != "Where" && node.input.iter().any(|i| self.nan_tests.contains_key(i)) {
            bail!("reads the result of an IsNaN other than as the guard Where(IsNaN(p), 0, p)");
        }
        if let Some(mut region) = self.mask.take() {
            let skip = region.skip(self, node);
            let done = if skip { Ok(()) } else { region.materialise(self, node) };
            self.mask = Some(region);
            done?;
            if skip {
                self.folded += 1;
                return Ok(());
            }
        }
        if fold::try_fold(self, node)? {
            self.folded += 1;
        } else {
            let Some((_, convert)) = CONVERTERS.iter().find(|(op, _)| *op == node.op_type) else {
                if fold::FOLDABLE.contains(&node.op_type.as_str()) {
                    crate::usage_bail!(
                        "op '{}' on computed values is not supported (cut evaluates it on constants and shapes only)",
                        node.op_type
                    );
                }
                crate::usage_bail!(
                    "op '{}' is not supported (cut imports: {})",
                    node.op_type,
                    supported_ops().join(", ")
                );
            };
            convert(self, node)?;
        }
        self.release_read_constants(node);
        Ok(())
    }

    /// Drops the constants this node was the last to read.
    fn release_read_constants(&mut self, node: &NodeProto) {
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            let Some(left) = self.pending.get_mut(name) else {
                continue;
            };
            *left = left.saturating_sub(1);
            if *left == 0 && matches!(self.values.get(name), Some(Value::Const(_))) {
                self.values.remove(name);
            }
        }
    }

    /// The value of input `i` (an error when missing).
    pub fn value(&self, node: &NodeProto, i: usize) -> Result<&Value> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("has no input {i}"))?;
        self.values
            .get(name)
            .ok_or_else(|| anyhow!("reads '{name}', which nothing computes"))
    }

    /// Whether input `i` is given.
    pub fn has_input(node: &NodeProto, i: usize) -> bool {
        node.input.get(i).is_some_and(|n| !n.is_empty())
    }

    /// Input `i` as a value computed at run time: its node and per-sample shape.
    pub fn live(&self, node: &NodeProto, i: usize) -> Result<(String, Vec<usize>)> {
        match self.value(node, i)? {
            Value::Live { node, shape } => Ok((node.clone(), shape.clone())),
            Value::Const(_) => bail!(
                "input {i} ('{}') is a constant where cut expects a computed value",
                node.input[i]
            ),
            Value::Moved { .. } => bail!(
                "input {i} ('{}') has its batch axis moved by a transpose; cut follows that only into a split, gather or squeeze of the new first axis",
                node.input[i]
            ),
            Value::Folded { node: name, shape } if FOLDED_OK.contains(&node.op_type.as_str()) => {
                Ok((name.clone(), shape.clone()))
            }
            Value::Folded { .. } => bail!(
                "input {i} ('{}') holds several pieces of each sample along the batch axis; cut follows that only through transposes, reshapes, element-wise ops and matmuls",
                node.input[i]
            ),
        }
    }

    /// Input `i` as a constant.
    pub fn constant(&self, node: &NodeProto, i: usize) -> Result<&Tensor> {
        match self.value(node, i)? {
            Value::Const(t) => Ok(t),
            Value::Live { .. } | Value::Moved { .. } | Value::Folded { .. } => bail!(
                "input {i} ('{}') must be a constant (a weight or a size)",
                node.input[i]
            ),
        }
    }

    /// Input `i` as a parameter of the graph, under the initializer's name (a new name when
    /// another node already reads it, so each layer owns its weights), or `name_hint` for a
    /// folded constant. Returns the parameter's name.
    pub fn param(&mut self, node: &NodeProto, i: usize, t: Tensor) -> Result<String> {
        let base = node.input[i].clone();
        let mut name = base.clone();
        let mut n = 2;
        while self.params.contains_key(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        self.params
            .insert(name.clone(), t.to_kind(tch::Kind::Float).contiguous());
        Ok(name)
    }

    /// Adds a graph node computing the node's first output from the graph nodes `inputs`.
    pub fn add(&mut self, node: &NodeProto, op: Op, inputs: Vec<String>) -> Result<()> {
        self.add_output(node, 0, &node_name(node), op, inputs)
    }

    /// Adds a graph node (named after `base`) computing output `k` of the node.
    pub fn add_output(&mut self, node: &NodeProto, k: usize, base: &str, op: Op, inputs: Vec<String>) -> Result<()> {
        let folded = self.reads_folded(node)?;
        let name = self.add_named(base, op, inputs)?;
        let shape = self.node_shapes[&name].clone();
        let out = node.output.get(k).ok_or_else(|| anyhow!("has no output {k}"))?;
        let value = if folded {
            Value::Folded { node: name, shape }
        } else {
            Value::Live { node: name, shape }
        };
        self.values.insert(out.clone(), value);
        Ok(())
    }

    /// Marks graph node `to`, cut from `from`, as holding a moved folded batch axis when `from` does.
    pub fn inherit_fold(&mut self, from: &str, to: &str) {
        if self.folded_moved.contains(from) {
            self.folded_moved.insert(to.to_string());
        }
    }

    /// Whether the node reads a folded value (then its output is folded); an error when it also
    /// reads a computed value that is not.
    fn reads_folded(&self, node: &NodeProto) -> Result<bool> {
        let inputs = node.input.iter().filter_map(|i| self.values.get(i));
        let (mut folded, mut live) = (false, false);
        for v in inputs {
            match v {
                Value::Folded { .. } => folded = true,
                Value::Live { .. } | Value::Moved { .. } => live = true,
                Value::Const(_) => {}
            }
        }
        if folded && live {
            bail!("combines a value holding several pieces of each sample along the batch axis with one that does not");
        }
        Ok(folded)
    }

    /// Adds a graph node named after `base` (made unique); its shape is inferred by the op.
    /// Returns its name.
    pub fn add_named(&mut self, base: &str, op: Op, inputs: Vec<String>) -> Result<String> {
        let name = self.fresh_name(base);
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|i| self.shape_of_node(i)).collect::<Result<_>>()?;
        let refs: Vec<&Vec<usize>> = shapes.iter().collect();
        op.def().validate(&name)?;
        let cx = crate::graph::ops::ShapeCx {
            node: &name,
            input_names: &inputs,
            input: &[],
        };
        let shape = op.def().infer(&cx, &refs)?;
        self.nodes.push(Node {
            name: name.clone(),
            inputs,
            head: None,
            op,
        });
        self.node_shapes.insert(name.clone(), shape);
        Ok(name)
    }

    /// Whether `name` is one of the file's initializers.
    pub fn is_initializer(&self, name: &str) -> bool {
        self.initializers.contains(name)
    }

    /// Output `k` of the node is the value `value` (no node: an identity, a folded constant).
    pub fn alias(&mut self, node: &NodeProto, k: usize, value: Value) {
        if let Some(out) = node.output.get(k) {
            self.values.insert(out.clone(), value);
        }
    }

    /// How many nodes and graph outputs read the ONNX value `name`.
    pub fn readers(&self, name: &str) -> usize {
        self.readers.get(name).copied().unwrap_or(0)
    }

    /// The linear layer of graph node `name`, to give it a bias.
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut crate::graph::ops::Linear> {
        match self.nodes.iter_mut().find(|n| n.name == name).map(|n| &mut n.op) {
            Some(Op::Linear(l)) => Some(l),
            _ => None,
        }
    }

    /// The per-sample shape of a graph node already added.
    pub fn shape_of_node(&self, name: &str) -> Result<Vec<usize>> {
        self.node_shapes
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("internal error: node '{name}' has no shape"))
    }

    fn fresh_name(&self, base: &str) -> String {
        let base = if base.is_empty() { "node" } else { base };
        let mut name = base.to_string();
        let mut n = 2;
        while self.node_shapes.contains_key(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        name
    }
}
