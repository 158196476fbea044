//! `batch_norm`: per-channel normalisation of [N, C, ...] with running statistics at inference and
//! batch statistics while training (unless the mode freezes them).

use crate::graph::onnx::{ExportCx, Attr};
use super::{ChannelRule, EvalCx, Mode, Op, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    pub channels: usize,
    pub weight: Option<String>,
    pub bias: Option<String>,
    pub running_mean: String,
    pub running_var: String,
    /// PyTorch's int64 counter; carried so reference state dicts round-trip, unused by inference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_batches_tracked: Option<String>,
    pub eps: f64,
}

impl OpDef for BatchNorm {
    fn params(&self) -> Vec<ParamSlot> {
        let c = self.channels;
        let mut out = Vec::new();
        if let Some(w) = &self.weight {
            out.push((w.clone(), ParamRole::BnWeight, vec![c]));
        }
        if let Some(b) = &self.bias {
            out.push((b.clone(), ParamRole::BnBias, vec![c]));
        }
        out.push((self.running_mean.clone(), ParamRole::BnRunningMean, vec![c]));
        out.push((self.running_var.clone(), ParamRole::BnRunningVar, vec![c]));
        if let Some(t) = &self.num_batches_tracked {
            out.push((t.clone(), ParamRole::BnBatchesTracked, vec![]));
        }
        out
    }
    fn validate(&self, node: &str) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!("graph node '{node}' has a batch-norm eps of {}, not a finite number >= 0", self.eps);
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (channels, _, _) = cx.spatial(inputs[0])?;
        if channels != self.channels {
            bail!(
                "node '{}' expects {} channels, gets {channels}",
                cx.node,
                self.channels
            );
        }
        Ok(inputs[0].clone())
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(Tensor::batch_norm(
            args[0],
            cx.opt_param(&self.weight)?,
            cx.opt_param(&self.bias)?,
            Some(cx.param(&self.running_mean)?),
            Some(cx.param(&self.running_var)?),
            cx.mode == Mode::Train,
            0.1,
            self.eps,
            true,
        ))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // Only a batch norm no convolution precedes reaches here (the export folds the others).
        let ones = Tensor::ones([self.channels as i64], (tch::Kind::Float, tch::Device::Cpu));
        let zeros = Tensor::zeros([self.channels as i64], (tch::Kind::Float, tch::Device::Cpu));
        let scale = match &self.weight {
            Some(w) => cx.weight(w)?,
            None => cx.constant(&format!("{}.scale", cx.node), &ones)?,
        };
        let bias = match &self.bias {
            Some(b) => cx.weight(b)?,
            None => cx.constant(&format!("{}.shift", cx.node), &zeros)?,
        };
        let (mean, var) = (cx.weight(&self.running_mean)?, cx.weight(&self.running_var)?);
        Ok(cx.op(
            "BatchNormalization",
            &[args[0], &scale, &bias, &mean, &var],
            vec![Attr::Float("epsilon", self.eps as f32)],
        ))
    }
    fn channels(&self) -> ChannelRule<'_> {
        let mut tensors: Vec<&str> = [&self.weight, &self.bias].into_iter().flatten().map(String::as_str).collect();
        tensors.push(&self.running_mean);
        tensors.push(&self.running_var);
        ChannelRule::PerChannel {
            tensors,
            zeroed: None,
            block: 1,
        }
    }
    fn resized(&self, inputs: Option<usize>, outputs: Option<usize>) -> Option<Op> {
        Some(Op::BatchNorm(BatchNorm {
            channels: inputs.or(outputs).unwrap_or(self.channels),
            ..self.clone()
        }))
    }
}
