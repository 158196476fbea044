//! `mul`: element-wise product of two inputs, broadcasting sizes of 1 (an SE block's [C, 1, 1]
//! gate times its [C, H, W] input; SiLU as x * sigmoid(x)). Channel k of each factor scales
//! channel k of the other, so pruning ties them.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Mul;

/// The broadcast of two per-sample shapes of one rank (each size equal, or 1).
pub fn broadcast(cx: &ShapeCx, a: &Shape, b: &Shape) -> Result<Shape> {
    let fits = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || *x == 1 || *y == 1);
    if !fits {
        bail!(
            "node '{}' combines shapes {:?} ('{}') and {:?} ('{}'), which do not broadcast",
            cx.node,
            a,
            cx.input_names[0],
            b,
            cx.input_names[1]
        );
    }
    Ok(a.iter().zip(b).map(|(x, y)| *x.max(y)).collect())
}

impl OpDef for Mul {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        broadcast(cx, inputs[0], inputs[1])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0] * args[1])
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Mul", args, vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Tie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_scales_each_channel() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 1, 2]);
        let gate = Tensor::from_slice(&[10.0f32, 0.5]).view([1, 2, 1, 1]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&Mul, &[&x, &gate]).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(y, [10.0, 20.0, 1.5, 2.0]);
        let names = ["x".to_string(), "g".to_string()];
        let cx = ShapeCx { node: "m", input_names: &names, input: &[] };
        assert_eq!(broadcast(&cx, &vec![2, 1, 2], &vec![2, 1, 1]).unwrap(), vec![2, 1, 2]);
        assert!(broadcast(&cx, &vec![2, 3, 3], &vec![3, 1, 1]).is_err());
    }
}
