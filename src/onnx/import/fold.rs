//! Folding at import: nodes whose inputs are all known (initializers, constants, the shapes of
//! computed values) are evaluated now, so the graph keeps only what depends on the input. A
//! computed value's `Shape` is known except for its batch, which folds to -1: a `Reshape` to
//! `[batch, ...]` built from it then keeps the batch dynamic.

use super::tensor::Attrs;
use super::{ImportCx, Value};
use crate::graph::onnx::proto::{tensor_proto::DataType, NodeProto};
use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

/// The ops folded when their inputs are known.
pub const FOLDABLE: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "ConstantOfShape",
    "Equal",
    "Where",
    "Expand",
    "Range",
    "Slice",
    "Reshape",
    "Transpose",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sqrt",
    "Neg",
    "Identity",
    "Dropout",
    "Floor",
    "Ceil",
    "Mod",
    "And",
    "Or",
    "Not",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "IsNaN",
    "GatherElements",
    "Flatten",
    "CumSum",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// Folds `node` when it can be evaluated now; returns whether it was.
pub fn try_fold(cx: &mut ImportCx, node: &NodeProto) -> Result<bool> {
    if !FOLDABLE.contains(&node.op_type.as_str()) {
        return Ok(false);
    }
    let value = match node.op_type.as_str() {
        "Constant" => constant(node)?,
        "Shape" => match cx.value(node, 0)? {
            Value::Const(t) => shape_attrs_slice(t.size(), node),
            Value::Live { shape, .. } => shape_attrs_slice(with_batch(-1, shape), node),
            // ONNX axis 0 of a folded value is the batch and the pieces together.
            Value::Folded { shape, .. } => shape_attrs_slice(with_batch(-1, &shape[1..]), node),
            Value::Moved { shape, perm, .. } => {
                let full = with_batch(-1, shape);
                shape_attrs_slice(perm.iter().map(|&p| full[p]).collect(), node)
            }
        },
        _ => {
            let mut args = Vec::new();
            for i in 0..node.input.len() {
                if !ImportCx::has_input(node, i) {
                    args.push(None);
                    continue;
                }
                match cx.value(node, i)? {
                    Value::Const(t) => args.push(Some(t.shallow_clone())),
                    Value::Live { .. } | Value::Moved { .. } | Value::Folded { .. } => return Ok(false),
                }
            }
            evaluate(node, &args)?
        }
    };
    cx.alias(node, 0, Value::Const(value));
    Ok(true)
}

/// A per-sample shape with `batch` in front (-1 at import: the batch is not known).
pub(super) fn with_batch(batch: i64, shape: &[usize]) -> Vec<i64> {
    std::iter::once(batch).chain(shape.iter().map(|&d| d as i64)).collect()
}

/// The dimensions `Shape` gives: `full` sliced by its `start`/`end` attributes (opset 15).
pub(super) fn shape_attrs_slice(full: Vec<i64>, node: &NodeProto) -> Tensor {
    let attrs = Attrs(node);
    let rank = full.len() as i64;
    let norm = |v: i64| if v < 0 { (v + rank).clamp(0, rank) } else { v.min(rank) };
    let start = norm(attrs.int("start", 0));
    let end = if attrs.has("end") {
        norm(attrs.int("end", rank))
    } else {
        rank
    };
    Tensor::from_slice(&full[start as usize..end.max(start) as usize])
}

pub(super) fn constant(node: &NodeProto) -> Result<Tensor> {
    let attrs = Attrs(node);
    if let Some(t) = attrs.tensor("value") {
        return super::tensor::tensor_of(t, std::path::Path::new("."));
    }
    if attrs.has("value_float") {
        return Ok(Tensor::from(attrs.float("value_float", 0.0)));
    }
    if attrs.has("value_int") {
        return Ok(Tensor::from(attrs.int("value_int", 0)));
    }
    if let Some(v) = attrs.ints("value_ints") {
        return Ok(Tensor::from_slice(&v));
    }
    bail!("Constant without a value cut reads")
}

fn arg(args: &[Option<Tensor>], i: usize) -> Result<&Tensor> {
    args.get(i)
        .and_then(Option::as_ref)
        .ok_or_else(|| anyhow!("has no input {i}"))
}

fn ints_of(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1))?)
}

/// An axis, negative counting from the end, within `rank`.
fn axis(a: i64, rank: i64) -> Result<i64> {
    let n = if a < 0 { a + rank } else { a };
    if !(0..rank.max(1)).contains(&n) {
        bail!("axis {a} is outside a rank-{rank} tensor");
    }
    Ok(n)
}

/// Evaluates one foldable op on constants (booleans are int64 0 and 1).
pub(super) fn evaluate(node: &NodeProto, args: &[Option<Tensor>]) -> Result<Tensor> {
    let attrs = Attrs(node);
    let x = arg(args, 0)?;
    Ok(match node.op_type.as_str() {
        "Identity" | "Dropout" => x.shallow_clone(),
        "DequantizeLinear" => super::quant::dequantize(x, args, attrs.int("axis", 1))?,
        "QuantizeLinear" => super::quant::quantize(x, args, attrs.int("axis", 1))?,
        "Gather" => gather(x, arg(args, 1)?, attrs.int("axis", 0))?,
        "Unsqueeze" | "Squeeze" => squeeze_or_unsqueeze(node, x, args)?,
        "Concat" => concat(args, attrs.int("axis", 0))?,
        "Cast" => cast(x, attrs.int("to", 1))?,
        "ConstantOfShape" => constant_of_shape(x, &attrs)?,
        "Equal" => x.eq_tensor(arg(args, 1)?).to_kind(Kind::Int64),
        "Where" => arg(args, 1)?.where_self(&x.ne(0), arg(args, 2)?),
        "Expand" => {
            let want = ints_of(arg(args, 1)?)?;
            let shape = broadcast_shape(&x.size(), &want)?;
            x.expand(shape.as_slice(), false).contiguous()
        }
        "Range" => range(x, arg(args, 1)?, arg(args, 2)?)?,
        "Slice" => slice(x, args)?,
        "Reshape" => reshape(x, arg(args, 1)?)?,
        "Transpose" => {
            let perm = attrs
                .ints("perm")
                .unwrap_or_else(|| (0..x.dim() as i64).rev().collect());
            x.permute(perm.as_slice()).contiguous()
        }
        "Add" | "Sub" | "Mul" | "Div" => arithmetic(&node.op_type, x, arg(args, 1)?),
        "Mod" if Attrs(node).int("fmod", 0) == 0 => x.remainder_tensor(arg(args, 1)?),
        "Mod" => x.fmod_tensor(arg(args, 1)?),
        "Sqrt" => x.to_kind(Kind::Float).sqrt(),
        "Neg" => x.neg(),
        "Floor" => x.floor(),
        "Ceil" => x.ceil(),
        "And" | "Or" | "Not" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual" | "IsNaN" | "GatherElements"
        | "CumSum" | "Flatten" => index_op(node, x, args)?,
        other => bail!("cannot fold {other}"),
    })
}

/// `Concat` of constants: floats if any part is, else int64.
fn concat(args: &[Option<Tensor>], axis_attr: i64) -> Result<Tensor> {
    let parts: Vec<&Tensor> = args.iter().flatten().collect();
    let kind = if parts.iter().any(|t| t.is_floating_point()) {
        Kind::Float
    } else {
        Kind::Int64
    };
    let parts: Vec<Tensor> = parts.iter().map(|t| t.to_kind(kind)).collect();
    let a = axis(axis_attr, arg(args, 0)?.dim().max(1) as i64)?;
    Ok(Tensor::cat(&parts, a))
}

/// `ConstantOfShape`: its `value` (0 by default) at the shape `x` holds.
fn constant_of_shape(x: &Tensor, attrs: &Attrs) -> Result<Tensor> {
    let shape = ints_of(x)?;
    let value = match attrs.tensor("value") {
        Some(t) => super::tensor::tensor_of(t, std::path::Path::new("."))?,
        None => Tensor::from(0.0f32),
    };
    Ok(value.reshape([-1]).get(0).expand(shape.as_slice(), false).contiguous())
}

/// `Range` of floats or of integers.
fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    if start.is_floating_point() {
        let (s, l, d) = (
            start.double_value(&[]),
            limit.double_value(&[]),
            delta.double_value(&[]),
        );
        return Tensor::f_arange_start_step(s, l, d, (Kind::Float, tch::Device::Cpu))
            .map_err(|_| anyhow!("Range from {s} to {l} by {d}"));
    }
    let (s, l, d) = (start.int64_value(&[]), limit.int64_value(&[]), delta.int64_value(&[]));
    Tensor::f_arange_start_step(s, l, d, (Kind::Int64, tch::Device::Cpu)).map_err(|_| {
        anyhow!("Range from {s} to {l} by {d} (a range over the batch, whose size is not known at import?)")
    })
}

/// `Reshape` of a constant: a 0 in the target keeps that dimension.
fn reshape(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    let shape: Vec<i64> = ints_of(target)?
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 0 {
                x.size().get(d).copied().unwrap_or(0)
            } else {
                n
            }
        })
        .collect();
    Ok(x.reshape(shape.as_slice()))
}

/// `Unsqueeze` and `Squeeze`, their axes an input (opset 13) or an attribute.
fn squeeze_or_unsqueeze(node: &NodeProto, x: &Tensor, args: &[Option<Tensor>]) -> Result<Tensor> {
    let attrs = Attrs(node);
    Ok(match node.op_type.as_str() {
        "Unsqueeze" => {
            let axes = match args.get(1).and_then(Option::as_ref) {
                Some(a) => ints_of(a)?,
                None => attrs.ints("axes").unwrap_or_default(),
            };
            let rank = x.dim() as i64 + axes.len() as i64;
            let mut axes = axes.iter().map(|&a| axis(a, rank)).collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            let mut shape = x.size();
            for a in axes {
                shape.insert(a as usize, 1);
            }
            x.reshape(shape.as_slice())
        }
        "Squeeze" => {
            let rank = x.dim() as i64;
            let axes = match args.get(1).and_then(Option::as_ref) {
                Some(a) => ints_of(a)?.iter().map(|&a| axis(a, rank)).collect::<Result<Vec<_>>>()?,
                None => (0..rank).filter(|&d| x.size()[d as usize] == 1).collect(),
            };
            let shape: Vec<i64> = x
                .size()
                .iter()
                .enumerate()
                .filter(|(d, _)| !axes.contains(&(*d as i64)))
                .map(|(_, &n)| n)
                .collect();
            x.reshape(shape.as_slice())
        }
        other => bail!("cannot fold {other}"),
    })
}

/// The ops of index arithmetic (masks, positions): logic, comparisons, `GatherElements`,
/// `CumSum`, `Flatten`.
fn index_op(node: &NodeProto, x: &Tensor, args: &[Option<Tensor>]) -> Result<Tensor> {
    let attrs = Attrs(node);
    Ok(match node.op_type.as_str() {
        "And" => x.ne(0).logical_and(&arg(args, 1)?.ne(0)).to_kind(Kind::Int64),
        "Or" => x.ne(0).logical_or(&arg(args, 1)?.ne(0)).to_kind(Kind::Int64),
        "Not" => x.eq(0).to_kind(Kind::Int64),
        "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual" => compare(&node.op_type, x, arg(args, 1)?),
        "IsNaN" => x.isnan().to_kind(Kind::Int64),
        "GatherElements" => {
            let a = axis(attrs.int("axis", 0), x.dim() as i64)?;
            let size = x.size()[a as usize];
            let idx = arg(args, 1)?.to_kind(Kind::Int64);
            let idx = idx.where_self(&idx.ge(0), &(&idx + size));
            x.gather(a, &idx, false)
        }
        "CumSum" => {
            if attrs.int("exclusive", 0) != 0 || attrs.int("reverse", 0) != 0 {
                bail!("CumSum exclusive or reversed");
            }
            let a = axis(ints_of(arg(args, 1)?)?[0], x.dim() as i64)?;
            x.cumsum(a, x.kind())
        }
        "Flatten" => {
            let a = attrs.int("axis", 1);
            let a = if a < 0 { a + x.dim() as i64 } else { a } as usize;
            let outer: i64 = x.size()[..a].iter().product();
            x.reshape([outer, -1])
        }
        other => bail!("cannot fold {other}"),
    })
}

fn gather(x: &Tensor, indices: &Tensor, a: i64) -> Result<Tensor> {
    let a = axis(a, x.dim() as i64)?;
    let size = x.size()[a as usize];
    let idx = indices.to_kind(Kind::Int64);
    let idx = idx.where_self(&idx.ge(0), &(&idx + size));
    let picked = x.index_select(a, &idx.flatten(0, -1));
    let mut shape: Vec<i64> = x.size()[..a as usize].to_vec();
    shape.extend(indices.size());
    shape.extend(&x.size()[a as usize + 1..]);
    Ok(picked.reshape(shape.as_slice()))
}

fn cast(x: &Tensor, to: i64) -> Result<Tensor> {
    let to = DataType::try_from(to as i32).map_err(|_| anyhow!("Cast to data type {to}"))?;
    Ok(match to {
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16 => x.to_kind(Kind::Float),
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 => {
            x.to_kind(Kind::Int64)
        }
        DataType::Bool => x.ne(0).to_kind(Kind::Int64),
        other => bail!("Cast to {other:?}"),
    })
}

/// ONNX (numpy) broadcasting of two shapes.
fn broadcast_shape(a: &[i64], b: &[i64]) -> Result<Vec<i64>> {
    let rank = a.len().max(b.len());
    let at = |s: &[i64], d: usize| if d + s.len() < rank { 1 } else { s[d + s.len() - rank] };
    (0..rank)
        .map(|d| match (at(a, d), at(b, d)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => bail!("shapes {a:?} and {b:?} do not broadcast ({x} against {y})"),
        })
        .collect()
}

fn slice(x: &Tensor, args: &[Option<Tensor>]) -> Result<Tensor> {
    let starts = ints_of(arg(args, 1)?)?;
    let ends = ints_of(arg(args, 2)?)?;
    let axes = match args.get(3).and_then(Option::as_ref) {
        Some(a) => ints_of(a)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match args.get(4).and_then(Option::as_ref) {
        Some(s) => ints_of(s)?,
        None => vec![1; starts.len()],
    };
    let mut out = x.shallow_clone();
    for (((&s, &e), &a), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let a = axis(a, x.dim() as i64)?;
        let n = out.size()[a as usize];
        let picked = slice_indices(s, e, step, n)?;
        out = out.index_select(a, &Tensor::from_slice(&picked));
    }
    Ok(out.contiguous())
}

/// The indices ONNX's `Slice` takes along an axis of `n`: starts and ends clamped (to [0, n] for
/// a positive step, [-1, n - 1] for a negative one), negative values counting from the end.
fn slice_indices(start: i64, end: i64, step: i64, n: i64) -> Result<Vec<i64>> {
    if step == 0 {
        bail!("Slice with step 0");
    }
    let from_end = |v: i64| if v < 0 { v + n } else { v };
    let (start, end) = if step > 0 {
        (from_end(start).clamp(0, n), from_end(end).clamp(0, n))
    } else {
        (from_end(start).clamp(-1, n - 1), from_end(end).clamp(-1, n - 1))
    };
    let mut picked = Vec::new();
    let mut i = start;
    while (step > 0 && i < end) || (step < 0 && i > end) {
        picked.push(i);
        i += step;
    }
    Ok(picked)
}

/// An ONNX comparison as int64 0 and 1.
fn compare(op: &str, a: &Tensor, b: &Tensor) -> Tensor {
    let (a, b, _) = promote(a, b);
    match op {
        "Greater" => a.gt_tensor(&b),
        "GreaterOrEqual" => a.ge_tensor(&b),
        "Less" => a.lt_tensor(&b),
        _ => a.le_tensor(&b),
    }
    .to_kind(Kind::Int64)
}

/// Both operands as floats when either is one (ONNX constants mix int64 sizes and floats);
/// whether they are.
fn promote(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, bool) {
    if a.is_floating_point() || b.is_floating_point() {
        (a.to_kind(Kind::Float), b.to_kind(Kind::Float), true)
    } else {
        (a.shallow_clone(), b.shallow_clone(), false)
    }
}

fn arithmetic(op: &str, a: &Tensor, b: &Tensor) -> Tensor {
    let (a, b, floats) = promote(a, b);
    match op {
        "Add" => &a + &b,
        "Sub" => &a - &b,
        "Mul" => &a * &b,
        _ if floats => &a / &b,
        _ => a.divide_tensor_mode(&b, "trunc"),
    }
}
