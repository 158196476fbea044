//! `concat`: inputs joined along one per-sample axis (0: channels, as in YOLO's C2f blocks and
//! DeepLab's ASPP, DenseNet). Along another axis, channel k of every input is channel k of the output.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    /// The per-sample axis (the batch is not counted).
    pub axis: usize,
}

impl OpDef for Concat {
    fn arity(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let first = inputs[0];
        if self.axis >= first.len() {
            bail!("node '{}' concatenates along axis {} of {:?}", cx.node, self.axis, first);
        }
        let mut out = first.clone();
        for (i, s) in inputs.iter().enumerate().skip(1) {
            let same_elsewhere =
                s.len() == first.len() && s.iter().zip(first).enumerate().all(|(d, (a, b))| d == self.axis || a == b);
            if !same_elsewhere {
                bail!(
                    "node '{}' concatenates {:?} ('{}') and {:?} ('{}') along axis {}",
                    cx.node,
                    first,
                    cx.input_names[0],
                    s,
                    cx.input_names[i],
                    self.axis
                );
            }
            out[self.axis] += s[self.axis];
        }
        Ok(out)
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(Tensor::cat(args, self.axis as i64 + 1))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Concat", args, vec![Attr::Int("axis", self.axis as i64 + 1)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        if self.axis == 0 {
            ChannelRule::Join
        } else {
            ChannelRule::Tie
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_join_in_order() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 1, 1, 2]);
        let b = Tensor::from_slice(&[3.0f32, 4.0, 5.0, 6.0]).view([1, 2, 1, 2]);
        let op = Concat { axis: 0 };
        let y = super::super::eval_alone(&op, &[&a, &b]).unwrap();
        assert_eq!(y.size(), [1, 3, 1, 2]);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let names = ["a".to_string(), "b".to_string()];
        let cx = ShapeCx { node: "c", input_names: &names, input: &[] };
        assert_eq!(op.infer(&cx, &[&vec![1, 1, 2], &vec![2, 1, 2]]).unwrap(), vec![3, 1, 2]);
        assert!(op.infer(&cx, &[&vec![1, 1, 2], &vec![2, 2, 2]]).is_err());
    }
}
