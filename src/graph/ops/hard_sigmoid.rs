//! `hard_sigmoid`: clamp(alpha * x + beta, 0, 1), element-wise (MobileNetV3's gates: alpha 1/6,
//! beta 1/2).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardSigmoid {
    pub alpha: f64,
    pub beta: f64,
}

impl OpDef for HardSigmoid {
    fn validate(&self, node: &str) -> Result<()> {
        if !(self.alpha.is_finite() && self.beta.is_finite()) {
            bail!("graph node '{node}' has a non-finite hard-sigmoid slope or offset");
        }
        Ok(())
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok((args[0] * self.alpha + self.beta).clamp(0.0, 1.0))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let attrs = vec![
            Attr::Float("alpha", self.alpha as f32),
            Attr::Float("beta", self.beta as f32),
        ];
        Ok(cx.op("HardSigmoid", args, attrs))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_hand() {
        let op = HardSigmoid { alpha: 0.2, beta: 0.5 };
        let x = Tensor::from_slice(&[-5.0f32, 0.0, 1.0, 5.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&op, &[&x]).unwrap()).unwrap();
        assert_eq!(y, [0.0, 0.5, 0.7, 1.0]);
    }
}
