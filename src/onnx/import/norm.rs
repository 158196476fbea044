//! `BatchNormalization` (inference form) as `batch_norm`; `LayerNormalization` over the last axis
//! as `layer_norm`.

use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{BatchNorm, LayerNorm, Op};
use anyhow::{bail, Result};

pub fn batch_norm(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if node.output.len() > 1 {
        bail!("a training-mode batch norm (it outputs running statistics); export in eval mode");
    }
    let (x, shape) = cx.live(node, 0)?;
    let mut names = Vec::new();
    for i in 1..=4 {
        let t = cx.constant(node, i)?.shallow_clone();
        names.push(cx.param(node, i, t)?);
    }
    let op = BatchNorm {
        channels: shape.first().copied().unwrap_or(0),
        weight: Some(names[0].clone()),
        bias: Some(names[1].clone()),
        running_mean: names[2].clone(),
        running_var: names[3].clone(),
        num_batches_tracked: None,
        eps: Attrs(node).float("epsilon", 1e-5) as f64,
    };
    cx.add(node, Op::BatchNorm(op), vec![x])
}

pub fn layer_norm(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let (x, shape) = cx.live(node, 0)?;
    let axis = attrs.int("axis", -1);
    if axis != -1 && axis != shape.len() as i64 {
        bail!("normalises from axis {axis}; cut's layer norm is over the last axis");
    }
    if !ImportCx::has_input(node, 2) {
        bail!("a layer norm without a bias");
    }
    let scale = cx.constant(node, 1)?.shallow_clone();
    let bias = cx.constant(node, 2)?.shallow_clone();
    let op = LayerNorm {
        weight: cx.param(node, 1, scale)?,
        bias: cx.param(node, 2, bias)?,
        features: shape.last().copied().unwrap_or(0),
        eps: attrs.float("epsilon", 1e-5) as f64,
    };
    cx.add(node, Op::LayerNorm(op), vec![x])
}
