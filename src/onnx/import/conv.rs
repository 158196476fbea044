//! `Conv` (2-d) as `conv2d` and `ConvTranspose` as `conv_transpose2d`: the weight (and bias)
//! initializers become their parameters.

use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Conv2d, ConvTranspose2d, Op};
use anyhow::{bail, Result};

/// Two per-axis values from an attribute, `default` when absent.
pub fn pair_of(attrs: &Attrs, name: &str, default: usize) -> Result<[usize; 2]> {
    match attrs.ints(name).as_deref() {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
        Some(other) => bail!("{name} {other:?}: expected two non-negative values (a 2-d op)"),
    }
}

/// Symmetric padding from `pads` ([top, left, bottom, right]); `auto_pad` other than NOTSET is
/// refused.
pub fn symmetric_pads(attrs: &Attrs) -> Result<[usize; 2]> {
    let auto = attrs.string("auto_pad", "NOTSET");
    if auto != "NOTSET" && !auto.is_empty() {
        bail!("auto_pad {auto} (re-export with explicit pads)");
    }
    match attrs.ints("pads").as_deref() {
        None => Ok([0, 0]),
        Some([t, l, b, r]) if t == b && l == r && *t >= 0 && *l >= 0 => Ok([*t as usize, *l as usize]),
        Some(other) => bail!("pads {other:?}: cut reads symmetric 2-d padding"),
    }
}

pub fn conv(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let (x, _) = cx.live(node, 0)?;
    let weight = cx.constant(node, 1)?.shallow_clone();
    if weight.dim() != 4 {
        bail!("a {}-d convolution; cut imports 2-d ones", weight.dim() as i64 - 2);
    }
    let size = weight.size();
    let groups = attrs.int("group", 1).max(1) as usize;
    let weight_name = cx.param(node, 1, weight)?;
    let bias = if ImportCx::has_input(node, 2) {
        let b = cx.constant(node, 2)?.shallow_clone();
        Some(cx.param(node, 2, b)?)
    } else {
        None
    };
    let op = Conv2d {
        weight: weight_name,
        bias,
        in_channels: size[1] as usize * groups,
        out_channels: size[0] as usize,
        kernel: [size[2] as usize, size[3] as usize],
        stride: pair_of(&attrs, "strides", 1)?,
        padding: symmetric_pads(&attrs)?,
        dilation: pair_of(&attrs, "dilations", 1)?,
        groups,
        relu: false,
        live_taps: None,
    };
    cx.add(node, Op::Conv2d(op), vec![x])
}

pub fn conv_transpose(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    if attrs.has("output_shape") {
        bail!("a ConvTranspose with output_shape (re-export with pads)");
    }
    let (x, _) = cx.live(node, 0)?;
    let weight = cx.constant(node, 1)?.shallow_clone();
    if weight.dim() != 4 {
        bail!(
            "a {}-d transposed convolution; cut imports 2-d ones",
            weight.dim() as i64 - 2
        );
    }
    let size = weight.size();
    let groups = attrs.int("group", 1).max(1) as usize;
    let weight_name = cx.param(node, 1, weight)?;
    let bias = if ImportCx::has_input(node, 2) {
        let b = cx.constant(node, 2)?.shallow_clone();
        Some(cx.param(node, 2, b)?)
    } else {
        None
    };
    let op = ConvTranspose2d {
        weight: weight_name,
        bias,
        in_channels: size[0] as usize,
        out_channels: size[1] as usize * groups,
        kernel: [size[2] as usize, size[3] as usize],
        stride: pair_of(&attrs, "strides", 1)?,
        padding: symmetric_pads(&attrs)?,
        output_padding: pair_of(&attrs, "output_padding", 0)?,
        dilation: pair_of(&attrs, "dilations", 1)?,
        groups,
    };
    cx.add(node, Op::ConvTranspose2d(op), vec![x])
}
