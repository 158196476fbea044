//! Which nodes of an f32 ONNX graph run in int8, and which tensors carry int8 between them.
//!
//! - Weight nodes (`Conv`, `Gemm`, `MatMul` with a constant weight) get int8 weights, and int8
//!   activations on their input and (but a MatMul's) output.
//! - An `Add`, `Mul`, `Sigmoid`, `Concat` or average pool whose inputs are all int8 keeps its
//!   output in int8 too (`INT8_BETWEEN`).
//! - A `Relu` (or a ReLU6 `Clip`) that is the only reader of a quantized output is absorbed into
//!   that output's quantization: the quantized range clips as it does.
//! - A `MaxPool` of int8 values stays int8 at their scale.
//! - Embedding tables read by `Gather` are stored in int8.
//!
//! Everything else stays f32.

use crate::graph::onnx::proto::{GraphProto, NodeProto};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ops without weights that run in int8 when every input is int8 (ONNX Runtime has QLinearAdd,
/// QLinearMul, QLinearSigmoid, QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool for
/// most of them): SiLU (`x * sigmoid(x)`), squeeze-excitation gates and concatenations stay in
/// int8. (It has no int8 hard-swish: that one runs in f32 between its DequantizeLinear and
/// QuantizeLinear.)
pub const INT8_BETWEEN: [&str; 8] = [
    "Add",
    "Mul",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Concat",
    "AveragePool",
    "GlobalAveragePool",
];

/// `n` is one of `INT8_BETWEEN` and reads only int8 activations (no constants).
fn int8_between(n: &NodeProto, carried: &Carried, ix: &Index) -> bool {
    let arity_ok = match n.op_type.as_str() {
        "Add" | "Mul" => n.input.len() == 2,
        "Concat" => !n.input.is_empty(),
        op => INT8_BETWEEN.contains(&op) && n.input.len() == 1,
    };
    arity_ok
        && n.output.len() == 1
        && n.input
            .iter()
            .all(|x| carried.contains_key(x) && !ix.initializers.contains_key(x.as_str()))
}

/// Ops with a weight that run in int8, and the others `plan` handles besides `INT8_BETWEEN`.
const WEIGHT_OPS: [&str; 3] = ["Conv", "Gemm", "MatMul"];
const OTHER_OPS: [&str; 2] = ["MaxPool", "Gather"];

/// The ops that can run in int8 here (what `--keep-float` may name by type).
pub fn quantizable() -> impl Iterator<Item = &'static str> {
    WEIGHT_OPS.into_iter().chain(INT8_BETWEEN).chain(OTHER_OPS)
}

fn is_quantizable(op: &str) -> bool {
    quantizable().any(|q| q == op)
}

/// An activation carried in int8: `QuantizeLinear` reads `source`, `DequantizeLinear` writes
/// `output` (which readers then read), with the range that `calibrate` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    pub source: String,
    pub output: String,
    pub calibrate: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Node indices whose weight (and bias) become int8.
    pub weight_nodes: BTreeSet<usize>,
    /// Nodes without weights between int8 activations (`INT8_BETWEEN`).
    pub add_nodes: BTreeSet<usize>,
    /// `Relu` and ReLU6 `Clip` nodes folded into the quantization before them.
    pub absorbed: BTreeSet<usize>,
    /// Gather nodes whose constant table becomes int8.
    pub tables: BTreeSet<usize>,
    /// MaxPool nodes between int8 values.
    pub pools: BTreeSet<usize>,
    pub activations: Vec<Activation>,
    /// Weight nodes left in f32 by the `keep_float` rules, by node name.
    pub kept_float: Vec<String>,
}

/// A rule for what stays f32: `first` (weight nodes no other weight node feeds), `last` (weight
/// nodes that feed no other), an op type of [`quantizable`], or a node-name prefix.
pub fn check_rules(rules: &[String], graph: &GraphProto) -> Result<()> {
    for r in rules {
        let known = matches!(r.as_str(), "first" | "last") || is_quantizable(r);
        if !known && !graph.node.iter().any(|n| n.name.starts_with(r.as_str())) {
            crate::usage_bail!(
                "--keep-float {r}: not first, last, an op type ({}) or the start of a node name in the model",
                quantizable().collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

struct Index<'g> {
    graph: &'g GraphProto,
    initializers: HashMap<&'g str, &'g crate::graph::onnx::proto::TensorProto>,
    consumers: HashMap<&'g str, Vec<usize>>,
    producer: HashMap<&'g str, usize>,
    outputs: BTreeSet<&'g str>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Index<'g> {
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut producer = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(i);
            }
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
        }
        Index {
            graph,
            initializers: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            consumers,
            producer,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    /// An f32 initializer of `rank` dimensions.
    fn float_weight(&self, name: &str, rank: usize) -> bool {
        self.initializers.get(name).is_some_and(|t| {
            t.data_type == crate::graph::onnx::DataType::Float as i32 && t.dims.len() == rank && !t.raw_data.is_empty()
        })
    }

    fn is_weight_node(&self, n: &NodeProto) -> bool {
        let attrs = |name: &str| n.attribute.iter().find(|a| a.name == name);
        let int = |name: &str, default: i64| attrs(name).map_or(default, |a| a.i);
        let float = |name: &str| attrs(name).map_or(1.0, |a| a.f);
        let weight = |rank| n.input.len() > 1 && self.float_weight(&n.input[1], rank);
        let bias_ok = n.input.len() < 3 || self.float_weight(&n.input[2], 1);
        match n.op_type.as_str() {
            "Conv" => weight(4) && bias_ok,
            "Gemm" => {
                weight(2)
                    && bias_ok
                    && int("transA", 0) == 0
                    && int("transB", 0) == 1
                    && float("alpha") == 1.0
                    && float("beta") == 1.0
            }
            "MatMul" => weight(2) && !self.initializers.contains_key(n.input[0].as_str()),
            _ => false,
        }
    }

    /// `tensor` is what the model returns: a graph output read by nothing else, or read only by
    /// `Identity` nodes that are graph outputs (how `cut export` names outputs by task).
    fn is_model_output(&self, tensor: &str) -> bool {
        let readers = self.consumers.get(tensor).map(Vec::as_slice).unwrap_or_default();
        let renamed_output = |&i: &usize| {
            let n = &self.graph.node[i];
            n.op_type == "Identity" && self.outputs.contains(n.output[0].as_str())
        };
        (self.outputs.contains(tensor) && readers.is_empty())
            || (!readers.is_empty() && readers.iter().all(renamed_output))
    }

    /// What readers of `tensor` (an output of a quantized node) see: the output of the one
    /// clamping activation reading it, absorbed, or the tensor itself.
    fn visible(&self, tensor: &str) -> (String, Option<usize>) {
        match self.consumers.get(tensor).map(Vec::as_slice) {
            Some(&[only]) if !self.outputs.contains(tensor) => {
                let n = &self.graph.node[only];
                if self.clamps_at_or_below_zero(n) && !self.outputs.contains(n.output[0].as_str()) {
                    return (n.output[0].clone(), Some(only));
                }
                (tensor.to_string(), None)
            }
            _ => (tensor.to_string(), None),
        }
    }

    /// A `Relu`, or a `Clip` whose lower bound is at most 0 (ReLU6): quantizing its input to the
    /// range of its output clamps as it does, since that range holds 0 and lies within the clip's
    /// bounds. (A lower bound above 0 would let values between 0 and it through.)
    fn clamps_at_or_below_zero(&self, n: &NodeProto) -> bool {
        match n.op_type.as_str() {
            "Relu" => true,
            "Clip" => {
                let bound = |i: usize| -> Option<f32> {
                    let t = self.initializers.get(n.input.get(i)?.as_str())?;
                    (t.data_type == crate::graph::onnx::DataType::Float as i32 && t.raw_data.len() == 4)
                        .then(|| f32::from_le_bytes(t.raw_data[..4].try_into().unwrap()))
                };
                let low_ok = n.input.len() < 2 || n.input[1].is_empty() || bound(1).is_some_and(|lo| lo <= 0.0);
                let high_ok = n.input.len() < 3 || n.input[2].is_empty() || bound(2).is_some_and(|hi| hi >= 0.0);
                low_ok && high_ok
            }
            _ => false,
        }
    }
}

/// The plan for `graph`, leaving f32 what `keep_float` names.
pub fn plan(graph: &GraphProto, keep_float: &[String]) -> Result<Plan> {
    check_rules(keep_float, graph)?;
    let ix = Index::new(graph);
    let candidates: BTreeSet<usize> = (0..graph.node.len())
        .filter(|&i| ix.is_weight_node(&graph.node[i]))
        .collect();
    let (first, last) = first_and_last(&ix, &candidates);
    let kept = |i: usize| {
        let n = &graph.node[i];
        keep_float.iter().any(|r| match r.as_str() {
            "first" => first.contains(&i),
            "last" => last.contains(&i),
            op if is_quantizable(op) => n.op_type == op,
            prefix => n.name.starts_with(prefix),
        })
    };
    let mut plan = Plan::default();
    let mut carried = Carried::new();
    for &i in &candidates {
        if kept(i) {
            plan.kept_float.push(graph.node[i].name.clone());
            continue;
        }
        plan.weight_nodes.insert(i);
    }
    for (i, n) in graph.node.iter().enumerate() {
        if plan.weight_nodes.contains(&i) {
            carried
                .entry(n.input[0].clone())
                .or_insert((n.input[0].clone(), None, None));
        }
    }
    for (i, n) in graph.node.iter().enumerate() {
        let on_int8 = !kept(i) && int8_between(n, &carried, &ix);
        // A MatMul's output stays f32: ONNX Runtime then runs it as MatMulIntegerToFloat, and the
        // bias Add after it (a transformer's linear layer) needs no requantization.
        // A model output stays f32: quantizing it would round what the user gets.
        let int8_output =
            !ix.is_model_output(&n.output[0]) && (on_int8 || (plan.weight_nodes.contains(&i) && n.op_type != "MatMul"));
        if int8_output {
            let (visible, relu) = ix.visible(&n.output[0]);
            if let Some(r) = relu {
                plan.absorbed.insert(r);
            }
            carried.insert(visible, (n.output[0].clone(), relu, None));
            if on_int8 {
                plan.add_nodes.insert(i);
            }
        }
        // A max pool of int8 values is int8 at the same scale (the maximum commutes with the
        // rounding): ONNX Runtime then pools the codes.
        if n.op_type == "MaxPool" && n.output.len() == 1 && !kept(i) {
            if let Some((_, _, range)) = carried.get(&n.input[0]) {
                let range = range.clone().unwrap_or_else(|| n.input[0].clone());
                carried.insert(n.output[0].clone(), (n.output[0].clone(), None, Some(range)));
                plan.pools.insert(i);
            }
        }
        if n.op_type == "Gather" && !kept(i) && ix.float_weight(&n.input[0], 2) {
            plan.tables.insert(i);
        }
    }
    plan.activations = activations(&ix, carried)?;
    Ok(plan)
}

/// What the pass carries in int8: by the name readers see, the tensor QuantizeLinear reads, the
/// ReLU absorbed into it, and the tensor whose range it takes when not its own.
type Carried = BTreeMap<String, (String, Option<usize>, Option<String>)>;

/// The activations to quantize, from what the pass carries.
fn activations(ix: &Index, carried: Carried) -> Result<Vec<Activation>> {
    let mut out = Vec::new();
    for (visible, (source, relu, range)) in carried {
        if ix.initializers.contains_key(visible.as_str()) {
            bail!("int8: tensor '{visible}' is a constant where an activation was expected");
        }
        out.push(Activation {
            output: if relu.is_some() {
                visible.clone()
            } else {
                format!("{visible}/dq")
            },
            source,
            calibrate: range.unwrap_or(visible),
        });
    }
    Ok(out)
}

/// Weight nodes that no other weight node feeds (first) and that feed no other (last).
fn first_and_last(ix: &Index, weights: &BTreeSet<usize>) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let nodes = &ix.graph.node;
    // after[i]: some weight node runs before node i on a path to it.
    let mut after = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        after[i] = n
            .input
            .iter()
            .filter_map(|x| ix.producer.get(x.as_str()))
            .any(|&p| weights.contains(&p) || after[p]);
    }
    let mut feeds = vec![false; nodes.len()];
    for i in (0..nodes.len()).rev() {
        feeds[i] = nodes[i]
            .output
            .iter()
            .filter_map(|o| ix.consumers.get(o.as_str()))
            .flatten()
            .any(|&c| weights.contains(&c) || feeds[c]);
    }
    let first = weights.iter().copied().filter(|&w| !after[w]).collect();
    let last = weights.iter().copied().filter(|&w| !feeds[w]).collect();
    (first, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::onnx::proto::{TensorProto, ValueInfoProto};
    use crate::graph::onnx::DataType;

    fn weight(name: &str, dims: Vec<i64>) -> TensorProto {
        let n: i64 = dims.iter().product();
        TensorProto {
            name: name.into(),
            data_type: DataType::Float as i32,
            dims,
            raw_data: vec![0u8; 4 * n as usize].into(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// x -> Conv -> Relu -> MaxPool -> Conv -> Sigmoid -> y: the ReLU is absorbed, the pool takes
    /// its input's range, the model output stays f32.
    fn graph() -> GraphProto {
        GraphProto {
            node: vec![
                node("Conv", &["x", "w1", "b1"], "c1"),
                node("Relu", &["c1"], "r1"),
                node("MaxPool", &["r1"], "p1"),
                node("Conv", &["p1", "w2"], "c2"),
                node("Sigmoid", &["c2"], "y"),
            ],
            initializer: vec![
                weight("w1", vec![4, 3, 3, 3]),
                weight("b1", vec![4]),
                weight("w2", vec![2, 4, 1, 1]),
            ],
            input: vec![ValueInfoProto {
                name: "x".into(),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn what_runs_in_int8_by_hand() {
        let g = graph();
        let p = plan(&g, &[]).unwrap();
        assert_eq!(p.weight_nodes, BTreeSet::from([0, 3]));
        assert_eq!(p.absorbed, BTreeSet::from([1]));
        assert_eq!(p.pools, BTreeSet::from([2]));
        let act = |source: &str| p.activations.iter().find(|a| a.source == source).cloned();
        let x = act("x").unwrap();
        assert_eq!((x.output.as_str(), x.calibrate.as_str()), ("x/dq", "x"));
        // The first conv's output is quantized to the ReLU's range and written as the ReLU's output.
        let c1 = act("c1").unwrap();
        assert_eq!((c1.output.as_str(), c1.calibrate.as_str()), ("r1", "r1"));
        // The pool keeps the scale of what it pools.
        assert_eq!(act("p1").unwrap().calibrate, "r1");
        // The Sigmoid reads an int8 value, but its output is the model's: f32.
        assert!(act("c2").is_some() && act("y").is_none());
        assert_eq!(p.activations.len(), 4);
    }

    #[test]
    fn keep_float_rules() {
        let g = graph();
        let first = plan(&g, &["first".into()]).unwrap();
        assert_eq!(first.weight_nodes, BTreeSet::from([3]));
        assert_eq!(first.kept_float, ["c1"]);
        let last = plan(&g, &["last".into()]).unwrap();
        assert_eq!(last.weight_nodes, BTreeSet::from([0]));
        let by_op = plan(&g, &["Conv".into()]).unwrap();
        assert!(by_op.weight_nodes.is_empty() && by_op.activations.is_empty());
        let err = plan(&g, &["nothing".into()]).unwrap_err().to_string();
        assert!(err.contains("--keep-float nothing"), "{err}");
    }
}
