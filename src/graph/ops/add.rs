//! `add`: element-wise sum of two or more inputs of one shape (residual additions, summed head
//! branches); two summands may broadcast sizes of 1. Channel k of every summand lands in channel k of the sum, so pruning ties them.

use crate::graph::onnx::ExportCx;
use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Add;

impl OpDef for Add {
    fn arity(&self) -> (usize, usize) {
        (2, usize::MAX)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        if inputs.len() == 2 {
            // Two summands broadcast sizes of 1, as ONNX's Add does.
            return super::mul::broadcast(cx, inputs[0], inputs[1]);
        }
        let first = inputs[0];
        for (i, s) in inputs.iter().enumerate().skip(1) {
            if *s != first {
                bail!(
                    "node '{}' adds shapes {:?} ('{}') and {:?} ('{}')",
                    cx.node,
                    first,
                    cx.input_names[0],
                    s,
                    cx.input_names[i]
                );
            }
        }
        Ok(first.clone())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let mut sum = args[0] + args[1];
        for extra in &args[2..] {
            sum += *extra;
        }
        Ok(sum)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(if args.len() == 2 {
            cx.op("Add", args, vec![])
        } else {
            cx.op("Sum", args, vec![])
        })
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Tie
    }
}
