//! `Add` and `Mul` of computed values (residuals, SE gates, SiLU). A constant added right after a
//! bias-free linear layer (`MatMul` then `Add`, as exporters write `nn.Linear` on 3-d inputs) is
//! that layer's bias.

use super::{ImportCx, Value};
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::Op;
use anyhow::{bail, Result};

pub fn add(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let (Value::Live { .. }, Value::Const(_)) | (Value::Const(_), Value::Live { .. }) =
        (cx.value(node, 0)?, cx.value(node, 1)?)
    {
        return add_bias(cx, node);
    }
    let (a, sa) = cx.live(node, 0)?;
    let (b, sb) = cx.live(node, 1)?;
    if sa != sb {
        bail!("adds shapes {sa:?} and {sb:?}; cut adds values of one shape");
    }
    cx.add(node, Op::Add, vec![a, b])
}

pub fn mul(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (a, _) = cx.live(node, 0)?;
    let (b, _) = cx.live(node, 1)?;
    cx.add(node, Op::Mul, vec![a, b])
}

/// A constant added to the output of a linear layer without a bias, read by nothing else: the
/// layer's bias.
fn add_bias(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (live, k) = match cx.value(node, 0)? {
        Value::Live { .. } => (0, 1),
        Value::Const(_) => (1, 0),
    };
    let (producer, shape) = cx.live(node, live)?;
    let bias = cx.constant(node, k)?.shallow_clone();
    let features = shape.last().copied().unwrap_or(0) as i64;
    let fits = bias.size().last() == Some(&features) && bias.size().iter().rev().skip(1).all(|&d| d == 1);
    let sole_reader = cx.readers(&node.input[live]) == 1;
    match cx.linear_mut(&producer) {
        Some(linear) if linear.bias.is_none() && fits && sole_reader => {
            let name = cx.param(node, k, bias.reshape([features]))?;
            cx.linear_mut(&producer).expect("found above").bias = Some(name);
            let value = Value::Live { node: producer, shape };
            cx.alias(node, 0, value);
            Ok(())
        }
        _ => bail!(
            "adds a constant to a computed value other than a bias-free linear layer's output (not supported yet)"
        ),
    }
}
