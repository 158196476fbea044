//! `wire`: what the tensor at a device-cloud cut looks like after it crossed the link. `f32` sends
//! it as it is; `f16` rounds it to half precision; `int8` sends each sample as signed bytes with
//! one scale per sample (`tensor`) or per sample and channel (`channel`: axis 1 of a feature map,
//! the hidden axis of a sequence), symmetric, scale = max |x| / 127. The op is the rounding the
//! cloud sees; `crate::split::wire` writes and reads the bytes with the same [`quantize_int8`].
//! Training passes gradients straight through the rounding.

use super::{ChannelRule, EvalCx, Mode, OpDef, Shape, ShapeCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    F32,
    F16,
    Int8,
}

impl WireFormat {
    pub fn parse(text: &str) -> Result<WireFormat> {
        Ok(match text {
            "f32" => WireFormat::F32,
            "f16" => WireFormat::F16,
            "int8" => WireFormat::Int8,
            other => crate::usage_bail!("--wire '{other}': expected f32, f16 or int8"),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::F32 => "f32",
            WireFormat::F16 => "f16",
            WireFormat::Int8 => "int8",
        }
    }
}

/// Where int8 scales vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleGranularity {
    Tensor,
    Channel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wire {
    pub format: WireFormat,
    #[serde(default = "tensor_scale")]
    pub scale: ScaleGranularity,
}

fn tensor_scale() -> ScaleGranularity {
    ScaleGranularity::Tensor
}

/// The axis int8 channel scales run along: 1 for [N, C, H, W], the last for [N, L, H].
pub fn channel_axis(rank: usize) -> i64 {
    if rank == 4 {
        1
    } else {
        rank as i64 - 1
    }
}

/// Symmetric int8 per sample (and channel): (values in -127..=127 as i8, f32 scales shaped to
/// broadcast against `x`). A sample (or channel) of zeros gets scale 1.
pub fn quantize_int8(x: &Tensor, scale: ScaleGranularity) -> (Tensor, Tensor) {
    let x = x.to_kind(Kind::Float);
    let rank = x.dim();
    let keep: Vec<i64> = match scale {
        ScaleGranularity::Tensor => vec![0],
        ScaleGranularity::Channel => vec![0, channel_axis(rank)],
    };
    let reduce: Vec<i64> = (0..rank as i64).filter(|d| !keep.contains(d)).collect();
    let amax = x.abs().amax(reduce.as_slice(), true);
    let scales = amax.where_scalarother(&amax.gt(0.0), 127.0) / 127.0;
    let q = (&x / &scales).round().clamp(-127.0, 127.0).to_kind(Kind::Int8);
    (q, scales)
}

/// The f32 values the cloud reads back.
pub fn dequantize_int8(q: &Tensor, scales: &Tensor) -> Tensor {
    q.to_kind(Kind::Float) * scales
}

impl Wire {
    /// `x` as it arrives, without autograd.
    pub fn received(&self, x: &Tensor) -> Tensor {
        match self.format {
            WireFormat::F32 => x.shallow_clone(),
            WireFormat::F16 => x.to_kind(Kind::Half).to_kind(x.kind()),
            WireFormat::Int8 => {
                let (q, s) = quantize_int8(x, self.scale);
                dequantize_int8(&q, &s).to_kind(x.kind())
            }
        }
    }
}

impl OpDef for Wire {
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        if inputs[0].is_empty() {
            bail!("node '{}' needs a tensor with at least one axis per sample", cx.node);
        }
        Ok(inputs[0].clone())
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let x = args[0];
        let received = tch::no_grad(|| self.received(x));
        Ok(match cx.mode {
            Mode::Eval => received,
            // Straight through: the rounding's value, the identity's gradient.
            _ => x + (received - x).detach(),
        })
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per tensor: max |x| = 2.54 gives scale 0.02; 1.0 rounds to 50 steps, -2.54 to -127.
    /// Per channel, a zero channel keeps scale 1 and stays zero.
    #[test]
    fn int8_by_hand() {
        let x = Tensor::from_slice(&[1.0f32, -2.54, 0.0, 0.0]).view([1, 2, 2]);
        let (q, s) = quantize_int8(&x, ScaleGranularity::Tensor);
        assert_eq!(Vec::<i8>::try_from(q.flatten(0, -1)).unwrap(), vec![50, -127, 0, 0]);
        assert!((f32::try_from(s.flatten(0, -1).get(0)).unwrap() - 0.02).abs() < 1e-7);
        // [1, L=2, H=2]: channels are the last axis, (1, 0) and (-2.54, 0).
        let (q, s) = quantize_int8(&x, ScaleGranularity::Channel);
        assert_eq!(Vec::<i8>::try_from(q.flatten(0, -1)).unwrap(), vec![127, -127, 0, 0]);
        let s = Vec::<f32>::try_from(s.flatten(0, -1)).unwrap();
        assert!((s[0] - 1.0 / 127.0).abs() < 1e-9 && (s[1] - 0.02).abs() < 1e-7, "{s:?}");
    }
}
