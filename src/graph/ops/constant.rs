//! `constant`: a tensor of the model's, the same for every sample, repeated over the batch of its
//! one input (which it reads for the batch size only). Imported models use it for what exporters
//! write as constants next to computed values: position embeddings, class tokens, layer scales,
//! literal scalars.

use super::{ChannelRule, EvalCx, Op, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::onnx::ExportCx;
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constant {
    /// The tensor, stored with a leading batch dimension of 1.
    pub tensor: String,
    /// Its per-sample shape (the stored shape without the leading 1).
    pub shape: Vec<usize>,
    /// Whether fine-tuning trains it (an initializer of the original model) or keeps it (a
    /// literal constant).
    pub trained: bool,
}

impl OpDef for Constant {
    fn params(&self) -> Vec<ParamSlot> {
        let role = if self.trained { ParamRole::Tensor } else { ParamRole::Constant };
        let shape = std::iter::once(1).chain(self.shape.iter().copied()).collect();
        vec![(self.tensor.clone(), role, shape)]
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        if inputs.is_empty() {
            bail!("node '{}' needs an input to take its batch size from", cx.node);
        }
        Ok(self.shape.clone())
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let t = cx.param(&self.tensor)?;
        let mut size = t.size();
        size[0] = args[0].size()[0];
        Ok(t.expand(size.as_slice(), false))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let value = cx.weight(&self.tensor)?;
        let shape = cx.op("Shape", &[args[0]], vec![]);
        let (zero, one) = (cx.graph.ints("zero1", &[0])?, cx.graph.ints("one1", &[1])?);
        let batch = cx.op("Slice", &[&shape, &zero, &one], vec![]);
        let dims: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let rest = cx.graph.ints("constant_shape", &dims)?;
        let full = cx.op("Concat", &[&batch, &rest], vec![crate::graph::onnx::Attr::Int("axis", 0)]);
        Ok(cx.op("Expand", &[&value, &full], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Constant {
            scalar: self.shape.iter().all(|&d| d == 1),
        }
    }
    fn reshaped(&self, axis: usize, size: usize) -> Option<Op> {
        let mut shape = self.shape.clone();
        let at = shape.len().checked_sub(axis)?;
        shape[at] = size;
        Some(Op::Constant(Constant { shape, ..self.clone() }))
    }
}
