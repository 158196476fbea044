//! The export itself: the selected tasks, batch norms folded into their convolutions, the walk
//! over the graph, the file and its external data. Shapes come from the graph, so reshapes are
//! constants per layer (uneven heads per layer need nothing special) and only the batch (and, for
//! text, the sequence length) is left dynamic.

use super::{proto, DataType, ExportCx, GraphBuilder};

use crate::graph::passes::fold_batch_norms;
use crate::graph::shapes::infer_sizes;
use crate::graph::{inputs::Dim, inputs::InputDType, Graph, Model, Params};
use anyhow::{anyhow, bail, Result};
use prost::Message;
use proto::{
    tensor_shape_proto::{dimension::Value as DimValue, Dimension},
    type_proto, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::collections::{BTreeMap, HashMap};

/// The opset written when none is asked for: ONNX Runtime, TensorRT 10 and OpenVINO all read it.
pub const DEFAULT_OPSET: i64 = 17;
/// The newest opset `cut` writes.
pub const MAX_OPSET: i64 = 21;
/// Above this many bytes of weights, tensors go to a `.data` file beside the model (protobuf
/// messages stop at 2 GiB).
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1 << 31;

/// How to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub opset: i64,
    /// Store weights in f16 (computation stays f32).
    pub half: bool,
    /// Fixed sizes: "batch", and the graph's named sizes ("seq", "height", "width"). Without a
    /// batch, the batch is dynamic; without "seq", a text model's sequence length is dynamic.
    /// Image sizes default to the graph's.
    pub sizes: BTreeMap<String, usize>,
    /// Weights above this many bytes go to an external data file.
    pub external_threshold: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: DEFAULT_OPSET,
            half: false,
            sizes: BTreeMap::new(),
            external_threshold: EXTERNAL_DATA_THRESHOLD,
        }
    }
}

/// The bytes of an export: the model, and the external data when the weights are large.
pub struct Exported {
    pub model: Vec<u8>,
    /// The `.data` file's bytes, whose name the model refers to.
    pub external: Option<Vec<u8>>,
    pub nodes: usize,
}

fn value_info(name: &str, elem: DataType, dims: Vec<DimValue>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The IR version that goes with an opset.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// The model for the tasks its graph has (restrict it with `Model::keep_tasks` first), as ONNX.
/// `external_name` is the file name the model gives its external data, when it has any.
pub fn export(model: &Model, params: &Params, opts: &ExportOptions, external_name: &str) -> Result<Exported> {
    check_options(opts)?;
    let (graph, params, _) = fold_batch_norms(&model.graph, params)?;
    // A text encoder, or a split's cloud part reading tokens (its pooled count stays dynamic too).
    let dynamic_seq = graph.sizes.contains_key("seq") && !opts.sizes.contains_key("seq");
    let mut sizes = graph.sizes.clone();
    sizes.extend(
        opts.sizes
            .iter()
            .filter(|(k, _)| *k != "batch")
            .map(|(k, v)| (k.clone(), *v)),
    );
    let shapes = infer_sizes(&graph, &sizes)?;
    let batch = match opts.sizes.get("batch") {
        Some(&b) => DimValue::DimValue(b as i64),
        None => DimValue::DimParam("batch".into()),
    };
    let mut b = GraphBuilder::new(opts.opset, opts.half);
    let inputs = declare_inputs(&graph, &sizes, &batch, dynamic_seq)?;
    let values = emit_nodes(&graph, &params, &shapes, dynamic_seq, &mut b)?;
    let outputs = declare_outputs(&graph, &shapes, &values, &batch, &mut b)?;
    let nodes = b.nodes.len();
    let weight_bytes: u64 = b.initializers.iter().map(|t| t.raw_data.len() as u64).sum();
    let external = if weight_bytes > opts.external_threshold {
        Some(move_to_external(&mut b.initializers, external_name))
    } else {
        None
    };
    let proto = proto::ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "cut".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(proto::GraphProto {
            name: graph.family.clone().unwrap_or_else(|| "cut".into()),
            node: std::mem::take(&mut b.nodes),
            initializer: std::mem::take(&mut b.initializers),
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        metadata_props: metadata(model, &graph)?,
        ..Default::default()
    };
    Ok(Exported {
        model: proto.encode_to_vec(),
        external,
        nodes,
    })
}

fn check_options(opts: &ExportOptions) -> Result<()> {
    if !(13..=MAX_OPSET).contains(&opts.opset) {
        crate::usage_bail!("--opset {} is not one cut writes (13 to {MAX_OPSET})", opts.opset);
    }
    if let Some((name, _)) = opts.sizes.iter().find(|(_, &v)| v == 0) {
        let flag = match name.as_str() {
            "batch" => "--batch",
            "seq" => "--seq-len",
            _ => "--size",
        };
        crate::usage_bail!("{flag} 0: a fixed {name} size must be at least 1");
    }
    Ok(())
}

/// The graph's inputs: the batch first, then each dimension fixed or (a text model's sequence)
/// dynamic.
fn declare_inputs(
    graph: &Graph,
    sizes: &BTreeMap<String, usize>,
    batch: &DimValue,
    dynamic_seq: bool,
) -> Result<Vec<proto::ValueInfoProto>> {
    let mut inputs = Vec::new();
    for decl in &graph.inputs {
        let mut dims = vec![batch.clone()];
        for d in &decl.dims {
            dims.push(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Named(s) if (s == "seq" || s == crate::split::POOLED_SEQ) && dynamic_seq => {
                    DimValue::DimParam(s.clone())
                }
                Dim::Named(s) => DimValue::DimValue(
                    *sizes
                        .get(s)
                        .ok_or_else(|| anyhow!("input '{}' needs a size for '{s}'", decl.name))?
                        as i64,
                ),
            });
        }
        let elem = match decl.dtype {
            InputDType::F32 => DataType::Float,
            InputDType::I64 => DataType::Int64,
        };
        inputs.push(value_info(&decl.name, elem, dims));
    }
    Ok(inputs)
}

/// Every node the outputs need, in graph order, each written by its op: the ONNX value of each.
fn emit_nodes<'g>(
    graph: &'g Graph,
    params: &Params,
    shapes: &HashMap<String, Vec<usize>>,
    dynamic_seq: bool,
    b: &mut GraphBuilder,
) -> Result<BTreeMap<&'g str, String>> {
    let needed = graph.needed_nodes(&graph.outputs.iter().map(|o| o.task.as_str()).collect::<Vec<_>>());
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for node in graph.nodes.iter().filter(|n| needed.contains(n.name.as_str())) {
        let args: Vec<&str> = node
            .inputs
            .iter()
            .map(|i| values.get(i.as_str()).map(String::as_str).unwrap_or(i.as_str()))
            .collect();
        let mut cx = ExportCx {
            node: &node.name,
            params,
            input_shapes: node.inputs.iter().map(|i| shapes[i].clone()).collect(),
            output_shape: shapes[&node.name].clone(),
            dynamic_seq,
            graph: b,
        };
        let out = node
            .op
            .def()
            .export(&mut cx, &args)
            .map_err(|e| anyhow!("node '{}' ({}): {e}", node.name, node.op.name()))?;
        values.insert(&node.name, out);
    }
    Ok(values)
}

/// One output per task, named by the task, batch first.
fn declare_outputs(
    graph: &Graph,
    shapes: &HashMap<String, Vec<usize>>,
    values: &BTreeMap<&str, String>,
    batch: &DimValue,
    b: &mut GraphBuilder,
) -> Result<Vec<proto::ValueInfoProto>> {
    let mut outputs = Vec::new();
    for o in &graph.outputs {
        if graph.inputs.iter().any(|i| i.name == o.task) {
            bail!(
                "task '{}' has the name of a graph input; ONNX outputs are named by task",
                o.task
            );
        }
        let value = values[o.node.as_str()].clone();
        b.emit("Identity", &[&value], &[&o.task], vec![]);
        let rank = shapes[&o.node].len() + 1;
        let dims = (0..rank)
            .map(|i| match i {
                0 => batch.clone(),
                _ => DimValue::DimParam(format!("{}_dim{i}", o.task)),
            })
            .collect();
        outputs.push(value_info(&o.task, DataType::Float, dims));
    }
    Ok(outputs)
}

/// What the file records of its model: task kinds and labels, the inputs' normalisation, a text
/// model's tokenizer.
fn metadata(model: &Model, graph: &Graph) -> Result<Vec<StringStringEntryProto>> {
    let tasks: Vec<serde_json::Value> = model
        .tasks
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "kind": t.kind.as_str(), "labels": t.labels}))
        .collect();
    let tasks = StringStringEntryProto {
        key: super::import::recorded::TASKS_KEY.into(),
        value: serde_json::to_string(&tasks)?,
    };
    Ok(std::iter::once(tasks)
        .chain(super::import::recorded::normalisation_entry(graph)?)
        .chain(super::import::recorded::tokenizer_entry(model))
        .collect())
}

/// Moves every initializer's bytes to one external file (offsets aligned to 4 KiB), leaving
/// references in the model.
fn move_to_external(initializers: &mut [proto::TensorProto], location: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for t in initializers.iter_mut() {
        data.resize(data.len().div_ceil(4096) * 4096, 0);
        let offset = data.len();
        let bytes = std::mem::take(&mut t.raw_data);
        data.extend_from_slice(&bytes);
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        t.data_location = proto::tensor_proto::DataLocation::External as i32;
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", bytes.len().to_string()),
        ];
    }
    data
}

/// The external data file's name for a model written to `out`: `<file name>.data`.
pub fn external_name(out: &std::path::Path) -> String {
    format!(
        "{}.data",
        out.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    )
}

/// Exports `model` (all its tasks) and stages the file(s) at `out` in `outputs`, refusing to
/// overwrite `inputs` (and existing files unless `force`).
pub fn stage(
    model: &Model,
    params: &Params,
    opts: &ExportOptions,
    out: &std::path::Path,
    inputs: &[&std::path::Path],
    force: bool,
    outputs: &mut crate::fsio::Outputs,
) -> Result<Exported> {
    let name = external_name(out);
    let data_path = out.with_file_name(&name);
    crate::fsio::check_output(out, inputs, force)?;
    let exported = export(model, params, opts, &name)?;
    outputs.stage(out, &exported.model)?;
    if let Some(data) = &exported.external {
        crate::fsio::check_output(&data_path, inputs, force)?;
        outputs.stage(&data_path, data)?;
    }
    Ok(exported)
}
