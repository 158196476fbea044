//! Pooling: `MaxPool`, `AveragePool` (non-overlapping windows), `GlobalAveragePool` and
//! `ReduceMean` as `reduce_mean`.

use super::conv::{pair_of, symmetric_pads};
use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{AvgPool, MaxPool, Op, ReduceMean};
use anyhow::{anyhow, bail, Result};

pub fn max_pool(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    if node.output.len() > 1 {
        bail!("a MaxPool with indices");
    }
    if pair_of(&attrs, "dilations", 1)? != [1, 1] {
        bail!("a dilated MaxPool");
    }
    let (x, _) = cx.live(node, 0)?;
    let op = MaxPool {
        kernel: pair_of(&attrs, "kernel_shape", 1)?,
        stride: pair_of(&attrs, "strides", 1)?,
        padding: symmetric_pads(&attrs)?,
        ceil_mode: attrs.int("ceil_mode", 0) == 1,
    };
    cx.add(node, Op::MaxPool(op), vec![x])
}

/// Square windows that tile the input exactly (kernel = stride, no padding).
pub fn average_pool(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let (x, shape) = cx.live(node, 0)?;
    let [k, k2] = pair_of(&attrs, "kernel_shape", 1)?;
    let stride = pair_of(&attrs, "strides", 1)?;
    let tiles = k == k2 && stride == [k, k] && symmetric_pads(&attrs)? == [0, 0];
    let divides = shape.len() == 3 && shape[1] % k == 0 && shape[2] % k == 0;
    if !(tiles && divides) {
        bail!("an AveragePool other than square windows that tile the input (kernel {k}x{k2}, stride {stride:?})");
    }
    cx.add(node, Op::AvgPool(AvgPool { factor: k }), vec![x])
}

pub fn global_average_pool(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, shape) = cx.live(node, 0)?;
    let op = ReduceMean {
        axes: (1..shape.len()).collect(),
        keep_dims: true,
    };
    cx.add(node, Op::ReduceMean(op), vec![x])
}

pub fn reduce_mean(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let (x, shape) = cx.live(node, 0)?;
    let rank = shape.len() as i64 + 1;
    let axes = if ImportCx::has_input(node, 1) {
        Vec::<i64>::try_from(cx.constant(node, 1)?.to_kind(tch::Kind::Int64).flatten(0, -1))?
    } else {
        attrs
            .ints("axes")
            .ok_or_else(|| anyhow!("a ReduceMean over every axis"))?
    };
    let mut per_sample = Vec::new();
    for a in axes {
        let a = if a < 0 { a + rank } else { a };
        if a <= 0 || a >= rank {
            bail!("a mean over axis {a} (the batch, or outside the rank)");
        }
        per_sample.push(a as usize - 1);
    }
    per_sample.sort_unstable();
    let op = ReduceMean {
        axes: per_sample,
        keep_dims: attrs.int("keepdims", 1) == 1,
    };
    cx.add(node, Op::ReduceMean(op), vec![x])
}
