//! `clip`: the input clamped to [min, max], element-wise (ReLU6 is min 0, max 6).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl OpDef for Clip {
    fn validate(&self, node: &str) -> Result<()> {
        if let (Some(lo), Some(hi)) = (self.min, self.max) {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                bail!("graph node '{node}' clips to [{lo}, {hi}], an empty range");
            }
        }
        Ok(())
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(match (self.min, self.max) {
            (Some(lo), Some(hi)) => args[0].clamp(lo, hi),
            (Some(lo), None) => args[0].clamp_min(lo),
            (None, Some(hi)) => args[0].clamp_max(hi),
            (None, None) => args[0].shallow_clone(),
        })
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let bound = |cx: &mut ExportCx, hint: &str, v: Option<f64>| match v {
            Some(v) => cx.graph.float_scalar(hint, v as f32),
            None => Ok(String::new()),
        };
        let lo = bound(cx, "clip_min", self.min)?;
        let hi = bound(cx, "clip_max", self.max)?;
        Ok(cx.op("Clip", &[args[0], &lo, &hi], vec![]))
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
        let relu6 = Clip { min: Some(0.0), max: Some(6.0) };
        let x = Tensor::from_slice(&[-1.0f32, 3.0, 7.5]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&relu6, &[&x]).unwrap()).unwrap();
        assert_eq!(y, [0.0, 3.0, 6.0]);
        let empty = Clip { min: Some(2.0), max: Some(1.0) };
        assert!(empty.validate("n").unwrap_err().to_string().contains("empty range"));
    }
}
