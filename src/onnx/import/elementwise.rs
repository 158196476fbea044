//! Element-wise arithmetic: `Add`, `Sub`, `Mul`, `Div` of computed values and constants, `Sum`
//! (residuals, SE gates, SiLU, GELU's arithmetic, attention's scale, position embeddings). A
//! constant added right after a bias-free linear layer (`MatMul` then `Add`, as exporters write
//! `nn.Linear` on 3-d inputs) becomes that layer's bias; other constants become `constant` nodes.

use super::{ImportCx, Value};
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Constant, Op};
use anyhow::{bail, Result};

pub fn add(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let (Value::Live { .. } | Value::Folded { .. }, Value::Const(_))
    | (Value::Const(_), Value::Live { .. } | Value::Folded { .. }) = (cx.value(node, 0)?, cx.value(node, 1)?)
    {
        if add_bias(cx, node)? {
            return Ok(());
        }
    }
    binary(cx, node, Op::Add)
}

/// `Sum` of computed values of one shape (summed head branches); one input is that input.
pub fn sum(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let inputs = (0..node.input.len())
        .map(|i| cx.live(node, i).map(|(x, _)| x))
        .collect::<Result<Vec<_>>>()?;
    match inputs.len() {
        1 => super::layout::identity(cx, node),
        _ => cx.add(node, Op::Add, inputs),
    }
}

pub fn sub(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    binary(cx, node, Op::Sub)
}

pub fn mul(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    binary(cx, node, Op::Mul)
}

pub fn div(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    binary(cx, node, Op::Div)
}

/// `op` on the node's two inputs, a constant one made a `constant` node first.
fn binary(cx: &mut ImportCx, node: &NodeProto, op: Op) -> Result<()> {
    let reference = match (cx.value(node, 0)?, cx.value(node, 1)?) {
        (Value::Live { node, .. } | Value::Folded { node, .. }, _)
        | (_, Value::Live { node, .. } | Value::Folded { node, .. }) => node.clone(),
        _ => bail!("has two constant inputs (cut folds those)"),
    };
    let a = cx.operand(node, 0, &reference)?;
    let b = cx.operand(node, 1, &reference)?;
    cx.add(node, op, vec![a, b])
}

/// A constant added to the output of a linear layer without a bias, read by nothing else: the
/// layer's bias. Returns whether it was.
fn add_bias(cx: &mut ImportCx, node: &NodeProto) -> Result<bool> {
    let (live, k) = match cx.value(node, 0)? {
        Value::Const(_) => (1, 0),
        _ => (0, 1),
    };
    let (producer, shape) = cx.live(node, live)?;
    let bias = cx.constant(node, k)?.shallow_clone();
    let features = shape.last().copied().unwrap_or(0) as i64;
    let fits = bias.size().last() == Some(&features) && bias.size().iter().rev().skip(1).all(|&d| d == 1);
    let sole_reader = cx.readers(&node.input[live]) == 1;
    let bias_free = cx.linear_mut(&producer).is_some_and(|l| l.bias.is_none());
    if !(fits && sole_reader && bias_free) {
        return Ok(false);
    }
    let name = cx.param(node, k, bias.reshape([features]))?;
    cx.linear_mut(&producer).expect("found above").bias = Some(name);
    let value = match cx.value(node, live)? {
        Value::Folded { .. } => Value::Folded { node: producer, shape },
        _ => Value::Live { node: producer, shape },
    };
    cx.alias(node, 0, value);
    Ok(true)
}

impl ImportCx {
    /// Input `i` as a graph node: a computed value as it is, a constant as a `constant` node
    /// (batch size from `reference`), shaped to the computed values' rank.
    pub fn operand(&mut self, node: &NodeProto, i: usize, reference: &str) -> Result<String> {
        if !matches!(self.value(node, i)?, Value::Const(_)) {
            return Ok(self.live(node, i)?.0);
        }
        let rank = self.shape_of_node(reference)?.len() + 1;
        let t = self.constant(node, i)?.shallow_clone();
        if t.dim() > rank {
            bail!(
                "input {i} is a constant of rank {} beside values of rank {rank}",
                t.dim()
            );
        }
        let full: Vec<i64> = std::iter::repeat_n(1, rank - t.dim()).chain(t.size()).collect();
        if full[0] != 1 {
            bail!("input {i} is a constant whose first axis ({}) spans the batch", full[0]);
        }
        let trained = self.is_initializer(&node.input[i]);
        let tensor = self.param(node, i, t.reshape(full.as_slice()))?;
        let op = Constant {
            tensor,
            shape: full[1..].iter().map(|&d| d as usize).collect(),
            trained,
        };
        self.add_named(
            &format!("{}/const{i}", super::node_name(node)),
            Op::Constant(op),
            vec![reference.to_string()],
        )
    }
}
