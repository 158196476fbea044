//! `self_attention`: multi-head scaled dot-product self-attention with a padding mask, as in BERT:
//! inputs x [N, L, H] and mask [N, L] (1 for a token, 0 for padding); per head h, queries, keys and
//! values are x W^T + b over rows `h*d .. (h+1)*d` of their weights; scores q k^T / sqrt(d) skip
//! padded keys; the output [N, L, heads * d] is the heads' contexts side by side (the output
//! projection is a `linear` after it). Removing a head is removing its rows of the three weights:
//! for channel pruning it is a transform whose units are heads. A head whose rows are zero has
//! constant queries and keys, so it attends uniformly to constant values: it outputs its value bias.

use crate::graph::onnx::{Attr, DataType, ExportCx};
use super::{saturating_product, ChannelRule, EvalCx, Op, OpDef, ParamSlot, Shape, ShapeCx, Unit};
use crate::graph::{kernels, ParamRole};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfAttention {
    pub query: String,
    pub query_bias: String,
    pub key: String,
    pub key_bias: String,
    pub value: String,
    pub value_bias: String,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl SelfAttention {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

impl OpDef for SelfAttention {
    fn arity(&self) -> (usize, usize) {
        (2, 2)
    }
    fn params(&self) -> Vec<ParamSlot> {
        let (w, h) = (self.width(), self.hidden);
        let mut out = Vec::new();
        for (weight, bias) in [
            (&self.query, &self.query_bias),
            (&self.key, &self.key_bias),
            (&self.value, &self.value_bias),
        ] {
            out.push((weight.clone(), ParamRole::LinearWeight, vec![w, h]));
            out.push((bias.clone(), ParamRole::LinearBias, vec![w]));
        }
        out
    }
    fn validate(&self, node: &str) -> Result<()> {
        if self.head_dim == 0 {
            bail!("graph node '{node}' has attention heads of width 0");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match (inputs[0].as_slice(), inputs[1].as_slice()) {
            ([len, h], [mask_len]) if *h == self.hidden && mask_len == len => Ok(vec![*len, self.width()]),
            (x, m) => bail!(
                "node '{}' needs hidden states [L, {}] and a mask [L], gets {x:?} and {m:?}",
                cx.node,
                self.hidden
            ),
        }
    }
    fn macs(&self, inputs: &[&Shape], _output: &Shape) -> Option<u64> {
        let len = inputs[0][0];
        // Three projections, then scores and contexts: L x L x d per head each.
        let projections = saturating_product([3, len, self.hidden, self.width()].iter());
        let attention = saturating_product([2, len, len, self.width()].iter());
        Some(projections.saturating_add(attention))
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let (x, mask) = (args[0], args[1]);
        let size = x.size();
        let (n, len) = (size[0], size[1]);
        if self.heads == 0 {
            // A layer pruned to no heads: its output projection adds only its bias.
            return Ok(Tensor::zeros([n, len, 0], (x.kind(), x.device())));
        }
        let split = |w: &str, b: &str| -> Result<Tensor> {
            Ok(x.f_linear(cx.param(w)?, Some(cx.param(b)?))?
                .view([n, len, self.heads as i64, self.head_dim as i64])
                .transpose(1, 2))
        };
        let q = split(&self.query, &self.query_bias)?;
        let k = split(&self.key, &self.key_bias)?;
        let v = split(&self.value, &self.value_bias)?;
        // True where a key may be attended to: [N, 1, 1, L], broadcast over heads and queries.
        let keep = mask.ne(0).view([n, 1, 1, len]);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let context = kernels::attention(&q, &k, &v, &keep, scale)?;
        Ok(context
            .transpose(1, 2)
            .contiguous()
            .view([n, len, self.width() as i64])
            .to_kind(x.kind()))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let (x, mask) = (args[0], args[1]);
        if self.heads == 0 {
            // A layer pruned to no heads: [N, L, 0], so that its output projection adds its bias.
            let (zero, axis) = (cx.graph.ints("zero1", &[0])?, cx.graph.ints("two", &[2])?);
            return Ok(cx.op("Slice", &[x, &zero, &zero, &axis], vec![]));
        }
        // Additive key mask [N, 1, 1, L]: 0 where attended, -10000 at padding (exp underflows
        // to 0 in f32, as the interpreter's boolean mask gives), shared by every layer.
        let additive = cx.graph.memo(&format!("additive_mask:{mask}"), |g| {
            let zero = g.int_scalar("zero", 0)?;
            let pad = g.op("mask", "Equal", &[mask, &zero], vec![]);
            let pad = g.op("mask", "Cast", &[&pad], vec![Attr::Int("to", DataType::Float as i64)]);
            let big = g.float_scalar("mask_value", -10000.0)?;
            let scaled = g.op("mask", "Mul", &[&pad, &big], vec![]);
            g.unsqueeze("mask", &scaled, &[1, 2])
        })?;
        let (heads, d) = (self.heads as i64, self.head_dim as i64);
        let split_shape = cx.graph.ints("heads_shape", &[0, 0, heads, d])?;
        let mut project = |w: &str, b: &str, perm: Vec<i64>| -> Result<String> {
            let wt = cx.weight_t(w)?;
            let y = cx.op("MatMul", &[x, &wt], vec![]);
            let bias = cx.weight(b)?;
            let y = cx.op("Add", &[&y, &bias], vec![]);
            let y = cx.op("Reshape", &[&y, &split_shape], vec![]);
            Ok(cx.op("Transpose", &[&y], vec![Attr::Ints("perm", perm)]))
        };
        let q = project(&self.query, &self.query_bias, vec![0, 2, 1, 3])?;
        // Keys as [N, heads, d, L], ready for q k^T.
        let k = project(&self.key, &self.key_bias, vec![0, 2, 3, 1])?;
        let v = project(&self.value, &self.value_bias, vec![0, 2, 1, 3])?;
        let scores = cx.op("MatMul", &[&q, &k], vec![]);
        let scale = cx.graph.float_scalar("scale", 1.0 / (self.head_dim as f32).sqrt())?;
        let scores = cx.op("Mul", &[&scores, &scale], vec![]);
        let scores = cx.op("Add", &[&scores, &additive], vec![]);
        let probs = cx.op("Softmax", &[&scores], vec![Attr::Int("axis", -1)]);
        let context = cx.op("MatMul", &[&probs, &v], vec![]);
        let context = cx.op("Transpose", &[&context], vec![Attr::Ints("perm", vec![0, 2, 1, 3])]);
        let merged = cx.graph.ints("merged_shape", &[0, 0, heads * d])?;
        Ok(cx.op("Reshape", &[&context, &merged], vec![]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        let projections = [
            (&self.query, &self.query_bias),
            (&self.key, &self.key_bias),
            (&self.value, &self.value_bias),
        ];
        ChannelRule::Transform {
            weights: projections.map(|(w, b)| (w.as_str(), Some(b.as_str()))).to_vec(),
            constant: Some(&self.value_bias),
            outputs: self.width(),
            unit: Unit::Head { width: self.head_dim },
            fixes: None,
            padded: false,
            axis: 1,
        }
    }
    fn resized(&self, inputs: Option<usize>, outputs: Option<usize>) -> Option<Op> {
        Some(Op::SelfAttention(SelfAttention {
            hidden: inputs.unwrap_or(self.hidden),
            heads: outputs.map_or(self.heads, |o| o / self.head_dim),
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ops::Mode;
    use crate::graph::Params;
    use std::collections::BTreeMap;
    use tch::{Device, Kind};

    fn op() -> SelfAttention {
        SelfAttention {
            query: "q".into(),
            query_bias: "qb".into(),
            key: "k".into(),
            key_bias: "kb".into(),
            value: "v".into(),
            value_bias: "vb".into(),
            hidden: 2,
            heads: 2,
            head_dim: 1,
        }
    }

    fn eval(params: &Params, x: &Tensor, mask: &Tensor) -> Tensor {
        let inputs = BTreeMap::new();
        let cx = EvalCx {
            node: "att",
            params,
            inputs: &inputs,
            mode: Mode::Eval,
        };
        op().eval(&cx, &[x, mask]).unwrap()
    }

    fn identity_params() -> Params {
        let eye = Tensor::eye(2, (Kind::Float, Device::Cpu));
        let zero = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        ["q", "k", "v"]
            .iter()
            .flat_map(|w| [(w.to_string(), eye.copy()), (format!("{w}b"), zero.copy())])
            .collect()
    }

    /// Identity projections, heads of width 1: head 0 sees feature 0. Tokens a = (1, 0) and
    /// b = (2, 0): for query a, scores are 1*1 = 1 and 1*2 = 2, so its context is
    /// (e^1 * 1 + e^2 * 2) / (e^1 + e^2); head 1 sees zeros: uniform weights over zero values.
    #[test]
    fn by_hand() {
        let x = Tensor::from_slice(&[1f32, 0., 2., 0.]).view([1, 2, 2]);
        let mask = Tensor::from_slice(&[1i64, 1]).view([1, 2]);
        let y = Vec::<f32>::try_from(eval(&identity_params(), &x, &mask).flatten(0, -1)).unwrap();
        let (e1, e2, e4) = (1f64.exp(), 2f64.exp(), 4f64.exp());
        let want = [(e1 + 2. * e2) / (e1 + e2), 0., (e2 + 2. * e4) / (e2 + e4), 0.];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{y:?} vs {want:?}");
        }
    }

    /// Padding changes nothing for the real tokens: the same sentence alone and padded with two
    /// junk tokens (masked) gives the same outputs on its own positions.
    #[test]
    fn padding_equals_unpadded() {
        tch::manual_seed(1);
        let params: Params = ["q", "k", "v"]
            .iter()
            .flat_map(|w| {
                [
                    (w.to_string(), Tensor::randn([2, 2], (Kind::Float, Device::Cpu))),
                    (format!("{w}b"), Tensor::randn([2], (Kind::Float, Device::Cpu))),
                ]
            })
            .collect();
        let x = Tensor::randn([1, 3, 2], (Kind::Float, Device::Cpu));
        let alone = eval(&params, &x, &Tensor::ones([1, 3], (Kind::Int64, Device::Cpu)));
        let junk = Tensor::randn([1, 2, 2], (Kind::Float, Device::Cpu)) * 50.0;
        let padded_x = Tensor::cat(&[&x, &junk], 1);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0]).view([1, 5]);
        let padded = eval(&params, &padded_x, &mask).narrow(1, 0, 3);
        let diff = (&alone - &padded).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "padded and unpadded differ by {diff}");
    }
}
