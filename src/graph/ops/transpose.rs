//! `transpose`: the per-sample axes in another order (the batch stays first): attention's heads
//! split out, ConvNeXt's NCHW <-> NHWC.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    /// Output axis i is input axis perm[i] (per sample).
    pub perm: Vec<usize>,
}

impl OpDef for Transpose {
    fn validate(&self, node: &str) -> Result<()> {
        let mut seen = self.perm.clone();
        seen.sort_unstable();
        if seen != (0..self.perm.len()).collect::<Vec<_>>() {
            bail!("graph node '{node}' permutes axes {:?}, not a permutation", self.perm);
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let s = inputs[0];
        if s.len() != self.perm.len() {
            bail!("node '{}' permutes {} axes of {:?}", cx.node, self.perm.len(), s);
        }
        Ok(self.perm.iter().map(|&p| s[p]).collect())
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].permute(full_perm(&self.perm).as_slice()))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        Ok(cx.op("Transpose", args, vec![Attr::Ints("perm", full_perm(&self.perm))]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Permute { perm: &self.perm }
    }
}

/// The permutation with the batch axis first.
fn full_perm(perm: &[usize]) -> Vec<i64> {
    std::iter::once(0).chain(perm.iter().map(|&p| p as i64 + 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_axes() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([1, 2, 3]);
        let op = Transpose { perm: vec![1, 0] };
        let y = super::super::eval_alone(&op, &[&x]).unwrap();
        assert_eq!(y.size(), [1, 3, 2]);
        assert_eq!(Vec::<f32>::try_from(y.contiguous().flatten(0, -1)).unwrap(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert!(Transpose { perm: vec![0, 0] }.validate("t").is_err());
    }
}
