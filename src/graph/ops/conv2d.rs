//! `conv2d`: a 2-d convolution of [N, C, H, W], weight [O, C / groups, kh, kw], optional bias [O].

use crate::graph::onnx::{ExportCx, Attr};
use super::{saturating_product, pair, ChannelRule, EvalCx, Op, OpDef, ParamSlot, Shape, ShapeCx, Unit};
use crate::graph::{arith::conv_out, kernels, ParamRole};
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    pub weight: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    /// A ReLU fused in by `passes::fuse_conv_relu` (in memory, for inference; files never hold it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub relu: bool,
    /// The kernel taps that read more than padding, recorded by `passes::slice_dead_taps` for one
    /// input size (in memory; files never hold it).
    #[serde(skip)]
    pub live_taps: Option<LiveTaps>,
}

/// At input size `at` ([H, W]), only taps `first .. first + count` along each dimension read the
/// input; the others read only padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveTaps {
    pub at: [i64; 2],
    pub first: [i64; 2],
    pub count: [i64; 2],
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Conv2d {
    /// One filter per channel (channel k in makes channel k out): channels prune through it.
    pub fn depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Grouped with as many outputs as inputs (depthwise included): group g's channels in make
    /// group g's channels out, so channels go a group at a time, in and out together.
    pub fn per_group(&self) -> bool {
        self.groups > 1 && self.in_channels == self.out_channels
    }

    /// The window as the kernels take it.
    pub fn window(&self) -> kernels::ConvWindow {
        kernels::ConvWindow {
            kernel: pair(self.kernel),
            stride: pair(self.stride),
            padding: pair(self.padding),
            dilation: pair(self.dilation),
            groups: self.groups as i64,
        }
    }

    /// The weight and window to run on an input of `[H, W]`: the live taps' slice of the weight (a
    /// view) when they were recorded for that size, else the whole kernel.
    fn sliced(&self, weight: &Tensor, hw: [i64; 2]) -> (Tensor, kernels::ConvWindow) {
        let mut window = self.window();
        match &self.live_taps {
            Some(t) if t.at == hw => {
                let mut weight = weight.shallow_clone();
                for dim in 0..2 {
                    if t.count[dim] < window.kernel[dim] {
                        weight = weight.narrow(2 + dim as i64, t.first[dim], t.count[dim]);
                        window.padding[dim] -= t.first[dim] * window.dilation[dim];
                        window.kernel[dim] = t.count[dim];
                    }
                }
                (weight, window)
            }
            _ => (weight.shallow_clone(), window),
        }
    }
}

impl OpDef for Conv2d {
    fn params(&self) -> Vec<ParamSlot> {
        let mut out = vec![(
            self.weight.clone(),
            ParamRole::ConvWeight,
            vec![
                self.out_channels,
                self.in_channels / self.groups.max(1),
                self.kernel[0],
                self.kernel[1],
            ],
        )];
        if let Some(b) = &self.bias {
            out.push((b.clone(), ParamRole::ConvBias, vec![self.out_channels]));
        }
        out
    }
    fn validate(&self, node: &str) -> Result<()> {
        // Shape inference divides by strides and subtracts one from kernel sizes.
        if [self.kernel, self.stride, self.dilation].iter().flatten().any(|&v| v == 0) {
            bail!("graph node '{node}' has a zero kernel size, stride or dilation");
        }
        if self.groups == 0
            || !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            bail!(
                "graph node '{node}' has {} groups, which do not divide its channels",
                self.groups
            );
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (channels, h, w) = cx.spatial(inputs[0])?;
        if channels != self.in_channels {
            bail!(
                "node '{}' expects {} input channels, gets {channels}",
                cx.node,
                self.in_channels
            );
        }
        let out = |dim: usize, size: usize| {
            conv_out(
                size,
                self.kernel[dim],
                self.stride[dim],
                self.padding[dim],
                self.dilation[dim],
                false,
            )
            .map_err(|e| anyhow!("node '{}': {e}", cx.node))
        };
        Ok(vec![self.out_channels, out(0, h)?, out(1, w)?])
    }
    fn macs(&self, _inputs: &[&Shape], output: &Shape) -> Option<u64> {
        // Saturating: a hostile header's sizes must not wrap into a small count.
        let per_output = [self.in_channels / self.groups, self.kernel[0], self.kernel[1]];
        Some(saturating_product(per_output.iter().chain(output)))
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let weight = cx.param(&self.weight)?;
        let bias = cx.opt_param(&self.bias)?;
        let size = args[0].size();
        let hw = [size[size.len() - 2], size[size.len() - 1]];
        let (weight, window) = self.sliced(weight, hw);
        if self.relu {
            if let Some(y) = kernels::conv2d_relu(args[0], &weight, bias, &window) {
                return Ok(y);
            }
            return Ok(kernels::conv2d(args[0], &weight, bias, &window).relu());
        }
        Ok(kernels::conv2d(args[0], &weight, bias, &window))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let w = cx.weight(&self.weight)?;
        let mut inputs = vec![args[0].to_string(), w];
        if let Some(b) = &self.bias {
            inputs.push(cx.weight(b)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let ints = |v: [usize; 2]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let (ph, pw) = (self.padding[0] as i64, self.padding[1] as i64);
        let y = cx.op(
            "Conv",
            &refs,
            vec![
                Attr::Ints("kernel_shape", ints(self.kernel)),
                Attr::Ints("strides", ints(self.stride)),
                Attr::Ints("pads", vec![ph, pw, ph, pw]),
                Attr::Ints("dilations", ints(self.dilation)),
                Attr::Int("group", self.groups as i64),
            ],
        );
        Ok(if self.relu { cx.op("Relu", &[&y], vec![]) } else { y })
    }
    fn channels(&self) -> ChannelRule<'_> {
        if self.per_group() {
            return ChannelRule::PerChannel {
                tensors: std::iter::once(self.weight.as_str()).chain(self.bias.as_deref()).collect(),
                zeroed: Some(&self.weight),
                block: self.in_channels / self.groups,
            };
        }
        ChannelRule::Transform {
            weights: vec![(&self.weight, self.bias.as_deref())],
            constant: self.bias.as_deref(),
            outputs: self.out_channels,
            unit: Unit::Channel,
            fixes: (self.groups != 1).then_some("grouped convolution"),
            padded: self.padding != [0, 0],
            axis: 3,
        }
    }
    fn resized(&self, inputs: Option<usize>, outputs: Option<usize>) -> Option<Op> {
        if self.per_group() {
            // Whole groups go: the group width stays.
            let block = self.in_channels / self.groups;
            let channels = inputs.or(outputs).unwrap_or(self.in_channels);
            return Some(Op::Conv2d(Conv2d {
                in_channels: channels,
                out_channels: channels,
                groups: channels / block,
                ..self.clone()
            }));
        }
        Some(Op::Conv2d(Conv2d {
            in_channels: inputs.unwrap_or(self.in_channels),
            out_channels: outputs.unwrap_or(self.out_channels),
            ..self.clone()
        }))
    }
    fn with_bias(&self, bias: String) -> Option<Op> {
        Some(Op::Conv2d(Conv2d {
            bias: Some(bias),
            ..self.clone()
        }))
    }
}
