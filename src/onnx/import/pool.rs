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
    let (x, shape) = cx.live(node, 0)?;
    let kernel = pair_of(&attrs, "kernel_shape", 1)?;
    let stride = pair_of(&attrs, "strides", 1)?;
    let (padding, ceil_mode) = match symmetric_pads(&attrs) {
        Ok(p) => (p, attrs.int("ceil_mode", 0) == 1),
        Err(e) => end_padding_as_ceil(&attrs, &shape, kernel, stride).ok_or(e)?,
    };
    let op = MaxPool {
        kernel,
        stride,
        padding,
        ceil_mode,
    };
    cx.add(node, Op::MaxPool(op), vec![x])
}

/// Extra padding at the ends only, as PyTorch's exporter (and `cut export`) writes `ceil_mode`:
/// the begin pads and ceil mode when that gives the same output size on `shape` [C, H, W].
fn end_padding_as_ceil(
    attrs: &Attrs,
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Option<([usize; 2], bool)> {
    let pads = attrs.ints("pads")?;
    let [t, l, b, r] = pads.as_slice().try_into().ok()?;
    if attrs.int("ceil_mode", 0) != 0 || shape.len() != 3 || t < 0 || l < 0 || b < t || r < l {
        return None;
    }
    let begin = [t as usize, l as usize];
    let end = [b as usize, r as usize];
    for d in 0..2 {
        let (size, k, s, p) = (shape[d + 1], kernel[d], stride[d], begin[d]);
        let onnx = (size + p + end[d]).checked_sub(k)? / s + 1;
        // PyTorch's ceil mode: one more window when it starts inside the input or its left padding.
        let mut ceil = (size + 2 * p).checked_sub(k)?.div_ceil(s) + 1;
        if (ceil - 1) * s >= size + p {
            ceil -= 1;
        }
        if onnx != ceil {
            return None;
        }
    }
    Some((begin, true))
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
