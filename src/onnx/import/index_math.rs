//! Index arithmetic on integer inputs. Hugging Face's exporters compute some values from the
//! token ids and the attention mask with arithmetic over the whole batch (ranges over the batch, a
//! flattened mask, gathers), which `cut`'s per-sample graph cannot hold: the additive bias that
//! attention scores take (BERT), RoBERTa's position ids, token type ids gathered from a buffer.
//! The importer finds the nodes that compute only from those inputs (and constants, and shapes),
//! skips them, and where a converted node reads their result it evaluates them on probe inputs:
//! a result that is one of the forms `cut` has an op for (`mask_bias`, `position_ids`) or that does
//! not depend on the inputs at all (a constant) takes their place; otherwise the import stops,
//! naming the value.

use super::{ImportCx, Value};
use crate::graph::onnx::proto::{tensor_proto::DataType, GraphProto, NodeProto};
use crate::graph::ops::{MaskBias, Op, PositionIds};
use anyhow::{anyhow, bail, Result};
use std::collections::{HashMap, HashSet};
use tch::{Kind, Tensor};

/// What a value is computed from: the token ids or the mask (by index arithmetic), or the model's
/// computation (an embedding lookup, a float input).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct From {
    ids: bool,
    mask: bool,
    main: bool,
}

impl From {
    /// Computed by index arithmetic on the integer inputs only.
    fn derived(self) -> bool {
        (self.ids || self.mask) && !self.main
    }
}

/// The integer inputs of a text graph and the nodes that compute only from them.
pub struct IndexRegion {
    ids: Option<String>,
    mask: Option<String>,
    /// Outputs of the skipped nodes (they are never converted).
    skipped: HashSet<String>,
    /// Derived values that a converted node reads, with the nodes that compute them (in file
    /// order, constants and shape arithmetic included) for the probe.
    boundary: HashMap<String, (From, Vec<NodeProto>)>,
    /// Boundary values already replaced.
    done: HashSet<String>,
    /// Constants the ids are compared with (RoBERTa's padding id).
    compared: Vec<i64>,
}

impl IndexRegion {
    /// The region of `graph`, if converted nodes read values derived from its integer inputs.
    pub fn find(graph: &GraphProto) -> Option<IndexRegion> {
        let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let (ids, mask) = integer_inputs(graph, &initializers);
        if ids.is_none() && mask.is_none() {
            return None;
        }
        let from = dependencies(graph, ids.as_deref(), mask.as_deref(), &initializers);
        let skipped = skipped_values(graph, &from);
        let inputs: HashSet<&str> = ids.iter().chain(mask.iter()).map(String::as_str).collect();
        let mut boundary = HashMap::new();
        for node in graph
            .node
            .iter()
            .filter(|n| n.op_type != "Shape" && !n.output.iter().all(|o| skipped.contains(o)))
        {
            for i in &node.input {
                let f = from.get(i.as_str()).copied().unwrap_or_default();
                if f.derived() && !inputs.contains(i.as_str()) {
                    boundary.insert(i.clone(), (f, ancestors(graph, i, &from)));
                }
            }
        }
        if boundary.is_empty() {
            return None;
        }
        let compared = compared_constants(graph, ids.as_deref());
        Some(IndexRegion {
            ids,
            mask,
            skipped,
            boundary,
            done: HashSet::new(),
            compared,
        })
    }

    /// Whether conversion skips `node` (its outputs are derived from the integer inputs only). A
    /// skipped cast keeps its input's value as a stand-in, so that the `Shape` of it folds.
    pub fn skip(&self, cx: &mut ImportCx, node: &NodeProto) -> bool {
        let skip = !node.output.is_empty() && node.output.iter().all(|o| self.skipped.contains(o));
        if skip && matches!(node.op_type.as_str(), "Cast" | "Identity") {
            if let Some(Value::Live { node: n, shape }) = cx.values.get(&node.input[0]) {
                let stand_in = Value::Live {
                    node: n.clone(),
                    shape: shape.clone(),
                };
                cx.alias(node, 0, stand_in);
            }
        }
        skip
    }

    /// Replaces every derived value that `node` reads by the op or constant it is, checked on
    /// probe inputs.
    pub fn materialise(&mut self, cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
        for name in &node.input {
            let Some((from, nodes)) = self.boundary.get(name) else {
                continue;
            };
            if !self.done.insert(name.clone()) {
                continue;
            }
            let value = self
                .replacement(cx, name, *from, nodes)
                .map_err(|e| anyhow!("the index arithmetic on the integer inputs that computes '{name}': {e}"))?;
            cx.values.insert(name.clone(), value);
        }
        Ok(())
    }

    /// What the derived value `name` is: a constant, the mask's bias or the ids' positions.
    fn replacement(&self, cx: &mut ImportCx, name: &str, from: From, nodes: &[NodeProto]) -> Result<Value> {
        let len = self.length(cx)?;
        let vocab = 1 << 15;
        let pad = self.compared.first().copied().unwrap_or(0);
        let probes = [self.probes(len, pad, vocab, 0), self.probes(len, pad, vocab, 1)];
        let values = [
            evaluate(cx, nodes, &probes[0], name)?,
            evaluate(cx, nodes, &probes[1], name)?,
        ];
        if let Some(constant) = same_for_every_input(&values) {
            return Ok(Value::Const(constant));
        }
        let probe = &probes[0];
        let (input, op) = match (from.ids, from.mask) {
            (false, true) => {
                let mask = &probe[self.mask.as_deref().unwrap_or_default()];
                let fill = bias_fill(&values[0], mask).ok_or_else(|| {
                    anyhow!(
                        "it is not the additive bias cut reads (0 for a token, one large negative number for padding)"
                    )
                })?;
                (self.mask.clone(), Op::MaskBias(MaskBias { fill }))
            }
            (true, false) => {
                let ids = &probe[self.ids.as_deref().unwrap_or_default()];
                let padding_idx = self
                    .compared
                    .iter()
                    .copied()
                    .find(|&p| values[0].to_kind(Kind::Int64).equal(&PositionIds::of(ids, p)))
                    .ok_or_else(|| {
                        anyhow!("it is not RoBERTa's position ids (the only arithmetic on token ids cut reads)")
                    })?;
                (self.ids.clone(), Op::PositionIds(PositionIds { padding_idx }))
            }
            _ => bail!("it mixes the token ids and the mask"),
        };
        let input = input.unwrap_or_default();
        let Some(Value::Live { node: source, .. }) = cx.values.get(&input) else {
            bail!("the input '{input}' is not computed");
        };
        let source = source.clone();
        let node = cx.add_named(name, op, vec![source])?;
        let shape = cx.node_shapes[&node].clone();
        Ok(Value::Live { node, shape })
    }

    /// The per-sample length of the integer inputs.
    fn length(&self, cx: &ImportCx) -> Result<usize> {
        let input = self
            .mask
            .as_ref()
            .or(self.ids.as_ref())
            .map(String::as_str)
            .unwrap_or_default();
        match cx.values.get(input) {
            Some(Value::Live { shape, .. }) if shape.len() == 1 => Ok(shape[0]),
            _ => bail!("the input '{input}' is not [L] per sample"),
        }
    }

    /// Probe inputs with a batch of 2: masks that pad differently (`probe_mask`), and ids that
    /// are the padding id where the mask pads and distinct others elsewhere (`variant` shifts them).
    fn probes(&self, len: usize, pad: i64, vocab: i64, variant: i64) -> HashMap<String, Tensor> {
        let mask = probe_mask(len);
        let real = Tensor::arange(2 * len as i64, (Kind::Int64, tch::Device::Cpu)).view([2, len as i64]);
        let real = (real * (2 + variant) + pad + 1 + variant).remainder(vocab);
        let real = real.where_self(&real.ne(pad), &(&real + 1));
        let ids = real.where_self(&mask.ne(0), &Tensor::from(pad));
        let mut probes = HashMap::new();
        if let Some(name) = &self.ids {
            probes.insert(name.clone(), ids);
        }
        if let Some(name) = &self.mask {
            probes.insert(name.clone(), mask);
        }
        probes
    }
}

/// The token ids (the integer input a table is gathered by) and the mask (another integer input).
fn integer_inputs(graph: &GraphProto, initializers: &HashSet<&str>) -> (Option<String>, Option<String>) {
    let ints: Vec<&str> = graph
        .input
        .iter()
        .filter(|vi| !initializers.contains(vi.name.as_str()))
        .filter(|vi| {
            use crate::graph::onnx::proto::type_proto::Value as T;
            matches!(vi.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(T::TensorType(t)) if t.elem_type == DataType::Int64 as i32)
        })
        .map(|vi| vi.name.as_str())
        .collect();
    let indexes_a_table = |name: &str| {
        graph.node.iter().any(|n| {
            n.op_type == "Gather"
                && n.input.len() > 1
                && n.input[1] == name
                && initializers.contains(n.input[0].as_str())
        })
    };
    let (ids, others): (Vec<&str>, Vec<&str>) = ints.into_iter().partition(|n| indexes_a_table(n));
    match (ids.as_slice(), others.as_slice()) {
        ([ids], []) => (Some(ids.to_string()), None),
        ([ids], [mask]) => (Some(ids.to_string()), Some(mask.to_string())),
        _ => (None, None),
    }
}

/// For every value, what it is computed from. A `Shape` reads only its input's size, so its
/// output depends on no input (it folds); a `Gather` of a table by derived indices is an
/// embedding lookup, part of the model's computation.
fn dependencies(
    graph: &GraphProto,
    ids: Option<&str>,
    mask: Option<&str>,
    initializers: &HashSet<&str>,
) -> HashMap<String, From> {
    let mut from: HashMap<String, From> = HashMap::new();
    for vi in graph.input.iter().filter(|vi| !initializers.contains(vi.name.as_str())) {
        let (is_ids, is_mask) = (Some(vi.name.as_str()) == ids, Some(vi.name.as_str()) == mask);
        let f = From {
            ids: is_ids,
            mask: is_mask,
            main: !is_ids && !is_mask,
        };
        from.insert(vi.name.clone(), f);
    }
    for node in &graph.node {
        let mut f = From::default();
        for i in &node.input {
            if let Some(g) = from.get(i) {
                f.ids |= g.ids;
                f.mask |= g.mask;
                f.main |= g.main;
            }
        }
        let lookup = node.op_type == "Gather" && initializers.contains(node.input[0].as_str());
        if node.op_type == "Shape" {
            f = From::default();
        } else if lookup && f.derived() {
            f = From {
                main: true,
                ..From::default()
            };
        }
        for o in &node.output {
            from.insert(o.clone(), f);
        }
    }
    from
}

/// The outputs of the nodes to skip: those derived from the integer inputs only, and the
/// constants and shape arithmetic that only they read (a range over the batch, which cannot fold).
fn skipped_values(graph: &GraphProto, from: &HashMap<String, From>) -> HashSet<String> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, n) in graph.node.iter().enumerate() {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(k);
        }
    }
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut skip = vec![false; graph.node.len()];
    for (k, node) in graph.node.iter().enumerate().rev() {
        let flags: Vec<From> = node
            .output
            .iter()
            .map(|o| from.get(o).copied().unwrap_or_default())
            .collect();
        skip[k] = if flags.iter().all(|f| f.derived()) {
            true
        } else if flags.iter().all(|f| *f == From::default()) {
            node.output.iter().all(|o| {
                !outputs.contains(o.as_str()) && readers.get(o.as_str()).is_some_and(|r| r.iter().all(|&j| skip[j]))
            })
        } else {
            false
        };
    }
    graph
        .node
        .iter()
        .zip(skip)
        .filter(|(_, s)| *s)
        .flat_map(|(n, _)| n.output.iter().cloned())
        .collect()
}

/// The nodes that compute `value` without reading the model's computed values (their shapes
/// aside), in file order.
fn ancestors(graph: &GraphProto, value: &str, from: &HashMap<String, From>) -> Vec<NodeProto> {
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(k, n)| n.output.iter().map(move |o| (o.as_str(), k)))
        .collect();
    let mut wanted = HashSet::new();
    let mut stack = vec![value.to_string()];
    while let Some(v) = stack.pop() {
        let Some(&k) = producer.get(v.as_str()) else {
            continue;
        };
        if !wanted.insert(k) {
            continue;
        }
        let node = &graph.node[k];
        if node.op_type == "Shape" && from.get(node.input[0].as_str()).is_some_and(|f| f.main) {
            continue;
        }
        stack.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
    }
    let mut order: Vec<usize> = wanted.into_iter().collect();
    order.sort_unstable();
    order.into_iter().map(|k| graph.node[k].clone()).collect()
}

/// The integer constants the token ids are compared with (`Equal(ids, c)`): padding ids.
fn compared_constants(graph: &GraphProto, ids: Option<&str>) -> Vec<i64> {
    let Some(ids) = ids else {
        return Vec::new();
    };
    let constants: HashMap<&str, i64> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .filter_map(|n| {
            let t = super::fold::constant(n).ok()?;
            (t.numel() == 1 && !t.is_floating_point()).then(|| (n.output[0].as_str(), t.int64_value(&[])))
        })
        .collect();
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Equal" && n.input.iter().any(|i| i == ids))
        .filter_map(|n| n.input.iter().find_map(|i| constants.get(i.as_str()).copied()))
        .collect()
}

/// A batch of two masks of length `len`: the first pads its last two positions, the second every
/// other one; both keep the first.
fn probe_mask(len: usize) -> Tensor {
    let first: Vec<i64> = (0..len).map(|j| i64::from(j + 2 < len || j == 0)).collect();
    let second: Vec<i64> = (0..len).map(|j| i64::from(j % 2 == 0)).collect();
    Tensor::from_slice(&[first, second].concat()).view([2, len as i64])
}

/// Evaluates `nodes` on the `probes` (a batch of 2), and returns `value`.
fn evaluate(cx: &ImportCx, nodes: &[NodeProto], probes: &HashMap<String, Tensor>, value: &str) -> Result<Tensor> {
    let batch = 2;
    let mut known: HashMap<String, Tensor> = probes.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    for node in nodes {
        let out = if node.op_type == "Constant" {
            super::fold::constant(node)?
        } else if node.op_type == "Shape" && !known.contains_key(&node.input[0]) {
            let per_sample = match cx.values.get(&node.input[0]) {
                Some(Value::Live { shape, .. }) => shape.clone(),
                _ => bail!("it reads the shape of '{}', which cut cannot follow", node.input[0]),
            };
            super::fold::shape_attrs_slice(super::fold::with_batch(batch, &per_sample), node)
        } else {
            let mut args = Vec::new();
            for name in &node.input {
                if name.is_empty() {
                    args.push(None);
                    continue;
                }
                let t = match (known.get(name), cx.values.get(name)) {
                    (Some(t), _) => t.shallow_clone(),
                    (None, Some(Value::Const(t))) => t.shallow_clone(),
                    _ => bail!("it reads '{name}', which is not known at import"),
                };
                args.push(Some(t));
            }
            match (node.op_type.as_str(), args.first()) {
                ("Shape", Some(Some(x))) => super::fold::shape_attrs_slice(x.size(), node),
                _ => super::fold::evaluate(node, &args)?,
            }
        };
        known.insert(node.output[0].clone(), out);
    }
    known.remove(value).ok_or_else(|| anyhow!("it is never computed"))
}

/// The value when both probes give it and it is the same for both samples: a constant, kept
/// with a batch of 1.
fn same_for_every_input(values: &[Tensor; 2]) -> Option<Tensor> {
    let [a, b] = values;
    if a.size() != b.size() || a.dim() == 0 || a.size()[0] != 2 || !a.equal(b) {
        return None;
    }
    let first = a.narrow(0, 0, 1);
    first.equal(&a.narrow(0, 1, 1)).then_some(first)
}

/// The fill value (finite) when `bias` ([2, 1, q, kv] or [2, 1, 1, kv]) is 0 where `mask` is
/// set and one large negative value (below -1e4) where it is not, the same for every query.
fn bias_fill(bias: &Tensor, mask: &Tensor) -> Option<f32> {
    let size = bias.size();
    if size.len() != 4 || size[0] != mask.size()[0] || size[1] != 1 || size[3] != mask.size()[1] {
        return None;
    }
    let bias = bias.to_kind(Kind::Float);
    let masked = mask.eq(0).view([size[0], 1, 1, size[3]]).expand_as(&bias);
    let fill = bias.masked_select(&masked).min().double_value(&[]) as f32;
    let want = bias.zeros_like().masked_fill(&masked, f64::from(fill));
    // -inf (Hugging Face's) as the lowest finite float: the same softmax for any sample with a
    // token, and no NaN for one without (Hugging Face zeroes those rows after the softmax).
    (fill <= -1e4 && bias.equal(&want)).then_some(fill.max(f32::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_pads_each_sample_differently_and_keeps_the_first_token() {
        let m = probe_mask(5);
        assert_eq!(
            Vec::<i64>::try_from(m.flatten(0, -1)).unwrap(),
            [1, 1, 1, 0, 0, 1, 0, 1, 0, 1]
        );
    }

    #[test]
    fn a_bias_is_zero_for_tokens_and_one_large_negative_for_padding() {
        let mask = probe_mask(4); // [1 1 0 0], [1 0 1 0]
        let bias = |v: [f32; 8]| Tensor::from_slice(&v).view([2, 1, 1, 4]);
        let ninf = f32::NEG_INFINITY;
        // Hugging Face's -inf becomes the lowest finite float.
        let hf = bias([0., 0., ninf, ninf, 0., ninf, 0., ninf]);
        assert_eq!(bias_fill(&hf, &mask), Some(f32::MIN));
        let old_style = bias([0., 0., -1e9, -1e9, 0., -1e9, 0., -1e9]);
        assert_eq!(bias_fill(&old_style, &mask), Some(-1e9));
        // Repeated over queries: [2, 1, 3, 4].
        let per_query = old_style.expand([2, 1, 3, 4], false);
        assert_eq!(bias_fill(&per_query, &mask), Some(-1e9));
        // Not a bias: the mask itself, a small fill, two fills, the wrong positions, a batch axis
        // that is not the first.
        assert_eq!(bias_fill(&mask.to_kind(Kind::Float).view([2, 1, 1, 4]), &mask), None);
        assert_eq!(bias_fill(&bias([0., 0., -1., -1., 0., -1., 0., -1.]), &mask), None);
        assert_eq!(bias_fill(&bias([0., 0., -1e9, -2e9, 0., -1e9, 0., -1e9]), &mask), None);
        assert_eq!(bias_fill(&bias([0., -1e9, -1e9, 0., 0., -1e9, 0., -1e9]), &mask), None);
        assert_eq!(bias_fill(&hf.view([1, 2, 1, 4]), &mask), None);
    }
}
