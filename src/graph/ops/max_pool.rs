//! `max_pool`: 2-d max pooling of [N, C, H, W], with PyTorch's ceil mode.

use crate::graph::onnx::{ExportCx, Attr};
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
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // ceil_mode as explicit end padding (what PyTorch's exporter does), which every runtime
        // reads the same way: the end pads grow until the floor of the window count is the
        // interpreter's.
        let shape = &cx.output_shape;
        let input = &cx.input_shapes[0];
        let mut ends = [self.padding[0] as i64, self.padding[1] as i64];
        for d in 0..2 {
            let (size, out) = (input[d + 1] as i64, shape[d + 1] as i64);
            let (k, s, p) = (self.kernel[d] as i64, self.stride[d] as i64, self.padding[d] as i64);
            let needed = (out - 1) * s + k - (size + 2 * p);
            if needed > 0 {
                ends[d] += needed;
            }
        }
        let (p0, p1) = (self.padding[0] as i64, self.padding[1] as i64);
        Ok(cx.op(
            "MaxPool",
            args,
            vec![
                Attr::Ints("kernel_shape", self.kernel.iter().map(|&v| v as i64).collect()),
                Attr::Ints("strides", self.stride.iter().map(|&v| v as i64).collect()),
                Attr::Ints("pads", vec![p0, p1, ends[0], ends[1]]),
            ],
        ))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}
