//! `linear`: y = x W^T + b over the last axis, for inputs of any rank ([N, F], [N, L, F], ...).
//! Weight [O, F], optional bias [O].

use crate::graph::onnx::{ExportCx, Attr};
use super::{saturating_product, ChannelRule, EvalCx, Op, OpDef, ParamSlot, Shape, ShapeCx, Unit};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub weight: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    pub in_features: usize,
    pub out_features: usize,
}

impl OpDef for Linear {
    fn params(&self) -> Vec<ParamSlot> {
        let mut out = vec![(
            self.weight.clone(),
            ParamRole::LinearWeight,
            vec![self.out_features, self.in_features],
        )];
        if let Some(b) = &self.bias {
            out.push((b.clone(), ParamRole::LinearBias, vec![self.out_features]));
        }
        out
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        let s = inputs[0];
        match s.split_last() {
            Some((&features, rest)) if features == self.in_features => {
                let mut out = rest.to_vec();
                out.push(self.out_features);
                Ok(out)
            }
            _ => bail!(
                "node '{}' expects {} input features, gets {:?}",
                cx.node,
                self.in_features,
                s
            ),
        }
    }
    fn macs(&self, inputs: &[&Shape], _output: &Shape) -> Option<u64> {
        let rows = &inputs[0][..inputs[0].len() - 1];
        Some(saturating_product(rows.iter().chain(&[self.in_features, self.out_features])))
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        Ok(args[0].linear(cx.param(&self.weight)?, cx.opt_param(&self.bias)?))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        if cx.input_shapes[0].len() == 1 {
            // [N, in]: Gemm keeps the [out, in] weight.
            let w = cx.weight(&self.weight)?;
            let mut inputs = vec![args[0].to_string(), w];
            if let Some(b) = &self.bias {
                inputs.push(cx.weight(b)?);
            }
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            return Ok(cx.op("Gemm", &refs, vec![Attr::Int("transB", 1)]));
        }
        // [N, L, in]: MatMul with the [in, out] weight, then the bias.
        let w = cx.weight_t(&self.weight)?;
        let y = cx.op("MatMul", &[args[0], &w], vec![]);
        Ok(match &self.bias {
            Some(b) => {
                let b = cx.weight(b)?;
                cx.op("Add", &[&y, &b], vec![])
            }
            None => y,
        })
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Transform {
            weights: vec![(&self.weight, self.bias.as_deref())],
            constant: self.bias.as_deref(),
            outputs: self.out_features,
            unit: Unit::Neuron,
            fixes: None,
            padded: false,
            axis: 1,
        }
    }
    fn resized(&self, inputs: Option<usize>, outputs: Option<usize>) -> Option<Op> {
        Some(Op::Linear(Linear {
            in_features: inputs.unwrap_or(self.in_features),
            out_features: outputs.unwrap_or(self.out_features),
            ..self.clone()
        }))
    }
    fn with_bias(&self, bias: String) -> Option<Op> {
        Some(Op::Linear(Linear {
            bias: Some(bias),
            ..self.clone()
        }))
    }
}
