//! int8 ONNX in QDQ form, statically calibrated: an f32 ONNX file in, the same graph with
//! `QuantizeLinear`/`DequantizeLinear` pairs out (the form ONNX Runtime, TensorRT and OpenVINO
//! read and fuse into int8 kernels). `plan.rs` decides what runs in int8, `calibrate.rs` measures
//! activation ranges in ONNX Runtime, `rewrite.rs` writes the nodes. See docs/int8.md.

mod calibrate;
mod plan;
mod rewrite;

pub use calibrate::Method;

use crate::graph::onnx::proto::ModelProto;
use anyhow::{anyhow, Result};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

/// Calibration inputs when none are asked for.
pub const DEFAULT_CALIBRATION: usize = 100;

/// How to quantize.
#[derive(Clone, Debug)]
pub struct Int8Options {
    /// At most this many calibration inputs.
    pub calibration: usize,
    pub method: Method,
    /// What stays f32 (see `plan::check_rules`): `first`, `last`, op types, node-name prefixes.
    pub keep_float: Vec<String>,
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            calibration: DEFAULT_CALIBRATION,
            method: Method::Percentile(99.999),
            keep_float: Vec::new(),
        }
    }
}

/// What the quantization did, for reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Int8Summary {
    pub calibration_inputs: usize,
    pub calibration: String,
    pub weights: String,
    pub activations: String,
    pub keep_float: Vec<String>,
    /// Nodes running in int8, by op type (a Gather: its table stored in int8).
    pub int8_nodes: BTreeMap<String, usize>,
    /// Weight nodes the rules kept in f32, by name.
    pub float_weight_nodes: Vec<String>,
}

/// An int8 file: its bytes, its node count and what was quantized.
pub struct Quantized {
    pub bytes: Vec<u8>,
    pub nodes: usize,
    pub summary: Int8Summary,
}

/// The int8 QDQ form of the f32 ONNX model `f32_model`, calibrated on `batches` (the graph's
/// inputs by name).
pub fn quantize(
    f32_model: &[u8],
    batches: &mut dyn Iterator<Item = Result<BTreeMap<String, Tensor>>>,
    opts: &Int8Options,
) -> Result<Quantized> {
    if opts.calibration == 0 {
        crate::usage_bail!("--calibration 0: int8 needs at least one calibration input");
    }
    let model = ModelProto::decode(f32_model).map_err(|e| anyhow!("int8: the f32 model does not decode ({e})"))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("int8: the model has no graph"))?;
    let plan = plan::plan(graph, &opts.keep_float)?;
    let names: std::collections::BTreeSet<&str> = plan.activations.iter().map(|a| a.calibrate.as_str()).collect();
    let names: Vec<&str> = names.into_iter().collect();
    let (ranges, seen) = calibrate::ranges(&model, &names, batches, opts.method)?;
    if seen == 0 {
        crate::usage_bail!("int8: no calibration inputs (the data's training split is empty)");
    }
    let params = ranges
        .iter()
        .map(|(k, &(lo, hi))| (k.clone(), rewrite::activation_params(lo, hi)))
        .collect();
    let quantized_graph = rewrite::Rewrite { plan: &plan, params }.apply(graph)?;
    let mut int8_nodes = BTreeMap::new();
    for &i in plan
        .weight_nodes
        .iter()
        .chain(&plan.add_nodes)
        .chain(&plan.pools)
        .chain(&plan.tables)
    {
        *int8_nodes.entry(graph.node[i].op_type.clone()).or_insert(0) += 1;
    }
    let nodes = quantized_graph.node.len();
    let out = ModelProto {
        graph: Some(quantized_graph),
        ..model.clone()
    };
    let summary = Int8Summary {
        calibration_inputs: seen,
        calibration: opts.method.describe(),
        weights: "int8, symmetric, one scale per output channel (one per embedding table)".into(),
        activations: "uint8, one scale and zero point per tensor".into(),
        keep_float: opts.keep_float.clone(),
        int8_nodes,
        float_weight_nodes: plan.kept_float.clone(),
    };
    Ok(Quantized {
        bytes: out.encode_to_vec(),
        nodes,
        summary,
    })
}
