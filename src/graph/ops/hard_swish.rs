//! `hard_swish`: x * relu6(x + 3) / 6, element-wise (MobileNetV3).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::Result;
use tch::Tensor;

pub struct HardSwish;

impl OpDef for HardSwish {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].hardswish())
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        if cx.graph.opset >= 14 {
            return Ok(cx.op("HardSwish", args, vec![]));
        }
        let gate = cx.op(
            "HardSigmoid",
            args,
            vec![Attr::Float("alpha", 1.0 / 6.0), Attr::Float("beta", 0.5)],
        );
        Ok(cx.op("Mul", &[args[0], &gate], vec![]))
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
        let x = Tensor::from_slice(&[-4.0f32, -1.0, 0.0, 1.0, 4.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&HardSwish, &[&x]).unwrap()).unwrap();
        // -1 * 2 / 6, 1 * 4 / 6; below -3 zero, above 3 the input.
        let want = [0.0, -1.0 / 3.0, 0.0, 2.0 / 3.0, 4.0];
        assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
    }
}
