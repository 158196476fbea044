//! `sub`: element-wise difference of two inputs, broadcasting sizes of 1 (as `mul`).

use super::mul::broadcast;
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::Result;
use tch::Tensor;

pub struct Sub;

impl OpDef for Sub {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        broadcast(cx, inputs[0], inputs[1])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0] - args[1])
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Sub", args, vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Tie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_hand() {
        let a = Tensor::from_slice(&[6.0f32, 9.0]).view([1, 2]);
        let b = Tensor::from_slice(&[3.0f32]).view([1, 1]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&Sub, &[&a, &b]).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(y, [3.0, 6.0]);
    }
}
