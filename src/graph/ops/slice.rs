//! `slice`: a range of one per-sample axis (`Split`'s parts, `Slice`, a `Gather` of one index
//! followed by a reshape that drops the axis).

use super::{ChannelRule, EvalCx, Op, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// The per-sample axis (the batch is not counted).
    pub axis: usize,
    pub start: usize,
    pub end: usize,
}

impl OpDef for Slice {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let s = inputs[0];
        if self.axis >= s.len() || self.start >= self.end || self.end > s[self.axis] {
            bail!(
                "node '{}' slices {}..{} of axis {} of {:?}",
                cx.node,
                self.start,
                self.end,
                self.axis,
                s
            );
        }
        let mut out = s.clone();
        out[self.axis] = self.end - self.start;
        Ok(out)
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let len = (self.end - self.start) as i64;
        Ok(args[0].narrow(self.axis as i64 + 1, self.start as i64, len))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let starts = cx.graph.ints("slice_start", &[self.start as i64])?;
        let ends = cx.graph.ints("slice_end", &[self.end as i64])?;
        let axes = cx.graph.ints("slice_axis", &[self.axis as i64 + 1])?;
        Ok(cx.op("Slice", &[args[0], &starts, &ends, &axes], vec![]))
    }
    fn aliases_input(&self) -> bool {
        true
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Range {
            axis: self.axis,
            start: self.start,
            end: self.end,
        }
    }
    fn resliced(&self, start: usize, end: usize) -> Option<Op> {
        Some(Op::Slice(Slice { start, end, ..self.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_range() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 4]);
        let y = super::super::eval_alone(&Slice { axis: 0, start: 1, end: 3 }, &[&x]).unwrap();
        assert_eq!(Vec::<f32>::try_from(y.contiguous().flatten(0, -1)).unwrap(), [2.0, 3.0]);
    }
}
