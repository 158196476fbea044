//! `embedding`: rows of a table looked up by integer ids (an imported text model's word
//! embeddings: ONNX `Gather` of a weight by the token ids). Ids [L] give [L, dim].

use super::{ChannelRule, EvalCx, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::onnx::{Attr, ExportCx};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub table: String,
    pub rows: usize,
    pub dim: usize,
}

impl OpDef for Embedding {
    fn params(&self) -> Vec<ParamSlot> {
        vec![(self.table.clone(), ParamRole::Embedding, vec![self.rows, self.dim])]
    }
    fn infer(&self, _cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].iter().copied().chain([self.dim]).collect())
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let ids = args[0].to_kind(Kind::Int64);
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= self.rows as i64 {
            bail!(
                "node '{}': ids from {lo} to {hi}, outside the table's {} rows",
                cx.node,
                self.rows
            );
        }
        Ok(Tensor::embedding(cx.param(&self.table)?, &ids, -1, false, false))
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let table = cx.weight(&self.table)?;
        Ok(cx.op("Gather", &[&table, args[0]], vec![Attr::Int("axis", 0)]))
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "an embedding table (its width is the model's hidden size)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn looks_up_rows_and_refuses_ids_outside_the_table() {
        let op = Embedding {
            table: "t".into(),
            rows: 3,
            dim: 2,
        };
        let params = BTreeMap::from([(
            "t".to_string(),
            Tensor::from_slice(&[0f32, 1., 10., 11., 20., 21.]).view([3, 2]),
        )]);
        let ids = Tensor::from_slice(&[2i64, 0, 2]).view([1, 3]);
        let y = super::super::eval_with_params(&op, &params, &[&ids]).unwrap();
        assert_eq!(y.size(), [1, 3, 2]);
        assert_eq!(Vec::<f32>::try_from(y.flatten(0, -1)).unwrap(), [20., 21., 0., 1., 20., 21.]);
        let bad = Tensor::from_slice(&[3i64]).view([1, 1]);
        let err = super::super::eval_with_params(&op, &params, &[&bad]).unwrap_err().to_string();
        assert!(err.contains("outside the table's 3 rows"), "{err}");
    }
}
