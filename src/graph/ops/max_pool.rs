//! `max_pool`: 2-d max pooling of [N, C, H, W], with PyTorch's ceil mode.

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::{arith::conv_out, kernels};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
}

impl MaxPool {
    /// The window as the kernels take it.
    pub fn window(&self) -> kernels::PoolWindow {
        kernels::PoolWindow {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            ceil_mode: self.ceil_mode,
        }
    }

    /// Output length along dimension `dim` for an input of `size`.
    pub fn out_len(&self, dim: usize, size: usize) -> Result<usize> {
        conv_out(size, self.kernel[dim], self.stride[dim], self.padding[dim], 1, self.ceil_mode)
    }
}

impl OpDef for MaxPool {
    fn validate(&self, node: &str) -> Result<()> {
        if [self.kernel, self.stride].iter().flatten().any(|&v| v == 0) {
            bail!("graph node '{node}' has a zero kernel size, stride or dilation");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (channels, h, w) = cx.spatial(inputs[0])?;
        Ok(vec![channels, self.out_len(0, h)?, self.out_len(1, w)?])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(kernels::max_pool2d(args[0], &self.window()))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
