//! `embeddings`: token ids [N, L] (i64) to vectors [N, L, H], as BERT-family encoders embed them:
//! the word row of each id, plus its position's row, plus token type 0's row (cut feeds no token
//! type ids: every token is type 0, as in single-sentence inputs). Positions count 0, 1, ... (BERT),
//! or, with `padding_idx` (RoBERTa), from `padding_idx + 1` over the non-padding tokens, padding
//! tokens taking `padding_idx` itself.

use crate::graph::onnx::{Attr, DataType, ExportCx};
use super::{ChannelRule, EvalCx, OpDef, ParamSlot, Shape, ShapeCx};
use crate::graph::ParamRole;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub word: String,
    pub position: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    pub vocab: usize,
    pub positions: usize,
    /// Rows of the token type table (2 in BERT, 1 in RoBERTa); row 0 is used.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub types: usize,
    pub hidden: usize,
    /// RoBERTa's position numbering from the padding id (see the module comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding_idx: Option<i64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Embeddings {
    /// Position ids [N, L] for ids [N, L].
    fn position_ids(&self, ids: &Tensor) -> Tensor {
        let len = ids.size()[1];
        match self.padding_idx {
            None => Tensor::arange(len, (Kind::Int64, ids.device())).unsqueeze(0).expand_as(ids),
            Some(pad) => {
                let real = ids.ne(pad).to_kind(Kind::Int64);
                real.cumsum(1, Kind::Int64) * &real + pad
            }
        }
    }
}

impl OpDef for Embeddings {
    fn params(&self) -> Vec<ParamSlot> {
        let mut out = vec![
            (self.word.clone(), ParamRole::Embedding, vec![self.vocab, self.hidden]),
            (self.position.clone(), ParamRole::Embedding, vec![self.positions, self.hidden]),
        ];
        if let Some(t) = &self.token_type {
            out.push((t.clone(), ParamRole::Embedding, vec![self.types, self.hidden]));
        }
        out
    }
    fn validate(&self, node: &str) -> Result<()> {
        if self.token_type.is_some() && self.types == 0 {
            bail!("graph node '{node}' has a token type table of 0 rows");
        }
        Ok(())
    }
    fn infer(&self, cx: &ShapeCx, inputs: &[&Shape]) -> Result<Shape> {
        match inputs[0].as_slice() {
            [len] => {
                let first = self.padding_idx.map_or(0, |p| p as usize + 1);
                if first + len > self.positions {
                    bail!(
                        "node '{}': {len} tokens need {} position rows, the table has {}",
                        cx.node,
                        first + len,
                        self.positions
                    );
                }
                Ok(vec![*len, self.hidden])
            }
            other => bail!("node '{}' needs token ids [L], gets {other:?}", cx.node),
        }
    }
    fn eval(&self, cx: &EvalCx, args: &[&Tensor]) -> Result<Tensor> {
        let ids = args[0];
        let (low, high) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if ids.numel() > 0 && (low < 0 || high >= self.vocab as i64) {
            bail!(
                "node '{}': token id {} is outside the vocabulary of {}",
                cx.node,
                if low < 0 { low } else { high },
                self.vocab
            );
        }
        let word = Tensor::f_embedding(cx.param(&self.word)?, ids, -1, false, false)?;
        let position = Tensor::f_embedding(cx.param(&self.position)?, &self.position_ids(ids), -1, false, false)?;
        let mut sum = word + position;
        if let Some(t) = &self.token_type {
            sum += cx.param(t)?.get(0);
        }
        Ok(sum)
    }
    fn export(&self, cx: &mut ExportCx, args: &[&str]) -> Result<String> {
        let ids = args[0];
        let word = cx.weight(&self.word)?;
        let mut sum = cx.op("Gather", &[&word, ids], vec![Attr::Int("axis", 0)]);
        let positions = match self.padding_idx {
            // Rows 0..L of the table, [L, H], broadcast over the batch.
            None if cx.dynamic_seq => {
                let table = cx.weight(&self.position)?;
                let shape = cx.op("Shape", &[ids], vec![]);
                let (one, two) = (cx.graph.ints("one", &[1])?, cx.graph.ints("two", &[2])?);
                let len = cx.op("Slice", &[&shape, &one, &two], vec![]);
                let zero = cx.graph.ints("zero1", &[0])?;
                cx.op("Slice", &[&table, &zero, &len, &zero], vec![])
            }
            None => {
                let len = cx.input_shapes[0][0] as i64;
                let rows = self.position.clone() + &format!(".first{len}");
                let t = cx.param(&self.position)?.narrow(0, 0, len);
                cx.constant(&rows, &t)?
            }
            // RoBERTa: positions count the real tokens from padding_idx + 1; padding stays at it.
            Some(pad) => {
                let table = cx.weight(&self.position)?;
                let pad_id = cx.graph.int_scalar("pad", pad)?;
                let is_pad = cx.op("Equal", &[ids, &pad_id], vec![]);
                let real = cx.op("Not", &[&is_pad], vec![]);
                let real = cx.op("Cast", &[&real], vec![Attr::Int("to", DataType::Int64 as i64)]);
                let axis = cx.graph.int_scalar("one_scalar", 1)?;
                let count = cx.op("CumSum", &[&real, &axis], vec![]);
                let counted = cx.op("Mul", &[&count, &real], vec![]);
                let index = cx.op("Add", &[&counted, &pad_id], vec![]);
                cx.op("Gather", &[&table, &index], vec![Attr::Int("axis", 0)])
            }
        };
        sum = cx.op("Add", &[&sum, &positions], vec![]);
        if let Some(t) = &self.token_type {
            let row = cx.param(t)?.get(0);
            let row = cx.constant(&format!("{t}.row0"), &row)?;
            sum = cx.op("Add", &[&sum, &row], vec![]);
        }
        Ok(sum)
    }
    fn channels(&self) -> ChannelRule<'_> {
        ChannelRule::Mix {
            why: "token embeddings",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Params;
    use tch::Device;

    fn op(padding_idx: Option<i64>) -> Embeddings {
        Embeddings {
            word: "w".into(),
            position: "p".into(),
            token_type: Some("t".into()),
            vocab: 4,
            positions: 6,
            types: 2,
            hidden: 2,
            padding_idx,
        }
    }

    fn params() -> Params {
        let t = |v: &[f32], rows: i64| Tensor::from_slice(v).view([rows, 2]);
        Params::from([
            // Word row i = (i, 10 i); position row j = (100 j, 0); type 0 = (0.5, 0.5).
            ("w".to_string(), t(&[0., 0., 1., 10., 2., 20., 3., 30.], 4)),
            ("p".to_string(), t(&[0., 0., 100., 0., 200., 0., 300., 0., 400., 0., 500., 0.], 6)),
            ("t".to_string(), t(&[0.5, 0.5, 9., 9.], 2)),
        ])
    }

    fn run(op: &Embeddings, ids: &[i64]) -> Result<Vec<f32>> {
        let ids = Tensor::from_slice(ids).view([1, -1]);
        let y = super::super::eval_with_params(op, &params(), &[&ids])?;
        Ok(Vec::<f32>::try_from(y.flatten(0, -1).to_device(Device::Cpu)).unwrap())
    }

    #[test]
    fn bert_positions_count_from_zero() {
        // ids 3, 1, 2 at positions 0, 1, 2.
        let y = run(&op(None), &[3, 1, 2]).unwrap();
        assert_eq!(y, vec![3.5, 30.5, 101.5, 10.5, 202.5, 20.5]);
    }

    #[test]
    fn roberta_positions_skip_padding() {
        // Padding id 1: ids 3, 2, 1 take positions 2, 3 and 1 (the padding row).
        let y = run(&op(Some(1)), &[3, 2, 1]).unwrap();
        assert_eq!(y, vec![203.5, 30.5, 302.5, 20.5, 101.5, 10.5]);
    }

    #[test]
    fn refuses_ids_outside_the_vocabulary_and_too_many_tokens() {
        let err = run(&op(None), &[0, 4]).unwrap_err().to_string();
        assert!(err.contains("token id 4 is outside the vocabulary of 4"), "{err}");
        let cx = ShapeCx {
            node: "emb",
            input_names: &[],
            input: &[],
        };
        let err = op(Some(1)).infer(&cx, &[&vec![5]]).unwrap_err().to_string();
        assert!(err.contains("5 tokens need 7 position rows, the table has 6"), "{err}");
    }
}
