//! `gelu`: x * Phi(x), element-wise; `approximate: "tanh"` for the tanh form some encoders use.

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeluApproximation {
    /// The exact erf form (Hugging Face's `gelu`).
    #[default]
    None,
    /// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (`gelu_new`, `gelu_pytorch_tanh`).
    Tanh,
}

impl GeluApproximation {
    /// The `approximate` argument of torch's gelu.
    pub fn torch_form(self) -> &'static str {
        match self {
            GeluApproximation::None => "none",
            GeluApproximation::Tanh => "tanh",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gelu {
    #[serde(default, skip_serializing_if = "is_exact")]
    pub approximate: GeluApproximation,
}

fn is_exact(a: &GeluApproximation) -> bool {
    *a == GeluApproximation::None
}

impl OpDef for Gelu {
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].f_gelu(self.approximate.torch_form())?)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        if cx.graph.opset >= 20 {
            return Ok(cx.op(
                "Gelu",
                args,
                vec![Attr::Str("approximate", self.approximate.torch_form())],
            ));
        }
        let x = args[0];
        let half = cx.graph.float_scalar("half", 0.5)?;
        let one = cx.graph.float_scalar("one", 1.0)?;
        let inner = match self.approximate {
            // erf(x / sqrt 2)
            GeluApproximation::None => {
                let root2 = cx.graph.float_scalar("sqrt2", std::f32::consts::SQRT_2)?;
                let scaled = cx.op("Div", &[x, &root2], vec![]);
                cx.op("Erf", &[&scaled], vec![])
            }
            // tanh(sqrt(2 / pi) (x + 0.044715 x^3))
            GeluApproximation::Tanh => {
                let c = cx.graph.float_scalar("gelu_c", 0.044715)?;
                let k = cx.graph.float_scalar("gelu_k", (2.0 / std::f32::consts::PI).sqrt())?;
                let x2 = cx.op("Mul", &[x, x], vec![]);
                let x3 = cx.op("Mul", &[&x2, x], vec![]);
                let cx3 = cx.op("Mul", &[&x3, &c], vec![]);
                let sum = cx.op("Add", &[x, &cx3], vec![]);
                let arg = cx.op("Mul", &[&sum, &k], vec![]);
                cx.op("Tanh", &[&arg], vec![])
            }
        };
        let plus = cx.op("Add", &[&inner, &one], vec![]);
        let times = cx.op("Mul", &[x, &plus], vec![]);
        Ok(cx.op("Mul", &[&times, &half], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::{eval_alone, Op};
    use crate::graph::Node;

    /// GELU(x) = x * Phi(x): Phi(1) = 0.841345, Phi(-1) = 0.158655, Phi(2) = 0.977250 (normal CDF
    /// tables); the tanh form at 1: 0.5 * (1 + tanh(0.797885 * 1.044715)) = 0.841192.
    #[test]
    fn values_by_hand_and_json() {
        let x = Tensor::from_slice(&[0f32, 1.0, -1.0, 2.0]);
        let exact = Vec::<f32>::try_from(eval_alone(&Gelu::default(), &[&x]).unwrap()).unwrap();
        for (got, want) in exact.iter().zip([0.0, 0.841345, -0.158655, 1.9545]) {
            assert!((got - want).abs() < 1e-5, "{exact:?}");
        }
        let tanh = Gelu {
            approximate: GeluApproximation::Tanh,
        };
        let approx = Vec::<f32>::try_from(eval_alone(&tanh, &[&x]).unwrap()).unwrap();
        assert!((approx[1] - 0.841192).abs() < 1e-5, "{approx:?}");

        let node: Node = serde_json::from_str(r#"{"name": "g", "inputs": ["x"], "op": "gelu"}"#).unwrap();
        assert_eq!(node.op, Op::Gelu(Gelu::default()));
        let node: Node =
            serde_json::from_str(r#"{"name": "g", "inputs": ["x"], "op": "gelu", "approximate": "tanh"}"#).unwrap();
        assert_eq!(node.op, Op::Gelu(tanh.clone()));
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            r#"{"name":"g","inputs":["x"],"op":"gelu","approximate":"tanh"}"#
        );
        let shape = vec![7, 5];
        let cx = ShapeCx {
            node: "g",
            input_names: &[],
            input: &[],
        };
        assert_eq!(tanh.infer(&cx, &[&shape]).unwrap(), shape);
        assert!(matches!(tanh.channels(), ChannelRule::Preserve));
    }
}
