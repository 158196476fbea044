//! `matmul`: the product of two computed values over their last two axes, batched over the rest
//! (attention's q k^T and its weights times v).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use anyhow::{bail, Result};
use tch::Tensor;

pub struct MatMul;

impl OpDef for MatMul {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (a, b) = (inputs[0], inputs[1]);
        let fits = a.len() == b.len() && a.len() >= 2 && {
            let n = a.len();
            a[..n - 2] == b[..n - 2] && a[n - 1] == b[n - 2]
        };
        if !fits {
            bail!(
                "node '{}' multiplies {:?} ('{}') by {:?} ('{}')",
                cx.node,
                a,
                cx.input_names[0],
                b,
                cx.input_names[1]
            );
        }
        let mut out = a.clone();
        *out.last_mut().expect("rank 2 or more") = b[b.len() - 1];
        Ok(out)
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].matmul(args[1]))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("MatMul", args, vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Product
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_hand() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 2]);
        let b = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]).view([1, 2, 2]);
        let y = Vec::<f32>::try_from(super::super::eval_alone(&MatMul, &[&a, &b]).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(y, [3.0, 2.0, 7.0, 4.0]);
    }
}
