//! `dropout`: the identity at inference; while training, zeroes each activation with probability
//! `p` and scales the rest by 1 / (1 - p).

use crate::graph::onnx::ExportCx;
use super::{ChannelRule, EvalCx, Mode, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout {
    pub p: f64,
}

impl OpDef for Dropout {
    fn validate(&self, node: &str) -> Result<()> {
        // libtorch panics on a probability outside [0, 1].
        if !(0.0..=1.0).contains(&self.p) {
            bail!("graph node '{node}' has a dropout probability of {}, outside 0..1", self.p);
        }
        Ok(())
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(if cx.mode != Mode::Eval && self.p > 0.0 {
            args[0].dropout(self.p, true)
        } else {
            args[0].shallow_clone()
        })
    }
    fn export(&self, _cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // Inference: dropout is the identity, and the export drops it.
        Ok(args[0].to_string())
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
    fn aliases_input(&self) -> bool {
        true
    }
}
