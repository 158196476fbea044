//! `first_token`: [N, L, H] to [N, H], the first position (BERT's [CLS], RoBERTa's <s>).

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use tch::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct FirstToken;

impl OpDef for FirstToken {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].as_slice() {
            [len, h] if *len > 0 => Ok(vec![*h]),
            other => bail!("node '{}' needs a sequence [L, H] with L > 0, gets {other:?}", cx.node),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].select(1, 0))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let zero = cx.graph.int_scalar("zero", 0)?;
        Ok(cx.op("Gather", &[args[0], &zero], vec![Attr::Int("axis", 1)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "sequence pooling",
        }
    }
}
