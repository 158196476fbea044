//! `flatten`: [N, ...] -> [N, product of the rest]. It mixes channels with positions, so the
//! channels it reads cannot be pruned.

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::Result;
use tch::Tensor;

pub struct Flatten;

impl OpDef for Flatten {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(vec![inputs[0].iter().product()])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].flatten(1, -1))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Flatten", args, vec![Attr::Int("axis", 1)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix { why: "flattened by" }
    }
    fn aliases_input(&self) -> bool {
        true
    }
}
