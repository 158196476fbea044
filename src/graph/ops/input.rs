//! `input`: the batch given to the graph. An image graph's one input is [N, C, H, W].

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Input;

impl OpDef for Input {
    fn arity(&self) -> (usize, usize) {
        (0, 0)
    }
    fn infer(&self, cx: &ShapeCx, _inputs: &[&Shape]) -> Result<Shape> {
        if cx.input.first() != Some(&cx.declared_channels) {
            bail!(
                "the graph takes {} input channels, not {}",
                cx.declared_channels,
                cx.input.first().copied().unwrap_or(0)
            );
        }
        Ok(cx.input.to_vec())
    }
    fn eval(&self, cx: &EvalCx, _args: &[&Tensor]) -> Result<Tensor> {
        Ok(cx.input.shallow_clone())
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Source
    }
}
