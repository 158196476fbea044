//! `upsample`: scales H and W by an integer factor, nearest or bilinear (align_corners false).

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    Nearest,
    Bilinear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Upsample {
    pub scale: usize,
    pub mode: UpsampleMode,
}

impl OpDef for Upsample {
    fn validate(&self, node: &str) -> Result<()> {
        if self.scale == 0 {
            bail!("graph node '{node}' has an upsampling scale of 0");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (channels, h, w) = cx.spatial(inputs[0])?;
        Ok(vec![channels, h * self.scale, w * self.scale])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let x = args[0];
        let size = x.size();
        let out = [size[2] * self.scale as i64, size[3] * self.scale as i64];
        Ok(match self.mode {
            UpsampleMode::Nearest => x.upsample_nearest2d(out, None, None),
            UpsampleMode::Bilinear => x.upsample_bilinear2d(out, false, None, None),
        })
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let s = self.scale as f32;
        let scales = cx.constant(
            &format!("{}.scales", cx.node),
            &Tensor::from_slice(&[1f32, 1.0, s, s]),
        )?;
        // Matches the interpreter: bilinear without corner alignment is half_pixel; nearest is
        // PyTorch's floor of the asymmetric source coordinate.
        let attrs = match self.mode {
            UpsampleMode::Nearest => vec![
                Attr::Str("mode", "nearest"),
                Attr::Str("coordinate_transformation_mode", "asymmetric"),
                Attr::Str("nearest_mode", "floor"),
            ],
            UpsampleMode::Bilinear => vec![
                Attr::Str("mode", "linear"),
                Attr::Str("coordinate_transformation_mode", "half_pixel"),
            ],
        };
        Ok(cx.op("Resize", &[args[0], "", &scales], attrs))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
