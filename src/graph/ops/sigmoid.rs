//! `sigmoid`: 1 / (1 + e^-x), element-wise. SiLU (swish) is its input times this (`mul`).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::Result;
use tch::Tensor;

pub struct Sigmoid;

impl OpDef for Sigmoid {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].sigmoid())
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Sigmoid", args, vec![]))
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
        let x = Tensor::from_slice(&[0.0f32, 2.0, -2.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&Sigmoid, &[&x]).unwrap()).unwrap();
        // 1 / (1 + e^-2) = 0.880797.
        assert_eq!(y[0], 0.5);
        assert!((y[1] - 0.880797).abs() < 1e-6 && (y[2] - 0.119203).abs() < 1e-6, "{y:?}");
    }
}
