//! `quantize_linear`: ONNX QuantizeLinear per tensor, its integer codes held in f32:
//! clamp(round_half_even(x / scale) + zero_point, low, high), low and high the code type's range
//! (uint8 0..255, int8 -128..127). With `dequantize_linear` after it, an int8 ONNX file's
//! activations run as they do in the file.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizeLinear {
    pub scale: f64,
    pub zero_point: i64,
    /// int8 codes (-128..127) rather than uint8 (0..255).
    pub signed: bool,
}

impl QuantizeLinear {
    pub fn range(&self) -> (i64, i64) {
        code_range(self.signed)
    }
}

/// The codes of int8 (`signed`) or uint8.
pub fn code_range(signed: bool) -> (i64, i64) {
    if signed {
        (-128, 127)
    } else {
        (0, 255)
    }
}

/// A per-tensor scale and zero point are usable: the scale positive and finite, the zero point a
/// code of the type.
pub fn check_scale(node: &str, scale: f64, zero_point: i64, (low, high): (i64, i64)) -> Result<()> {
    if !(scale > 0.0 && scale.is_finite()) {
        bail!("graph node '{node}' has quantization scale {scale}; it must be positive and finite");
    }
    if !(low..=high).contains(&zero_point) {
        bail!("graph node '{node}' has zero point {zero_point} outside {low}..{high}");
    }
    Ok(())
}

impl OpDef for QuantizeLinear {
    fn validate(&self, node: &str) -> Result<()> {
        check_scale(node, self.scale, self.zero_point, self.range())
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let (low, high) = self.range();
        // torch rounds half to even, as QuantizeLinear does.
        Ok(((args[0] / self.scale).round() + self.zero_point as f64).clamp(low as f64, high as f64))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let scale = cx.graph.float_scalar("scale", self.scale as f32)?;
        let zero = cx.graph.byte_scalar("zero_point", self.zero_point, self.signed)?;
        Ok(cx.op("QuantizeLinear", &[args[0], &scale, &zero], vec![]))
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
        let q = QuantizeLinear { scale: 0.5, zero_point: 10, signed: false };
        // 0.25 / 0.5 = 0.5 rounds to 0 (even), 0.75 / 0.5 = 1.5 to 2; -10 clamps at 0, 200 at 255.
        let x = Tensor::from_slice(&[0.25f32, 0.75, -10.0, 200.0]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&q, &[&x]).unwrap()).unwrap();
        assert_eq!(y, [10.0, 12.0, 0.0, 255.0]);
        let bad = QuantizeLinear { scale: 0.0, zero_point: 0, signed: true };
        assert!(bad.validate("n").unwrap_err().to_string().contains("positive"));
        let off = QuantizeLinear { scale: 1.0, zero_point: 200, signed: true };
        assert!(off.validate("n").unwrap_err().to_string().contains("outside -128..127"));
    }
}
