//! `input`: a batch given to the graph, under the node's name (see `graph::inputs` for the
//! declaration of its dtype and dimensions). An image graph's one input is [N, C, H, W].

use crate::graph::onnx::ExportCx;
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{anyhow, Result};
use tch::Tensor;

pub struct Input;

impl OpDef for Input {
    fn arity(&self) -> (usize, usize) {
        (0, 0)
    }
    fn infer(&self, cx: &ShapeCx, _inputs: &[&Shape]) -> Result<Shape> {
        Ok(cx.input.to_vec())
    }
    fn eval(&self, cx: &EvalCx, _args: &[&Tensor]) -> Result<Tensor> {
        cx.inputs
            .get(cx.node)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| anyhow!("no batch was given for input '{}'", cx.node))
    }
    fn export(&self, cx: &mut ExportCx, _args: &[&str]) -> Result<String> {
        // The graph input of the same name.
        Ok(cx.node.to_string())
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Source
    }
}
