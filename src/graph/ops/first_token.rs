//! `first_token`: [N, L, H] to [N, H], the first position (BERT's [CLS], RoBERTa's <s>).

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
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "sequence pooling",
        }
    }
}
