//! `dequantize_linear`: ONNX DequantizeLinear per tensor on codes held in f32:
//! (x - zero_point) * scale. Constant weights behind a DequantizeLinear are folded at import;
//! this op is for computed values (an int8 file's activations).

use super::quantize_linear::{check_scale, code_range};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DequantizeLinear {
    pub scale: f64,
    pub zero_point: i64,
    /// The codes are int8 rather than uint8 (for the file written back).
    pub signed: bool,
}

impl OpDef for DequantizeLinear {
    fn validate(&self, node: &str) -> Result<()> {
        check_scale(node, self.scale, self.zero_point, code_range(self.signed))
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok((args[0] - self.zero_point as f64) * self.scale)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let scale = cx.graph.float_scalar("scale", self.scale as f32)?;
        let zero = cx.graph.byte_scalar("zero_point", self.zero_point, self.signed)?;
        Ok(cx.op("DequantizeLinear", &[args[0], &scale, &zero], vec![]))
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
        let dq = DequantizeLinear { scale: 0.5, zero_point: 10, signed: false };
        let x = Tensor::from_slice(&[10.0f32, 12.0, 0.0, 255.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&dq, &[&x]).unwrap()).unwrap();
        assert_eq!(y, [0.0, 1.0, -5.0, 122.5]);
    }
}
