//! `relu`: max(x, 0), element-wise.

use crate::graph::onnx::ExportCx;
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::Result;
use tch::Tensor;

pub struct Relu;

impl OpDef for Relu {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].relu())
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Relu", args, vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
