//! Layout ops on computed values: `Concat`, `Flatten`, `Reshape` to a flat vector, and
//! `Identity` / `Dropout` (inference), which add no node.

use super::tensor::Attrs;
use super::{ImportCx, Value};
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Concat, Op};
use anyhow::{bail, Result};

pub fn concat(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let mut inputs = Vec::new();
    let mut rank = 0;
    for i in 0..node.input.len() {
        let (x, shape) = cx.live(node, i)?;
        rank = shape.len() as i64 + 1;
        inputs.push(x);
    }
    let axis = Attrs(node).int("axis", 1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis <= 0 || axis >= rank {
        bail!("concatenates along axis {axis} (the batch, or outside the rank)");
    }
    cx.add(
        node,
        Op::Concat(Concat {
            axis: axis as usize - 1,
        }),
        inputs,
    )
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

/// A reshape that keeps the batch and flattens the rest, or changes nothing.
pub fn reshape(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, shape) = cx.live(node, 0)?;
    let target = Vec::<i64>::try_from(cx.constant(node, 1)?.to_kind(tch::Kind::Int64).flatten(0, -1))?;
    let numel: usize = shape.iter().product();
    let per_sample: Vec<i64> = match target.split_first() {
        Some((&batch, rest)) if batch == -1 || batch == 0 || batch == 1 => rest.to_vec(),
        _ => bail!("reshapes to {target:?}, which does not keep the batch first"),
    };
    let resolved: Vec<usize> = if per_sample.contains(&-1) {
        let known: i64 = per_sample.iter().filter(|&&d| d != -1).product();
        per_sample
            .iter()
            .map(|&d| {
                if d == -1 {
                    numel / known.max(1) as usize
                } else {
                    d as usize
                }
            })
            .collect()
    } else {
        per_sample.iter().map(|&d| d as usize).collect()
    };
    if resolved == shape {
        cx.alias(node, 0, Value::Live { node: x, shape });
        return Ok(());
    }
    if resolved == [numel] {
        return cx.add(node, Op::Flatten, vec![x]);
    }
    bail!("reshapes {shape:?} to {resolved:?} (cut reshapes to a flat vector only, so far)")
}

pub fn identity(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (x, shape) = cx.live(node, 0)?;
    cx.alias(node, 0, Value::Live { node: x, shape });
    Ok(())
}
