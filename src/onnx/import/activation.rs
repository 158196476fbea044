//! Element-wise activations: `Relu`, `Sigmoid`, `Tanh`, `Clip` (ReLU6), `HardSigmoid`,
//! `HardSwish`, `Gelu` (opset 20), `Erf`, `Softmax`.

use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Clip, Gelu, GeluApproximation, HardSigmoid, Op, Softmax};
use anyhow::{bail, Result};

fn unary(cx: &mut ImportCx, node: &NodeProto, op: Op) -> Result<()> {
    let (x, _) = cx.live(node, 0)?;
    cx.add(node, op, vec![x])
}

pub fn relu(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    unary(cx, node, Op::Relu)
}

pub fn sigmoid(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    unary(cx, node, Op::Sigmoid)
}

pub fn tanh(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    unary(cx, node, Op::Tanh)
}

pub fn hard_swish(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    unary(cx, node, Op::HardSwish)
}

pub fn hard_sigmoid(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let op = HardSigmoid {
        alpha: attrs.float("alpha", 0.2) as f64,
        beta: attrs.float("beta", 0.5) as f64,
    };
    unary(cx, node, Op::HardSigmoid(op))
}

/// Clip's bounds are inputs 1 and 2 (opset 11 on), constants.
pub fn clip(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let bound = |cx: &ImportCx, i: usize| -> Result<Option<f64>> {
        if !ImportCx::has_input(node, i) {
            return Ok(None);
        }
        Ok(Some(cx.constant(node, i)?.double_value(&[])))
    };
    let op = Clip {
        min: bound(cx, 1)?,
        max: bound(cx, 2)?,
    };
    unary(cx, node, Op::Clip(op))
}

pub fn gelu(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let approximate = match Attrs(node).string("approximate", "none").as_str() {
        "none" => GeluApproximation::default(),
        "tanh" => GeluApproximation::Tanh,
        other => bail!("Gelu approximation '{other}'"),
    };
    unary(cx, node, Op::Gelu(Gelu { approximate }))
}

pub fn erf(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    unary(cx, node, Op::Erf)
}

pub fn softmax(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (_, shape) = cx.live(node, 0)?;
    if matches!(cx.value(node, 0)?, super::Value::Folded { .. }) && Attrs(node).int("axis", -1) >= 0 {
        bail!("a softmax along a positive axis of a value holding several pieces of each sample along the batch");
    }
    let rank = shape.len() as i64 + 1;
    let axis = Attrs(node).int("axis", -1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis <= 0 || axis >= rank {
        bail!("a softmax along axis {axis} (the batch, or outside the rank)");
    }
    unary(
        cx,
        node,
        Op::Softmax(Softmax {
            axis: axis as usize - 1,
        }),
    )
}

/// `IsNaN` of a computed value: read only as the guard `Where(IsNaN(p), 0, p)` that Hugging Face
/// puts after a masked softmax (whose rows are never NaN in `cut`: the mask's bias is finite).
pub fn is_nan(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (name, shape) = cx.live(node, 0)?;
    cx.nan_tests.insert(node.output[0].clone(), node.input[0].clone());
    // A stand-in that only the guard reads (`ImportCx::node` refuses any other reader).
    cx.alias(node, 0, super::Value::Live { node: name, shape });
    Ok(())
}

/// `Where` on computed values: the NaN guard `Where(IsNaN(p), 0, p)`, which passes `p` on.
pub fn where_nan_guard(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let tested = cx.nan_tests.get(&node.input[0]).cloned();
    let zero = match cx.value(node, 1)? {
        super::Value::Const(t) => t.abs().max().double_value(&[]) == 0.0,
        _ => false,
    };
    match tested {
        Some(p) if zero && node.input.get(2) == Some(&p) => {
            let (name, shape) = cx.live(node, 2)?;
            cx.alias(node, 0, super::Value::Live { node: name, shape });
            Ok(())
        }
        _ => anyhow::bail!(
            "a Where on computed values other than the NaN guard Where(IsNaN(p), 0, p) (cut selects between constants only)"
        ),
    }
}
