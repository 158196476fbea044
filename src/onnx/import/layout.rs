//! Layout ops on computed values: `Concat` (constants joined in as `constant` nodes), `Flatten`,
//! `Reshape`, `Squeeze`, `Unsqueeze`, `Transpose`, `Split` and `Slice` (as `slice` nodes),
//! `Gather` of one index, `Pad` by nothing, and `Identity` / `Dropout` (inference), which add no
//! node.

use super::tensor::Attrs;
use super::{ImportCx, Value};
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Concat, Op, Reshape, Slice, Transpose};
use anyhow::{anyhow, bail, Result};
use tch::Kind;

/// A full-rank axis (negative counts from the end) as a per-sample one; the batch is refused.
fn per_sample_axis(axis: i64, per_sample_rank: usize) -> Result<usize> {
    let rank = per_sample_rank as i64 + 1;
    let a = if axis < 0 { axis + rank } else { axis };
    if a <= 0 || a >= rank {
        bail!("works along axis {axis} (the batch, or outside the rank)");
    }
    Ok(a as usize - 1)
}

fn ints(cx: &ImportCx, node: &NodeProto, i: usize) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        cx.constant(node, i)?.to_kind(Kind::Int64).flatten(0, -1),
    )?)
}

pub fn concat(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let reference = (0..node.input.len())
        .find_map(|i| match cx.value(node, i) {
            Ok(Value::Live { node, .. }) => Some(node.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow!("joins constants only"))?;
    let rank = cx.shape_of_node(&reference)?.len();
    let mut inputs = Vec::new();
    for i in 0..node.input.len() {
        inputs.push(cx.operand(node, i, &reference)?);
    }
    let axis = per_sample_axis(Attrs(node).int("axis", 1), rank)?;
    cx.add(node, Op::Concat(Concat { axis }), inputs)
}

pub fn flatten(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if Attrs(node).int("axis", 1) != 1 {
        bail!("flattens from an axis other than 1");
    }
    let (x, shape) = cx.live(node, 0)?;
    if shape.len() == 1 {
        cx.alias(node, 0, Value::Live { node: x, shape });
        return Ok(());
    }
    cx.add(node, Op::Flatten, vec![x])
}

/// The value in a new per-sample shape; an unchanged shape adds no node.
fn reshaped(cx: &mut ImportCx, node: &NodeProto, shape: Vec<usize>) -> Result<()> {
    let (x, have) = cx.live(node, 0)?;
    if have == shape {
        cx.alias(node, 0, Value::Live { node: x, shape });
        return Ok(());
    }
    cx.add(node, Op::Reshape(Reshape { shape }), vec![x])
}

/// ONNX's target shape: the batch first (-1, 0, or the 1 an export at batch 1 wrote), 0 copying
/// the input's size, one -1 inferred.
pub fn reshape(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Folded { node: x, shape } = cx.value(node, 0)? {
        let (x, shape) = (x.clone(), shape.clone());
        return reshape_folded(cx, node, x, shape);
    }
    let (_, shape) = cx.live(node, 0)?;
    let target = ints(cx, node, 1)?;
    let Some((&batch, rest)) = target.split_first() else {
        bail!("reshapes to a scalar");
    };
    if !matches!(batch, -1..=1) {
        bail!("reshapes to {target:?}, which does not keep the batch first");
    }
    let numel: usize = shape.iter().product();
    let mut dims: Vec<i64> = rest
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 0 {
                shape.get(d).map_or(0, |&s| s as i64)
            } else {
                n
            }
        })
        .collect();
    if let Some(free) = dims.iter().position(|&d| d == -1) {
        let known: i64 = dims.iter().filter(|&&d| d != -1).product();
        dims[free] = numel as i64 / known.max(1);
    }
    if dims.iter().any(|&d| d <= 0) {
        bail!("reshapes {shape:?} to {target:?}");
    }
    let per_sample: i64 = dims.iter().product();
    if batch == -1 && per_sample < numel as i64 && numel as i64 % per_sample == 0 {
        return fold_into_batch(cx, node, numel as i64 / per_sample, &dims);
    }
    reshaped(cx, node, dims.iter().map(|&d| d as usize).collect())
}

/// A reshape to `[-1, dims...]` of fewer values than a sample has: `pieces` of `dims` per sample
/// along the batch, held as a per-sample `[pieces, dims...]` (a [`Value::Folded`]).
fn fold_into_batch(cx: &mut ImportCx, node: &NodeProto, pieces: i64, dims: &[i64]) -> Result<()> {
    let (x, _) = cx.live(node, 0)?;
    let shape: Vec<usize> = std::iter::once(pieces)
        .chain(dims.iter().copied())
        .map(|d| d as usize)
        .collect();
    let folded = cx.add_named(
        &super::node_name(node),
        Op::Reshape(Reshape { shape: shape.clone() }),
        vec![x],
    )?;
    cx.alias(node, 0, Value::Folded { node: folded, shape });
    Ok(())
}

/// A reshape of a folded value: `[-1, dims...]` with as many values as a sample has unfolds it,
/// with fewer it stays folded. ONNX axis `a > 0` of a folded value is its per-sample axis `a`.
fn reshape_folded(cx: &mut ImportCx, node: &NodeProto, x: String, shape: Vec<usize>) -> Result<()> {
    let target = ints(cx, node, 1)?;
    let numel: i64 = shape.iter().product::<usize>() as i64;
    let Some((&batch, rest)) = target.split_first() else {
        bail!("reshapes to a scalar");
    };
    let mut dims: Vec<i64> = rest
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 0 {
                shape.get(d + 1).map_or(0, |&s| s as i64)
            } else {
                n
            }
        })
        .collect();
    if let Some(free) = dims.iter().position(|&d| d == -1) {
        // The batch axis given as -1 beside another -1: the pieces per sample stay.
        let known: i64 = dims.iter().filter(|&&d| d != -1).product();
        dims[free] = numel / (shape[0] as i64 * known.max(1));
    }
    let per_piece: i64 = dims.iter().product();
    if batch != -1 || dims.iter().any(|&d| d <= 0) || per_piece <= 0 || numel % per_piece != 0 {
        bail!(
            "reshapes a value holding {} pieces of each sample along the batch ({shape:?} per sample) to {target:?}",
            shape[0]
        );
    }
    let pieces = numel / per_piece;
    let out: Vec<usize> = std::iter::once(pieces)
        .filter(|&k| k > 1)
        .chain(dims.iter().copied())
        .map(|d| d as usize)
        .collect();
    let y = if out == shape {
        x
    } else {
        cx.add_named(
            &super::node_name(node),
            Op::Reshape(Reshape { shape: out.clone() }),
            vec![x],
        )?
    };
    let value = if pieces > 1 {
        Value::Folded { node: y, shape: out }
    } else {
        Value::Live { node: y, shape: out }
    };
    cx.alias(node, 0, value);
    Ok(())
}

/// The axes of `Squeeze` / `Unsqueeze` (an input from opset 13), per sample.
fn axes(cx: &ImportCx, node: &NodeProto, rank: usize) -> Result<Vec<usize>> {
    let raw = if ImportCx::has_input(node, 1) {
        ints(cx, node, 1)?
    } else {
        Attrs(node).ints("axes").unwrap_or_default()
    };
    let mut axes = raw
        .iter()
        .map(|&a| per_sample_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    Ok(axes)
}

pub fn squeeze(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Moved { node: x, shape, perm } = cx.value(node, 0)? {
        let (x, shape, perm) = (x.clone(), shape.clone(), perm.clone());
        if !ImportCx::has_input(node, 1) || ints(cx, node, 1)? != [0] {
            bail!("squeezes a value whose batch axis a transpose moved, other than along its new first axis");
        }
        return drop_moved_axis(cx, node, x, shape, perm);
    }
    let (_, shape) = cx.live(node, 0)?;
    let mut gone = axes(cx, node, shape.len())?;
    if gone.is_empty() {
        gone = (0..shape.len()).filter(|&d| shape[d] == 1).collect();
    }
    let kept = shape
        .iter()
        .enumerate()
        .filter(|(d, _)| !gone.contains(d))
        .map(|(_, &n)| n)
        .collect();
    reshaped(cx, node, kept)
}

pub fn unsqueeze(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (_, shape) = cx.live(node, 0)?;
    let added = ImportCx::has_input(node, 1) || Attrs(node).has("axes");
    if !added {
        bail!("Unsqueeze without axes");
    }
    let raw = if ImportCx::has_input(node, 1) {
        ints(cx, node, 1)?
    } else {
        Attrs(node).ints("axes").unwrap_or_default()
    };
    let out_rank = shape.len() + raw.len();
    let mut new = raw
        .iter()
        .map(|&a| per_sample_axis(a, out_rank))
        .collect::<Result<Vec<_>>>()?;
    new.sort_unstable();
    let mut out = shape.clone();
    for a in new {
        out.insert(a, 1);
    }
    reshaped(cx, node, out)
}

pub fn transpose(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Folded { node: x, shape } = cx.value(node, 0)? {
        let (x, shape) = (x.clone(), shape.clone());
        let perm: Vec<usize> = match Attrs(node).ints("perm") {
            Some(p) => p.iter().map(|&a| a as usize).collect(),
            None => (0..shape.len()).rev().collect(),
        };
        if perm.len() != shape.len() {
            bail!("transposes {} axes of a rank-{} value", perm.len(), shape.len());
        }
        if perm[0] != 0 {
            return move_folded(cx, node, x, shape, &perm);
        }
        let name = cx.add_named(
            &super::node_name(node),
            Op::Transpose(Transpose { perm: perm.clone() }),
            vec![x],
        )?;
        let shape = perm.iter().map(|&p| shape[p]).collect();
        cx.alias(node, 0, Value::Folded { node: name, shape });
        return Ok(());
    }
    let (x, shape) = cx.live(node, 0)?;
    let perm = Attrs(node)
        .ints("perm")
        .unwrap_or_else(|| (0..=shape.len() as i64).rev().collect());
    if perm.first() != Some(&0) {
        let perm = perm.iter().map(|&p| p as usize).collect();
        cx.alias(node, 0, Value::Moved { node: x, shape, perm });
        return Ok(());
    }
    let perm: Vec<usize> = perm[1..].iter().map(|&p| p as usize - 1).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        cx.alias(node, 0, Value::Live { node: x, shape });
        return Ok(());
    }
    cx.add(node, Op::Transpose(Transpose { perm }), vec![x])
}

/// A transpose that moves the folded batch axis of a value (attention on windows: `[B*k, N, 3, H,
/// D] -> [3, B*k, H, N, D]`): held as a `Value::Moved` over `[batch, k, ...]`, ONNX axis 0 standing
/// for the batch and the pieces together, and marked so that taking the moved-in axis apart leaves
/// a folded value.
fn move_folded(cx: &mut ImportCx, node: &NodeProto, x: String, shape: Vec<usize>, perm: &[usize]) -> Result<()> {
    let full: Vec<usize> = perm
        .iter()
        .flat_map(|&a| if a == 0 { vec![0, 1] } else { vec![a + 1] })
        .collect();
    cx.folded_moved.insert(x.clone());
    cx.alias(
        node,
        0,
        Value::Moved {
            node: x,
            shape,
            perm: full,
        },
    );
    Ok(())
}

/// Each output a `slice` of the input along the axis: sizes from the input (opset 13), the
/// `split` attribute, or equal parts.
pub fn split(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Moved { .. } = cx.value(node, 0)? {
        return split_moved(cx, node);
    }
    let (x, shape) = cx.live(node, 0)?;
    let axis = per_sample_axis(Attrs(node).int("axis", 0), shape.len())?;
    let total = shape[axis];
    let sizes: Vec<usize> = if ImportCx::has_input(node, 1) {
        ints(cx, node, 1)?.iter().map(|&s| s as usize).collect()
    } else if let Some(s) = Attrs(node).ints("split") {
        s.iter().map(|&s| s as usize).collect()
    } else {
        let parts = node.output.len().max(1);
        vec![total.div_ceil(parts); parts]
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.min(total - (i * s).min(total)))
            .collect()
    };
    if sizes.iter().sum::<usize>() != total || sizes.len() != node.output.len() {
        bail!(
            "splits {total} along axis {} into {sizes:?} for {} outputs",
            axis + 1,
            node.output.len()
        );
    }
    let mut start = 0;
    for (k, &size) in sizes.iter().enumerate() {
        let op = Slice {
            axis,
            start,
            end: start + size,
        };
        let base = format!("{}/{k}", super::node_name(node));
        cx.add_output(node, k, &base, Op::Slice(op), vec![x.clone()])?;
        start += size;
    }
    Ok(())
}

/// `Slice` with step 1 along any axes but the batch: one `slice` node per axis.
/// `Slice` along the new first axis of a value whose batch axis a transpose moved (the
/// dynamo exporter's `unbind` of timm's qkv): the moved-in axis is sliced and stays moved.
fn slice_moved(cx: &mut ImportCx, node: &NodeProto, x: String, mut shape: Vec<usize>, perm: Vec<usize>) -> Result<()> {
    let (starts, ends) = (ints(cx, node, 1)?, ints(cx, node, 2)?);
    let axes = if ImportCx::has_input(node, 3) {
        ints(cx, node, 3)?
    } else {
        vec![0]
    };
    let steps = if ImportCx::has_input(node, 4) {
        ints(cx, node, 4)?
    } else {
        vec![1]
    };
    if axes != [0] || steps != [1] || starts.len() != 1 || ends.len() != 1 {
        bail!("slices a value whose batch axis a transpose moved other than along its new first axis");
    }
    let axis = perm[0] - 1;
    let n = shape[axis] as i64;
    let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
    let (start, end) = (clamp(starts[0]) as usize, clamp(ends[0]) as usize);
    if start >= end {
        bail!("slices nothing ({start}..{end} of {n})");
    }
    let sliced = cx.add_named(
        &super::node_name(node),
        Op::Slice(Slice { axis, start, end }),
        vec![x.clone()],
    )?;
    cx.inherit_fold(&x, &sliced);
    shape[axis] = end - start;
    cx.alias(
        node,
        0,
        Value::Moved {
            node: sliced,
            shape,
            perm,
        },
    );
    Ok(())
}

pub fn slice(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Moved { node: x, shape, perm } = cx.value(node, 0)? {
        let (x, shape, perm) = (x.clone(), shape.clone(), perm.clone());
        return slice_moved(cx, node, x, shape, perm);
    }
    let (mut x, mut shape) = cx.live(node, 0)?;
    let (starts, ends) = (ints(cx, node, 1)?, ints(cx, node, 2)?);
    let axes = if ImportCx::has_input(node, 3) {
        ints(cx, node, 3)?
    } else {
        (0..starts.len() as i64).collect()
    };
    let steps = if ImportCx::has_input(node, 4) {
        ints(cx, node, 4)?
    } else {
        vec![1; starts.len()]
    };
    let base = super::node_name(node);
    for (((&s, &e), &a), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        if step != 1 {
            bail!("a Slice with step {step}");
        }
        let axis = per_sample_axis(a, shape.len())?;
        let n = shape[axis] as i64;
        let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
        let (start, end) = (clamp(s) as usize, clamp(e) as usize);
        if (start, end) == (0, n as usize) {
            continue;
        }
        x = cx.add_named(&base, Op::Slice(Slice { axis, start, end }), vec![x])?;
        shape[axis] = end - start;
    }
    cx.alias(node, 0, Value::Live { node: x, shape });
    Ok(())
}

/// `Gather` of one constant index along an axis: a `slice` of it and a reshape that drops the
/// axis.
/// `Gather` of a weight's rows by computed ids (axis 0): an embedding lookup.
fn embedding(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if Attrs(node).int("axis", 0) != 0 {
        bail!("gathers a constant by computed indices along an axis other than 0 (cut reads row lookups)");
    }
    let table = cx.constant(node, 0)?.shallow_clone();
    let &[rows, dim] = table.size().as_slice() else {
        bail!(
            "looks up rows of a {:?} table; cut reads [rows, dim] tables",
            table.size()
        );
    };
    let (ids, _) = cx.live(node, 1)?;
    let name = cx.param(node, 0, table)?;
    let op = Op::Embedding(crate::graph::ops::Embedding {
        table: name,
        rows: rows as usize,
        dim: dim as usize,
    });
    cx.add(node, op, vec![ids])
}

pub fn gather(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    if let Value::Moved { node: x, shape, perm } = cx.value(node, 0)? {
        let (x, mut shape, perm) = (x.clone(), shape.clone(), perm.clone());
        let index = cx.constant(node, 1)?;
        if Attrs(node).int("axis", 0) != 0 || index.dim() != 0 {
            bail!(
                "gathers from a value whose batch axis a transpose moved, other than one index of its new first axis"
            );
        }
        let axis = perm[0] - 1;
        let i = index.int64_value(&[]);
        let i = if i < 0 { i + shape[axis] as i64 } else { i } as usize;
        let one = cx.add_named(
            &super::node_name(node),
            Op::Slice(Slice {
                axis,
                start: i,
                end: i + 1,
            }),
            vec![x.clone()],
        )?;
        cx.inherit_fold(&x, &one);
        shape[axis] = 1;
        return drop_moved_axis(cx, node, one, shape, perm);
    }
    if let (Value::Const(_), Value::Live { .. }) = (cx.value(node, 0)?, cx.value(node, 1)?) {
        return embedding(cx, node);
    }
    let (x, shape) = cx.live(node, 0)?;
    let index = cx.constant(node, 1)?;
    if index.dim() != 0 {
        bail!(
            "a Gather of {} indices from a computed value (cut gathers one)",
            index.numel()
        );
    }
    let axis = per_sample_axis(Attrs(node).int("axis", 0), shape.len())?;
    let i = index.int64_value(&[]);
    let i = if i < 0 { i + shape[axis] as i64 } else { i } as usize;
    if i >= shape[axis] {
        bail!("gathers index {i} of {}", shape[axis]);
    }
    let base = super::node_name(node);
    let one = cx.add_named(
        &base,
        Op::Slice(Slice {
            axis,
            start: i,
            end: i + 1,
        }),
        vec![x],
    )?;
    let mut out = shape.clone();
    out.remove(axis);
    cx.add(node, Op::Reshape(Reshape { shape: out }), vec![one])
}

/// `Split` along the new first axis of a value whose batch axis a transpose moved: each part a
/// `slice` of the source, still moved (a `Squeeze` then resolves it).
fn split_moved(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let Value::Moved { node: x, shape, perm } = cx.value(node, 0)? else {
        unreachable!("checked by the caller")
    };
    let (x, shape, perm) = (x.clone(), shape.clone(), perm.clone());
    if Attrs(node).int("axis", 0) != 0 {
        bail!("splits a value whose batch axis a transpose moved, other than along its new first axis");
    }
    let axis = perm[0] - 1;
    let sizes: Vec<usize> = if ImportCx::has_input(node, 1) {
        ints(cx, node, 1)?.iter().map(|&s| s as usize).collect()
    } else {
        vec![1; node.output.len()]
    };
    if sizes.iter().sum::<usize>() != shape[axis] || sizes.len() != node.output.len() {
        bail!("splits {} into {sizes:?}", shape[axis]);
    }
    let mut start = 0;
    for (k, &size) in sizes.iter().enumerate() {
        let base = format!("{}/{k}", super::node_name(node));
        let part = cx.add_named(
            &base,
            Op::Slice(Slice {
                axis,
                start,
                end: start + size,
            }),
            vec![x.clone()],
        )?;
        cx.inherit_fold(&x, &part);
        let mut part_shape = shape.clone();
        part_shape[axis] = size;
        cx.alias(
            node,
            k,
            Value::Moved {
                node: part,
                shape: part_shape,
                perm: perm.clone(),
            },
        );
        start += size;
    }
    Ok(())
}

/// A moved value whose new first axis has size 1, without that axis: the source reshaped to drop
/// it, then transposed by what is left of the permutation (which now keeps the batch first).
fn drop_moved_axis(cx: &mut ImportCx, node: &NodeProto, x: String, shape: Vec<usize>, perm: Vec<usize>) -> Result<()> {
    let moved = perm[0];
    if shape[moved - 1] != 1 {
        bail!("drops an axis of size {}", shape[moved - 1]);
    }
    let mut rest = shape.clone();
    rest.remove(moved - 1);
    let base = super::node_name(node);
    let folded = cx.folded_moved.contains(&x);
    let dropped = cx.add_named(&base, Op::Reshape(Reshape { shape: rest.clone() }), vec![x])?;
    let perm: Vec<usize> = perm[1..].iter().map(|&p| if p > moved { p - 1 } else { p }).collect();
    if perm[0] != 0 || (folded && perm[1] != 1) {
        bail!("leaves the batch axis moved");
    }
    let per_sample: Vec<usize> = perm[1..].iter().map(|&p| p - 1).collect();
    let (node_out, shape_out) = if per_sample.iter().enumerate().all(|(i, &p)| i == p) {
        (dropped, rest)
    } else {
        let name = format!("{base}/transpose");
        let t = cx.add_named(&name, Op::Transpose(Transpose { perm: per_sample }), vec![dropped])?;
        let shape = cx.shape_of_node(&t)?;
        (t, shape)
    };
    let value = if folded {
        Value::Folded {
            node: node_out,
            shape: shape_out,
        }
    } else {
        Value::Live {
            node: node_out,
            shape: shape_out,
        }
    };
    cx.alias(node, 0, value);
    Ok(())
}

/// Padding by nothing (what exporters write for windows that already fit); other padding is
/// refused.
pub fn pad(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, shape) = cx.live(node, 0)?;
    let pads = ints(cx, node, 1)?;
    if pads.iter().any(|&p| p != 0) {
        bail!("pads by {pads:?} (cut imports padding by nothing only, so far)");
    }
    cx.alias(node, 0, Value::Live { node: x, shape });
    Ok(())
}

pub fn identity(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, shape) = cx.live(node, 0)?;
    cx.alias(node, 0, Value::Live { node: x, shape });
    Ok(())
}
