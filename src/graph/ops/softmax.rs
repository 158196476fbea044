//! `softmax`: exp(x) / sum(exp(x)) along one per-sample axis (attention weights, YOLO's
//! distribution bins).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Softmax {
    /// The per-sample axis (the batch is not counted).
    pub axis: usize,
}

impl OpDef for Softmax {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        if self.axis >= inputs[0].len() {
            bail!("node '{}' takes a softmax along axis {} of {:?}", cx.node, self.axis, inputs[0]);
        }
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].softmax(self.axis as i64 + 1, None::<Kind>))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Softmax", args, vec![Attr::Int("axis", self.axis as i64 + 1)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        if self.axis == 0 {
            ChannelRule::Mix { why: "normalises across channels" }
        } else {
            ChannelRule::Preserve
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one() {
        let x = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0f32.ln()]).view([1, 2, 2]);
        let y = super::super::eval_alone(&Softmax { axis: 1 }, &[&x]).unwrap();
        let v = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();
        // Row [1, ln 1 = 0]: e / (e + 1) = 0.7310586.
        assert_eq!(&v[..2], &[0.5, 0.5]);
        assert!((v[2] - 0.731_058_6).abs() < 1e-6 && (v[3] - 0.268_941_4).abs() < 1e-6, "{v:?}");
    }
}
