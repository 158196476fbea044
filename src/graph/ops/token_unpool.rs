//! `token_unpool`: pooled tokens [N, L', H] back to one per input token, [N, L, H] with L the
//! length of the mask [N, L] it reads, each pooled token repeated `factor` times (a token task's
//! head after `token_pool`).

use super::{ChannelRule, EvalCx, OpDef, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenUnpool {
    pub factor: usize,
}

impl OpDef for TokenUnpool {
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
            ([pooled, h], [len]) if *pooled == len.div_ceil(self.factor) => Ok(vec![*len, *h]),
            (x, m) => bail!(
                "node '{}' needs tokens pooled by {} [ceil(L/{}), H] and a mask [L], gets {x:?} and {m:?}",
                cx.node,
                self.factor,
                self.factor
            ),
        }
    }
    fn eval(&self, _cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let len = args[1].size()[1];
        let repeated = args[0].repeat_interleave_self_int(self.factor as i64, 1, None::<i64>);
        Ok(repeated.narrow(1, 0, len))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        // [N, L', H] -> [N, L', 1, H] -> expanded to [N, L', k, H] -> [N, L' k, H] -> first L.
        let (k, hidden) = (self.factor as i64, cx.input_shapes[0][1] as i64);
        let x = cx.graph.unsqueeze(cx.node, args[0], &[2])?;
        let shape = cx.op("Shape", &[&x], vec![]);
        let (zero, one, two) = (cx.graph.ints("zero1", &[0])?, cx.graph.ints("one1", &[1])?, cx.graph.ints("two1", &[2])?);
        let lead = cx.op("Slice", &[&shape, &zero, &two], vec![]);
        let tail = cx.graph.ints("k_hidden", &[k, hidden])?;
        let target = cx.op("Concat", &[&lead, &tail], vec![Attr::Int("axis", 0)]);
        let x = cx.op("Expand", &[&x, &target], vec![]);
        let merged = cx.graph.ints("merged_tokens", &[0, -1, hidden])?;
        let x = cx.op("Reshape", &[&x, &merged], vec![]);
        let mask_shape = cx.op("Shape", &[args[1]], vec![]);
        let len = cx.op("Slice", &[&mask_shape, &one, &two], vec![]);
        Ok(cx.op("Slice", &[&x, &zero, &len, &one], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "token unpooling",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::eval_alone;

    /// Pooled tokens (1.5, 3.5, 0) for a 5-token mask: 1.5, 1.5, 3.5, 3.5, 0.
    #[test]
    fn by_hand() {
        let x = Tensor::from_slice(&[1.5f32, 3.5, 0.]).view([1, 3, 1]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0]).view([1, 5]);
        let y = eval_alone(&TokenUnpool { factor: 2 }, &[&x, &mask]).unwrap();
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), vec![1.5, 1.5, 3.5, 3.5, 0.0]);
    }
}
