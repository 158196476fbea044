//! `QuantizeLinear` and `DequantizeLinear`, the QDQ form of int8 files. On constants (int8
//! weights, int32 biases, per axis or per tensor) they fold at import to the f32 values the file
//! means; on computed values (activations, per tensor) they become `quantize_linear` and
//! `dequantize_linear` nodes, so the model runs with the file's rounding and clipping.

use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{code_range, DequantizeLinear, Op, QuantizeLinear};
use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

/// `scale` (and the zero point) shaped to broadcast along `axis` of `x`: a scalar as it is, a
/// 1-D tensor of x's size on that axis.
fn along_axis(t: &Tensor, x: &Tensor, axis: i64) -> Result<Tensor> {
    if t.dim() == 0 {
        return Ok(t.shallow_clone());
    }
    let rank = x.dim() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    if t.dim() != 1 || !(0..rank).contains(&a) || x.size()[a as usize] != t.size()[0] {
        bail!(
            "a scale of shape {:?} does not run along axis {axis} of a tensor of shape {:?}",
            t.size(),
            x.size()
        );
    }
    let mut shape = vec![1i64; rank as usize];
    shape[a as usize] = t.size()[0];
    Ok(t.reshape(&shape))
}

fn zero_point(args: &[Option<Tensor>]) -> Option<&Tensor> {
    args.get(2).and_then(Option::as_ref)
}

/// DequantizeLinear of constants: (x - zero point) * scale.
pub fn dequantize(x: &Tensor, args: &[Option<Tensor>], axis: i64) -> Result<Tensor> {
    let scale = args
        .get(1)
        .and_then(Option::as_ref)
        .ok_or_else(|| anyhow!("has no scale"))?;
    let scale = along_axis(&scale.to_kind(Kind::Float), x, axis)?;
    let x = x.to_kind(Kind::Float);
    Ok(match zero_point(args) {
        Some(z) => (&x - along_axis(&z.to_kind(Kind::Float), &x, axis)?) * scale,
        None => x * scale,
    })
}

/// Whether the codes are int8 rather than uint8: the zero point's type (uint8 without one).
fn signed_codes(zero: Option<&Tensor>) -> Result<bool> {
    match zero.map(Tensor::kind) {
        None | Some(Kind::Uint8) => Ok(false),
        Some(Kind::Int8) => Ok(true),
        Some(other) => bail!("zero points of {other:?} are not read (uint8 and int8 are)"),
    }
}

/// QuantizeLinear of constants: clamp(round(x / scale) + zero point), codes as int64.
pub fn quantize(x: &Tensor, args: &[Option<Tensor>], axis: i64) -> Result<Tensor> {
    let scale = args
        .get(1)
        .and_then(Option::as_ref)
        .ok_or_else(|| anyhow!("has no scale"))?;
    let scale = along_axis(&scale.to_kind(Kind::Float), x, axis)?;
    let (low, high) = code_range(signed_codes(zero_point(args))?);
    let zero = match zero_point(args) {
        Some(z) => along_axis(&z.to_kind(Kind::Float), x, axis)?,
        None => Tensor::from(0f32),
    };
    Ok(((x.to_kind(Kind::Float) / scale).round() + zero)
        .clamp(low as f64, high as f64)
        .to_kind(Kind::Int64))
}

/// A computed value's per-tensor scale and zero point (constants).
fn per_tensor(cx: &ImportCx, node: &NodeProto) -> Result<(f64, i64, bool)> {
    let scale = cx.constant(node, 1)?;
    let zero = ImportCx::has_input(node, 2).then(|| cx.constant(node, 2)).transpose()?;
    if scale.numel() != 1 || zero.is_some_and(|z| z.numel() != 1) {
        crate::usage_bail!(
            "node '{}' ({}): per-axis quantization of a computed value is not read (per tensor is)",
            node.name,
            node.op_type
        );
    }
    let signed = signed_codes(zero)?;
    Ok((scale.double_value(&[]), zero.map_or(0, |z| z.int64_value(&[])), signed))
}

pub fn quantize_linear(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (scale, zero_point, signed) = per_tensor(cx, node)?;
    let (x, _) = cx.live(node, 0)?;
    cx.add(
        node,
        Op::QuantizeLinear(QuantizeLinear {
            scale,
            zero_point,
            signed,
        }),
        vec![x],
    )
}

pub fn dequantize_linear(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let (scale, zero_point, signed) = per_tensor(cx, node)?;
    let (x, _) = cx.live(node, 0)?;
    cx.add(
        node,
        Op::DequantizeLinear(DequantizeLinear {
            scale,
            zero_point,
            signed,
        }),
        vec![x],
    )
}
