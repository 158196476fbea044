//! `mask_bias`: an attention mask [L] (1 for a token, 0 for padding) as the additive bias
//! attention scores take, [1, 1, L]: 0 where the mask is set, `fill` (a large negative number)
//! where it is not. An imported text model's mask arithmetic (Hugging Face's, which builds the
//! same bias from indices over the whole batch) becomes this op (`onnx/import/index_math.rs`).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskBias {
    pub fill: f32,
}

impl OpDef for MaskBias {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].as_slice() {
            [len] => Ok(vec![1, 1, *len]),
            other => bail!("node '{}' reads a mask [L], gets {other:?}", cx.node),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let masked = args[0].eq(0);
        let bias = masked.zeros_like().to_kind(Kind::Float).masked_fill(&masked, f64::from(self.fill));
        Ok(bias.unsqueeze(1).unsqueeze(1))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let mask = cx.op("Cast", &[args[0]], vec![Attr::Int("to", 1)]);
        let zero = cx.graph.float_scalar("zero", 0.0)?;
        let fill = cx.graph.float_scalar("mask_fill", self.fill)?;
        let masked = cx.op("Equal", &[&mask, &zero], vec![]);
        let bias = cx.op("Where", &[&masked, &fill, &zero], vec![]);
        let axes = cx.graph.ints("axes12", &[1, 2])?;
        Ok(cx.op("Unsqueeze", &[&bias, &axes], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "an attention mask's bias",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_where_set_fill_where_not() {
        let op = MaskBias { fill: -1e9 };
        let mask = Tensor::from_slice(&[1i64, 1, 0, 1, 0, 0]).view([2, 3]);
        let y = super::super::eval_alone(&op, &[&mask]).unwrap();
        assert_eq!(y.size(), [2, 1, 1, 3]);
        assert_eq!(
            Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(),
            [0., 0., -1e9, 0., -1e9, -1e9]
        );
    }
}
