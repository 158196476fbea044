//! `avg_pool`: the mean of each `factor x factor` window of a feature map [C, H, W], stride
//! `factor`, [C, ceil(H / factor), ceil(W / factor)]: a window cut by the border averages the
//! pixels it holds (a split model's spatial compression; `resize` restores the size cloud side).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvgPool {
    pub factor: usize,
}

impl OpDef for AvgPool {
    fn validate(&self, node: &str) -> Result<()> {
        if self.factor == 0 {
            bail!("graph node '{node}' has a pooling factor of 0");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let (c, h, w) = cx.spatial(inputs[0])?;
        Ok(vec![c, h.div_ceil(self.factor), w.div_ceil(self.factor)])
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let k = self.factor as i64;
        Ok(args[0].avg_pool2d([k, k], [k, k], [0, 0], true, false, None::<i64>))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let k = self.factor as i64;
        Ok(cx.op(
            "AveragePool",
            args,
            vec![
                Attr::Ints("kernel_shape", vec![k, k]),
                Attr::Ints("strides", vec![k, k]),
                Attr::Int("ceil_mode", 1),
                Attr::Int("count_include_pad", 0),
            ],
        ))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Preserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::eval_alone;

    /// A 2x4 map pooled 2x2: the means of (0,1,4,5) and (2,3,6,7). A 3x3 map: the border windows
    /// average the pixels they hold.
    #[test]
    fn by_hand() {
        let x = Tensor::arange(8, (tch::Kind::Float, tch::Device::Cpu)).view([1, 1, 2, 4]);
        let y = eval_alone(&AvgPool { factor: 2 }, &[&x]).unwrap();
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![2.5, 4.5]);
        let x = Tensor::arange(9, (tch::Kind::Float, tch::Device::Cpu)).view([1, 1, 3, 3]);
        let y = eval_alone(&AvgPool { factor: 2 }, &[&x]).unwrap();
        // (0,1,3,4) -> 2, (2,5) -> 3.5, (6,7) -> 6.5, (8) -> 8.
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![2.0, 3.5, 6.5, 8.0]);
    }
}
