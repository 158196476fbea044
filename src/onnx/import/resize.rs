//! `Resize`: bilinear (half-pixel centres, PyTorch's `align_corners=False`) to a fixed size as
//! `resize`; nearest by a whole factor (asymmetric, floor: PyTorch's `nearest`) as `upsample`.

use super::tensor::Attrs;
use super::ImportCx;
use crate::graph::onnx::proto::NodeProto;
use crate::graph::ops::{Op, Resize, Upsample, UpsampleMode};
use anyhow::{bail, Result};

pub fn resize(cx: &mut ImportCx, node: &NodeProto) -> Result<()> {
    let attrs = Attrs(node);
    let (x, shape) = cx.live(node, 0)?;
    if shape.len() != 3 {
        bail!("resizes a {}-d value; cut resizes [C, H, W]", shape.len());
    }
    let (h, w) = (shape[1], shape[2]);
    let (oh, ow) = if ImportCx::has_input(node, 3) {
        let sizes = Vec::<i64>::try_from(cx.constant(node, 3)?.to_kind(tch::Kind::Int64).flatten(0, -1))?;
        match sizes.as_slice() {
            [_, _, oh, ow] => (*oh as usize, *ow as usize),
            other => bail!("Resize sizes {other:?}"),
        }
    } else {
        let scales = Vec::<f32>::try_from(cx.constant(node, 2)?.to_kind(tch::Kind::Float).flatten(0, -1))?;
        match scales.as_slice() {
            [_, _, sh, sw] => ((h as f32 * sh).floor() as usize, (w as f32 * sw).floor() as usize),
            other => bail!("Resize scales {other:?}"),
        }
    };
    let mode = attrs.string("mode", "nearest");
    let transform = attrs.string("coordinate_transformation_mode", "half_pixel");
    let op = match (mode.as_str(), transform.as_str()) {
        ("linear", "half_pixel" | "pytorch_half_pixel") => Op::Resize(Resize { height: oh, width: ow }),
        ("nearest", "asymmetric") if oh % h == 0 && oh / h == ow / w && ow % w == 0 => {
            let rounding = attrs.string("nearest_mode", "round_prefer_floor");
            if rounding != "floor" {
                bail!("nearest Resize rounding '{rounding}' (PyTorch exports floor)");
            }
            Op::Upsample(Upsample {
                scale: oh / h,
                mode: UpsampleMode::Nearest,
            })
        }
        _ => bail!("Resize mode '{mode}' with '{transform}' from {h}x{w} to {oh}x{ow}"),
    };
    cx.add(node, op, vec![x])
}
