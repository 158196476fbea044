//! `conv_transpose2d`: a 2-d transposed convolution of [N, C, H, W], weight [C, O / groups, kh,
//! kw], optional bias [O] (learned upsampling: YOLO-seg's mask prototypes, decoder heads).

use super::{pair, ChannelRule, EvalCx, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvTranspose2d {
    pub weight: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl OpDef for ConvTranspose2d {
    fn params(&self) -> Vec<ParamSlot> {
        let g = self.groups.max(1);
        let mut out = vec![(
            self.weight.clone(),
            ParamRole::ConvWeight,
            vec![self.in_channels, self.out_channels / g, self.kernel[0], self.kernel[1]],
        )];
        if let Some(b) = &self.bias {
            out.push((b.clone(), ParamRole::ConvBias, vec![self.out_channels]));
        }
        out
    }
    fn validate(&self, node: &str) -> Result<()> {
        let g = self.groups;
        let zero = self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0);
        if g == 0 || zero || !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            bail!("graph node '{node}' has a transposed convolution with a zero size or uneven groups");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = cx.spatial(inputs[0])?;
        if c != self.in_channels {
            bail!("node '{}' expects {} channels, gets {c}", cx.node, self.in_channels);
        }
        let size = |n: usize, d: usize| -> Result<usize> {
            let grown = (n - 1) * self.stride[d] + self.dilation[d] * (self.kernel[d] - 1) + self.output_padding[d] + 1;
            grown
                .checked_sub(2 * self.padding[d])
                .filter(|&s| s > 0)
                .ok_or_else(|| anyhow::anyhow!("node '{}' pads away its whole output", cx.node))
        };
        Ok(vec![self.out_channels, size(h, 0)?, size(w, 1)?])
    }
    fn macs(&self, inputs: &[&Shape], _output: &Shape) -> Option<u64> {
        let s = inputs[0];
        let per_input = (self.out_channels / self.groups.max(1) * self.kernel[0] * self.kernel[1]) as u64;
        Some(super::saturating_product(s.iter()).saturating_mul(per_input))
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let weight = cx.param(&self.weight)?;
        let bias = cx.opt_param(&self.bias)?;
        Ok(args[0].conv_transpose2d(
            weight,
            bias,
            pair(self.stride),
            pair(self.padding),
            pair(self.output_padding),
            self.groups as i64,
            pair(self.dilation),
        ))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let w = cx.weight(&self.weight)?;
        let mut inputs = vec![args[0], w.as_str()];
        let b = self.bias.as_ref().map(|b| cx.weight(b)).transpose()?;
        if let Some(b) = &b {
            inputs.push(b);
        }
        let ints = |v: [usize; 2]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let [ph, pw] = self.padding.map(|p| p as i64);
        let attrs = vec![
            Attr::Ints("kernel_shape", ints(self.kernel)),
            Attr::Ints("strides", ints(self.stride)),
            Attr::Ints("pads", vec![ph, pw, ph, pw]),
            Attr::Ints("output_padding", ints(self.output_padding)),
            Attr::Ints("dilations", ints(self.dilation)),
            Attr::Int("group", self.groups as i64),
        ];
        Ok(cx.op("ConvTranspose", &inputs, attrs))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "a transposed convolution (its channel rule is not written yet)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_the_size() {
        // One channel, 2x2 kernel of ones, stride 2: each input value fills its own 2x2 block.
        let op = ConvTranspose2d {
            weight: "w".into(),
            bias: None,
            in_channels: 1,
            out_channels: 1,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let params = crate::graph::Params::from([("w".to_string(), Tensor::ones([1, 1, 2, 2], tch::kind::FLOAT_CPU))]);
        let inputs = std::collections::BTreeMap::new();
        let cx = EvalCx { node: "t", params: &params, inputs: &inputs, mode: super::super::Mode::Eval };
        let x = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 1, 1, 2]);
        let y = op.eval(&cx, &[&x]).unwrap();
        assert_eq!(y.size(), [1, 1, 2, 4]);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        let names = ["x".to_string()];
        let scx = ShapeCx { node: "t", input_names: &names, input: &[] };
        assert_eq!(op.infer(&scx, &[&vec![1, 3, 5]]).unwrap(), vec![1, 6, 10]);
    }
}
