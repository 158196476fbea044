//! `mask_pool`: an attention mask [N, L] to [N, ceil(L / factor)], a window attended when any of
//! its tokens is (the mask of `token_pool`'s output).

use super::token_pool::{export_windows, windows};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskPool {
    pub factor: usize,
}

impl OpDef for MaskPool {
    fn validate(&self, node: &str) -> Result<()> {
        if self.factor == 0 {
            bail!("graph node '{node}' has a pooling factor of 0");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].as_slice() {
            [len] => Ok(vec![len.div_ceil(self.factor)]),
            other => bail!("node '{}' needs a mask [L], gets {other:?}", cx.node),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let attended = windows(&args[0].ne(0).to_kind(tch::Kind::Int64), self.factor);
        Ok(attended.amax([2].as_slice(), false))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let zero = cx.graph.int_scalar("zero", 0)?;
        let pad = cx.op("Equal", &[args[0], &zero], vec![]);
        let keep = cx.op("Not", &[&pad], vec![]);
        let keep = cx.op(
            "Cast",
            &[&keep],
            vec![crate::graph::onnx::Attr::Int("to", crate::graph::onnx::DataType::Int64 as i64)],
        );
        let w = export_windows(cx, &keep, self.factor, &[])?;
        cx.graph.reduce(cx.node, "ReduceMax", &w, &[2], false)
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "token pooling",
        }
    }
}
