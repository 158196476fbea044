//! `tanh`: element-wise hyperbolic tangent (BERT's pooler, RoBERTa's classification head).

use crate::graph::onnx::ExportCx;
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::Result;
use tch::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct Tanh;

impl OpDef for Tanh {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].tanh())
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Tanh", args, vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
