//! `layer_norm`: normalises the last axis of [..., H] to zero mean and unit variance (biased),
//! then scales and shifts it: y = (x - mean) / sqrt(var + eps) * weight + bias.

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerNorm {
    pub weight: String,
    pub bias: String,
    pub features: usize,
    pub eps: f64,
}

impl OpDef for LayerNorm {
    fn params(&self) -> Vec<ParamSlot> {
        vec![
            (self.weight.clone(), ParamRole::NormWeight, vec![self.features]),
            (self.bias.clone(), ParamRole::NormBias, vec![self.features]),
        ]
    }
    fn validate(&self, node: &str) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            bail!("graph node '{node}' has layer-norm eps {}, not a positive number", self.eps);
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].last() {
            Some(&h) if h == self.features => Ok(inputs[0].clone()),
            _ => bail!(
                "node '{}' normalises {} features, gets {:?}",
                cx.node,
                self.features,
                inputs[0]
            ),
        }
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].f_layer_norm(
            [self.features as i64],
            Some(cx.param(&self.weight)?),
            Some(cx.param(&self.bias)?),
            self.eps,
            true,
        )?)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        cx.require_opset(17, "LayerNormalization")?;
        let (w, b) = (cx.weight(&self.weight)?, cx.weight(&self.bias)?);
        Ok(cx.op(
            "LayerNormalization",
            &[args[0], &w, &b],
            vec![Attr::Int("axis", -1), Attr::Float("epsilon", self.eps as f32)],
        ))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "layer norm over the features",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::Mode;
    use crate::graph::Params;
    use std::collections::BTreeMap;

    /// x = (1, 2, 3, 6): mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5; with weight 2 and
    /// bias 1, y = 1 + 2 (x - 3) / sqrt(3.5 + eps).
    #[test]
    fn by_hand() {
        let params = Params::from([
            ("w".to_string(), Tensor::from_slice(&[2f32; 4])),
            ("b".to_string(), Tensor::from_slice(&[1f32; 4])),
        ]);
        let op = LayerNorm {
            weight: "w".into(),
            bias: "b".into(),
            features: 4,
            eps: 1e-12,
        };
        let inputs = BTreeMap::new();
        let cx = EvalCx {
            node: "ln",
            params: &params,
            inputs: &inputs,
            mode: Mode::Eval,
        };
        let x = Tensor::from_slice(&[1f32, 2., 3., 6.]).view([1, 1, 4]);
        let y = Vec::<f32>::try_from(op.eval(&cx, &[&x]).unwrap().flatten(0, -1)).unwrap();
        let s = 3.5f64.sqrt();
        let want = [1. - 4. / s, 1. - 2. / s, 1., 1. + 6. / s];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{y:?} vs {want:?}");
        }
    }
}
