//! `reshape`: the same values in another per-sample shape (the batch stays first).

use super::{ChannelRule, EvalCx, Op, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    /// The per-sample shape.
    pub shape: Vec<usize>,
}

impl OpDef for Reshape {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (have, want) = (inputs[0].iter().product::<usize>(), self.shape.iter().product::<usize>());
        if have != want {
            bail!("node '{}' reshapes {:?} ({have} values) to {:?}", cx.node, inputs[0], self.shape);
        }
        Ok(self.shape.clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let shape: Vec<i64> = std::iter::once(-1).chain(self.shape.iter().map(|&d| d as i64)).collect();
        Ok(args[0].reshape(shape.as_slice()))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let shape: Vec<i64> = std::iter::once(-1).chain(self.shape.iter().map(|&d| d as i64)).collect();
        let target = cx.graph.ints("reshape", &shape)?;
        Ok(cx.op("Reshape", &[args[0], &target], vec![]))
    }
    fn aliases_input(&self) -> bool {
        true
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Reshape
    }
    fn reshaped(&self, axis: usize, size: usize) -> Option<Op> {
        let mut shape = self.shape.clone();
        let at = shape.len().checked_sub(axis)?;
        shape[at] = size;
        Some(Op::Reshape(Reshape { shape }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_batch() {
        let x = Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).view([2, 6]);
        let y = super::super::eval_alone(&Reshape { shape: vec![2, 3] }, &[&x]).unwrap();
        assert_eq!(y.size(), [2, 2, 3]);
        let names = ["x".to_string()];
        let cx = ShapeCx { node: "r", input_names: &names, input: &[] };
        assert!(Reshape { shape: vec![5] }.infer(&cx, &[&vec![6]]).is_err());
    }
}
