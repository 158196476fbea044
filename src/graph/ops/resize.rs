//! `resize`: a feature map [C, h, w] to a fixed [C, height, width], bilinear without corner
//! alignment (a split model's cloud side restoring the size its device side pooled away).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    pub height: usize,
    pub width: usize,
}

impl OpDef for Resize {
    fn validate(&self, node: &str) -> Result<()> {
        if self.height == 0 || self.width == 0 {
            bail!("graph node '{node}' resizes to an empty map");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (c, _, _) = cx.spatial(inputs[0])?;
        Ok(vec![c, self.height, self.width])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let size = [self.height as i64, self.width as i64];
        Ok(args[0].upsample_bilinear2d(size, false, None, None))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // sizes = [N, C] of the input, then the fixed height and width.
        let shape = cx.op("Shape", &[args[0]], vec![]);
        let (zero, two) = (cx.graph.ints("zero1", &[0])?, cx.graph.ints("two1", &[2])?);
        let lead = cx.op("Slice", &[&shape, &zero, &two], vec![]);
        let hw = cx.graph.ints("resize_hw", &[self.height as i64, self.width as i64])?;
        let sizes = cx.op("Concat", &[&lead, &hw], vec![Attr::Int("axis", 0)]);
        Ok(cx.op(
            "Resize",
            &[args[0], "", "", &sizes],
            vec![
                Attr::Str("mode", "linear"),
                Attr::Str("coordinate_transformation_mode", "half_pixel"),
            ],
        ))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
