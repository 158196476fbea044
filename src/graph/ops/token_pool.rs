//! `token_pool`: x [N, L, H] and its attention mask [N, L] to [N, ceil(L / factor), H], each output
//! token the mean of `factor` adjacent input tokens, padding left out (a window of padding only
//! gives zeros). Device Tuning's sequence halving at the device-cloud cut; `mask_pool` pools the
//! mask the same way for the layers after it.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, DataType, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenPool {
    pub factor: usize,
}

/// `x` padded with zeros along axis 1 to a multiple of `factor` and folded to [N, L', factor, ...].
pub(super) fn windows(x: &Tensor, factor: usize) -> Tensor {
    let k = factor as i64;
    let size = x.size();
    let len = size[1];
    let padded_len = (len + k - 1) / k * k;
    let x = if padded_len > len {
        let mut pad_shape = size.clone();
        pad_shape[1] = padded_len - len;
        Tensor::cat(&[x.shallow_clone(), Tensor::zeros(&pad_shape, (x.kind(), x.device()))], 1)
    } else {
        x.shallow_clone()
    };
    let mut folded = vec![size[0], padded_len / k, k];
    folded.extend_from_slice(&size[2..]);
    x.reshape(&folded)
}

/// ONNX: `x` padded along axis 1 to a multiple of `factor` and reshaped to [N, -1, factor, rest..].
pub(super) fn export_windows(cx: &mut ExportCx, x: &str, factor: usize, rest: &[i64]) -> Result<String> {
    let k = factor as i64;
    let rank = 2 + rest.len();
    let shape = cx.op("Shape", &[x], vec![]);
    let one = cx.graph.int_scalar("one", 1)?;
    let len = cx.op("Gather", &[&shape, &one], vec![Attr::Int("axis", 0)]);
    let (k_minus_1, k_value) = (cx.graph.int_scalar("k_minus_1", k - 1)?, cx.graph.int_scalar("k", k)?);
    let windows = cx.op("Add", &[&len, &k_minus_1], vec![]);
    let windows = cx.op("Div", &[&windows, &k_value], vec![]);
    let padded = cx.op("Mul", &[&windows, &k_value], vec![]);
    let pad = cx.op("Sub", &[&padded, &len], vec![]);
    let pad = cx.graph.unsqueeze(cx.node, &pad, &[0])?;
    // pads: every axis's start, then every axis's end; only axis 1's end is non-zero.
    let before = cx.graph.ints("pads_before", &vec![0; rank + 1])?;
    let after = cx.graph.ints("pads_after", &vec![0; rank - 2])?;
    let pads = cx.op("Concat", &[&before, &pad, &after], vec![Attr::Int("axis", 0)]);
    let x = cx.op("Pad", &[x, &pads], vec![]);
    let mut folded = vec![0, -1, k];
    folded.extend_from_slice(rest);
    let folded = cx.graph.ints("windows_shape", &folded)?;
    Ok(cx.op("Reshape", &[&x, &folded], vec![]))
}

impl OpDef for TokenPool {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn validate(&self, node: &str) -> Result<()> {
        if self.factor == 0 {
            bail!("graph node '{node}' has a pooling factor of 0");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match (inputs[0].as_slice(), inputs[1].as_slice()) {
            ([len, h], [mask_len]) if len == mask_len => Ok(vec![len.div_ceil(self.factor), *h]),
            (x, m) => bail!(
                "node '{}' needs a sequence [L, H] and its mask [L], gets {x:?} and {m:?}",
                cx.node
            ),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let (x, mask) = (args[0], args[1]);
        let weights = windows(&mask.ne(0).to_kind(x.kind()), self.factor).unsqueeze(-1);
        let sums = (windows(x, self.factor) * &weights).sum_dim_intlist(2, false, x.kind());
        Ok(sums / weights.sum_dim_intlist(2, false, x.kind()).clamp_min(1.0))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let hidden = cx.input_shapes[0][1] as i64;
        let zero = cx.graph.int_scalar("zero", 0)?;
        let pad = cx.op("Equal", &[args[1], &zero], vec![]);
        let keep = cx.op("Not", &[&pad], vec![]);
        let weights = cx.op("Cast", &[&keep], vec![Attr::Int("to", DataType::Float as i64)]);
        let weights = export_windows(cx, &weights, self.factor, &[])?;
        let weights = cx.graph.unsqueeze(cx.node, &weights, &[-1])?;
        let x = export_windows(cx, args[0], self.factor, &[hidden])?;
        let weighted = cx.op("Mul", &[&x, &weights], vec![]);
        let sum = cx.graph.reduce(cx.node, "ReduceSum", &weighted, &[2], false)?;
        let count = cx.graph.reduce(cx.node, "ReduceSum", &weights, &[2], false)?;
        let floor = cx.graph.float_scalar("one_f", 1.0)?;
        let count = cx.op("Max", &[&count, &floor], vec![]);
        Ok(cx.op("Div", &[&sum, &count], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "token pooling",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::eval_alone;

    /// Five tokens (1, 2, 3, 4, 100) with the last masked, pooled by 2: (1.5, 3.5, 0) - the last
    /// window holds padding only. The mask pools to (1, 1, 0).
    #[test]
    fn by_hand() {
        let x = Tensor::from_slice(&[1f32, 2., 3., 4., 100.]).view([1, 5, 1]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0]).view([1, 5]);
        let y = eval_alone(&TokenPool { factor: 2 }, &[&x, &mask]).unwrap();
        assert_eq!(y.size(), vec![1, 3, 1]);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![1.5, 3.5, 0.0]);
        let m = eval_alone(&super::super::MaskPool { factor: 2 }, &[&mask]).unwrap();
        assert_eq!(Vec::<i64>::try_from(m.flatten(0, -1)).unwrap(), vec![1, 1, 0]);
        // Three tokens with one masked in the middle window: the mean of the valid one.
        let x = Tensor::from_slice(&[1f32, 2., 7., 9.]).view([1, 4, 1]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0]).view([1, 4]);
        let y = eval_alone(&TokenPool { factor: 4 }, &[&x, &mask]).unwrap();
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![10.0 / 3.0]);
    }
}
