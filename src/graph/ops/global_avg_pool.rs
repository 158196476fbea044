//! `global_avg_pool`: the mean over the spatial dimensions, [N, C, H, W] -> [N, C].

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::Result;
use tch::Tensor;

pub struct GlobalAvgPool;

impl OpDef for GlobalAvgPool {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (channels, _, _) = cx.spatial(inputs[0])?;
        Ok(vec![channels])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].mean_dim([2i64, 3].as_slice(), false, None))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let pooled = cx.op("GlobalAveragePool", args, vec![]);
        Ok(cx.op("Flatten", &[&pooled], vec![Attr::Int("axis", 1)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
