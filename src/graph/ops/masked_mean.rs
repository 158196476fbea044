//! `masked_mean`: the mean of x [N, L, H] over the positions where mask [N, L] is non-zero, [N, H]
//! (sentence-transformers' mean pooling; the count is clamped to 1e-9 as there).

use crate::graph::onnx::{ExportCx, Attr, DataType};
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use tch::Tensor;

#[derive(Clone, Copy, Debug)]
pub struct MaskedMean;

impl OpDef for MaskedMean {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match (inputs[0].as_slice(), inputs[1].as_slice()) {
            ([len, h], [mask_len]) if len == mask_len => Ok(vec![*h]),
            (x, m) => bail!(
                "node '{}' needs a sequence [L, H] and a mask [L], gets {x:?} and {m:?}",
                cx.node
            ),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let (x, mask) = (args[0], args[1]);
        let weights = mask.ne(0).to_kind(x.kind()).unsqueeze(-1);
        let count = weights.sum_dim_intlist(1, false, x.kind()).clamp_min(1e-9);
        Ok((x * &weights).sum_dim_intlist(1, false, x.kind()) / count)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // weights [N, L, 1] = (mask != 0); sum(x * weights) / max(sum(weights), 1e-9).
        let zero = cx.graph.int_scalar("zero", 0)?;
        let pad = cx.op("Equal", &[args[1], &zero], vec![]);
        let keep = cx.op("Not", &[&pad], vec![]);
        let weights = cx.op("Cast", &[&keep], vec![Attr::Int("to", DataType::Float as i64)]);
        let weights = cx.graph.unsqueeze(cx.node, &weights, &[-1])?;
        let weighted = cx.op("Mul", &[args[0], &weights], vec![]);
        let sum = cx.graph.reduce(cx.node, "ReduceSum", &weighted, &[1], false)?;
        let count = cx.graph.reduce(cx.node, "ReduceSum", &weights, &[1], false)?;
        let floor = cx.graph.float_scalar("tiny", 1e-9)?;
        let count = cx.op("Max", &[&count, &floor], vec![]);
        Ok(cx.op("Div", &[&sum, &count], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "sequence pooling",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::eval_alone;

    /// Rows (1, 2), (3, 4), (100, 100) with the last masked: mean (2, 3).
    #[test]
    fn by_hand() {
        let x = Tensor::from_slice(&[1f32, 2., 3., 4., 100., 100.]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        let y = Vec::<f32>::try_from(eval_alone(&MaskedMean, &[&x, &mask]).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(y, vec![2., 3.]);
    }
}
