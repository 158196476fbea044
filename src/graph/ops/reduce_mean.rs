//! `reduce_mean`: the mean over some per-sample axes, kept as size 1 or dropped (an SE block's
//! squeeze keeps them: [C, H, W] -> [C, 1, 1]).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceMean {
    /// Per-sample axes, increasing (the batch is not counted).
    pub axes: Vec<usize>,
    pub keep_dims: bool,
}

impl OpDef for ReduceMean {
    fn validate(&self, node: &str) -> Result<()> {
        if self.axes.is_empty() || self.axes.windows(2).any(|w| w[0] >= w[1]) {
            bail!("graph node '{node}' averages over axes {:?}: give them increasing, at least one", self.axes);
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let s = inputs[0];
        if self.axes.iter().any(|&a| a >= s.len()) {
            bail!("node '{}' averages over axes {:?} of {:?}", cx.node, self.axes, s);
        }
        Ok(s.iter()
            .enumerate()
            .filter_map(|(d, &n)| match self.axes.contains(&d) {
                true => self.keep_dims.then_some(1),
                false => Some(n),
            })
            .collect())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64 + 1).collect();
        Ok(args[0].mean_dim(axes.as_slice(), self.keep_dims, None))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64 + 1).collect();
        cx.graph.reduce("mean", "ReduceMean", args[0], &axes, self.keep_dims)
    }
    fn channels(&self) -> ChannelRule<'_> {
        if self.axes.contains(&0) {
            ChannelRule::Mix { why: "averages over channels" }
        } else {
            ChannelRule::Preserve
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeeze_keeps_channels() {
        let x = Tensor::from_slice(&[1.0f32, 3.0, 10.0, 20.0]).view([1, 2, 1, 2]);
        let op = ReduceMean { axes: vec![1, 2], keep_dims: true };
        let y = super::super::eval_alone(&op, &[&x]).unwrap();
        assert_eq!(y.size(), [1, 2, 1, 1]);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), [2.0, 15.0]);
        let names = ["x".to_string()];
        let cx = ShapeCx { node: "r", input_names: &names, input: &[] };
        assert_eq!(op.infer(&cx, &[&vec![2, 5, 7]]).unwrap(), vec![2, 1, 1]);
        let dropped = ReduceMean { axes: vec![1, 2], keep_dims: false };
        assert_eq!(dropped.infer(&cx, &[&vec![2, 5, 7]]).unwrap(), vec![2]);
    }
}
