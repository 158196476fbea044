//! `erf`: the error function, element-wise (exporters write exact GELU as x/sqrt2, erf, +1, *x,
//! *0.5 before opset 20).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::Result;
use tch::Tensor;

pub struct Erf;

impl OpDef for Erf {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].erf())
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Erf", args, vec![]))
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
        let x = Tensor::from_slice(&[0.0f32, 1.0, -1.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&Erf, &[&x]).unwrap()).unwrap();
        // erf(1) = 0.8427008.
        assert!(y[0] == 0.0 && (y[1] - 0.842_700_8).abs() < 1e-6 && (y[2] + 0.842_700_8).abs() < 1e-6, "{y:?}");
    }
}
