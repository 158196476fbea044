//! `Gemm` and `MatMul` with a constant weight as `linear` (weight stored [out, in]); `MatMul` of
//! two computed values as `matmul`.

use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Linear, Op};
use anyhow::{bail, Result};

pub fn gemm(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    if attrs.float("alpha", 1.0) != 1.0 || attrs.float("beta", 1.0) != 1.0 || attrs.int("transA", 0) != 0 {
        bail!("a Gemm with alpha, beta or transA other than 1, 1, 0");
    }
    let (x, _) = cx.live(node, 0)?;
    let b = cx.constant(node, 1)?.shallow_clone();
    let weight = if attrs.int("transB", 0) == 1 {
        b
    } else {
        b.tr().contiguous()
    };
    let (out_features, in_features) = (weight.size()[0] as usize, weight.size()[1] as usize);
    let weight = cx.param(node, 1, weight)?;
    let bias = if ImportCx::has_input(node, 2) {
        let c = cx.constant(node, 2)?.shallow_clone();
        if c.numel() != out_features {
            bail!("a Gemm bias of shape {:?} for {out_features} outputs", c.size());
        }
        Some(cx.param(node, 2, c.reshape([out_features as i64]))?)
    } else {
        None
    };
    let op = Linear {
        weight,
        bias,
        in_features,
        out_features,
    };
    cx.add(node, Op::Linear(op), vec![x])
}

/// A computed value times a constant 2-d matrix [in, out] (a linear layer), or times another
/// computed value (`matmul`).
pub fn matmul(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, _) = cx.live(node, 0)?;
    if let super::Value::Live { node: other, .. } | super::Value::Folded { node: other, .. } = cx.value(node, 1)? {
        let other = other.clone();
        return cx.add(node, Op::MatMul, vec![x, other]);
    }
    let b = cx.constant(node, 1)?.shallow_clone();
    if b.dim() != 2 {
        bail!("a MatMul by a {}-d constant; cut reads a 2-d weight", b.dim());
    }
    let weight = b.tr().contiguous();
    let (out_features, in_features) = (weight.size()[0] as usize, weight.size()[1] as usize);
    let op = Linear {
        weight: cx.param(node, 1, weight)?,
        bias: None,
        in_features,
        out_features,
    };
    cx.add(node, Op::Linear(op), vec![x])
}
