//! `position_ids`: RoBERTa's positions from token ids [L]: real tokens (ids other than
//! `padding_idx`) count up from `padding_idx + 1`, padding stays at `padding_idx`. An imported
//! RoBERTa's index arithmetic on its ids becomes this op (`onnx/import/index_math.rs`).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::proto::tensor_proto::DataType;
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionIds {
    pub padding_idx: i64,
}

impl PositionIds {
    /// The positions of ids [N, L].
    pub fn of(ids: &Tensor, padding_idx: i64) -> Tensor {
        let real = ids.ne(padding_idx).to_kind(Kind::Int64);
        real.cumsum(1, Kind::Int64) * &real + padding_idx
    }
}

impl OpDef for PositionIds {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].as_slice() {
            [len] => Ok(vec![*len]),
            other => bail!("node '{}' reads token ids [L], gets {other:?}", cx.node),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(PositionIds::of(args[0], self.padding_idx))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let pad = cx.graph.int_scalar("pad", self.padding_idx)?;
        let is_pad = cx.op("Equal", &[args[0], &pad], vec![]);
        let real = cx.op("Not", &[&is_pad], vec![]);
        let real = cx.op("Cast", &[&real], vec![Attr::Int("to", DataType::Int64 as i64)]);
        let axis = cx.graph.int_scalar("one_scalar", 1)?;
        let count = cx.op("CumSum", &[&real, &axis], vec![]);
        let counted = cx.op("Mul", &[&count, &real], vec![]);
        Ok(cx.op("Add", &[&counted, &pad], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix { why: "token positions" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_tokens_count_from_the_padding_id() {
        let ids = Tensor::from_slice(&[0i64, 7, 9, 1, 1, 0, 1, 5, 1, 6]).view([2, 5]);
        let y = super::super::eval_alone(&PositionIds { padding_idx: 1 }, &[&ids]).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(y.flatten(0, -1)).unwrap(),
            [2, 3, 4, 1, 1, 2, 1, 3, 1, 4]
        );
    }
}
