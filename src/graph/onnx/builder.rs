//! What an op's `export` writes into: ONNX nodes, initializers and constants, with the opset's
//! spelling of ops whose form changed between opsets.

use super::proto::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};
use crate::graph::Params;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// An attribute of a node.
pub enum Attr {
    Int(&'static str, i64),
    Ints(&'static str, Vec<i64>),
    Float(&'static str, f32),
    Str(&'static str, &'static str),
}

impl Attr {
    pub fn proto(self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(n, v) => {
                a.name = n.into();
                a.r#type = AttributeType::Int as i32;
                a.i = v;
            }
            Attr::Ints(n, v) => {
                a.name = n.into();
                a.r#type = AttributeType::Ints as i32;
                a.ints = v;
            }
            Attr::Float(n, v) => {
                a.name = n.into();
                a.r#type = AttributeType::Float as i32;
                a.f = v;
            }
            Attr::Str(n, v) => {
                a.name = n.into();
                a.r#type = AttributeType::String as i32;
                a.s = v.as_bytes().to_vec();
            }
        }
        a
    }
}

/// The graph being written.
#[derive(Default)]
pub struct GraphBuilder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Weights stored in f16 (each followed by a Cast to f32).
    pub half: bool,
    pub opset: i64,
    /// Values already written, by key (a weight's name, a shared mask).
    memo: HashMap<String, String>,
    counter: usize,
}

/// One node's view of the builder: its name, its parameters and its inputs' per-sample shapes.
pub struct ExportCx<'a> {
    pub node: &'a str,
    pub params: &'a Params,
    /// Per-sample shapes of the node's inputs and output at the export's sizes.
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shape: Vec<usize>,
    /// Whether the sequence length (text) is left dynamic.
    pub dynamic_seq: bool,
    pub graph: &'a mut GraphBuilder,
}

/// A tensor's values as little-endian bytes in the ONNX type the export stores.
fn raw(t: &Tensor, data_type: DataType) -> Result<Vec<u8>> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous().flatten(0, -1);
    Ok(match data_type {
        DataType::Float => Vec::<f32>::try_from(t.to_kind(Kind::Float))?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Float16 => Vec::<i16>::try_from(t.to_kind(Kind::Half).view_dtype(Kind::Int16))?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Int64 => Vec::<i64>::try_from(t.to_kind(Kind::Int64))?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Uint8 => Vec::<u8>::try_from(t.to_kind(Kind::Uint8))?,
        DataType::Int8 => Vec::<i8>::try_from(t.to_kind(Kind::Int8))?
            .iter()
            .map(|&v| v as u8)
            .collect(),
        other => bail!("no ONNX storage for {other:?}"),
    })
}

impl GraphBuilder {
    pub fn new(opset: i64, half: bool) -> GraphBuilder {
        GraphBuilder {
            opset,
            half,
            ..Default::default()
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}:{}", self.counter)
    }

    fn add_initializer(&mut self, name: String, t: &Tensor, data_type: DataType) -> Result<String> {
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: t.size(),
            data_type: data_type as i32,
            raw_data: raw(t, data_type)?.into(),
            ..Default::default()
        });
        Ok(name)
    }

    /// A float tensor as a value: stored in f32, or in f16 and cast back (weights in half
    /// precision, arithmetic in f32).
    pub fn float(&mut self, name: &str, t: &Tensor) -> Result<String> {
        if let Some(v) = self.memo.get(name) {
            return Ok(v.clone());
        }
        let value = if self.half {
            let stored = self.add_initializer(format!("{name}.f16"), t, DataType::Float16)?;
            let out = name.to_string();
            self.emit(
                "Cast",
                &[&stored],
                &[&out],
                vec![Attr::Int("to", DataType::Float as i64)],
            );
            out
        } else {
            self.add_initializer(name.to_string(), t, DataType::Float)?
        };
        self.memo.insert(name.to_string(), value.clone());
        Ok(value)
    }

    /// A constant of `data_type` written once per `key`.
    fn constant(&mut self, key: String, hint: &str, t: &Tensor, data_type: DataType) -> Result<String> {
        if let Some(v) = self.memo.get(&key) {
            return Ok(v.clone());
        }
        let name = self.fresh(hint);
        let value = self.add_initializer(name, t, data_type)?;
        self.memo.insert(key, value.clone());
        Ok(value)
    }

    /// An int64 constant (shapes, axes, indices).
    pub fn ints(&mut self, hint: &str, values: &[i64]) -> Result<String> {
        self.constant(
            format!("ints:{values:?}"),
            hint,
            &Tensor::from_slice(values),
            DataType::Int64,
        )
    }

    /// An int64 scalar constant (rank 0).
    pub fn int_scalar(&mut self, hint: &str, value: i64) -> Result<String> {
        self.constant(format!("int:{value}"), hint, &Tensor::from(value), DataType::Int64)
    }

    /// A uint8 (or, `signed`, int8) scalar constant: a quantization's zero point.
    pub fn byte_scalar(&mut self, hint: &str, value: i64, signed: bool) -> Result<String> {
        let (data_type, kind) = match signed {
            true => (DataType::Int8, Kind::Int8),
            false => (DataType::Uint8, Kind::Uint8),
        };
        let t = Tensor::from(value).to_kind(kind);
        self.constant(format!("byte:{signed}:{value}"), hint, &t, data_type)
    }

    /// An f32 scalar constant (rank 0), always in f32.
    pub fn float_scalar(&mut self, hint: &str, value: f32) -> Result<String> {
        self.constant(
            format!("float:{}", value.to_bits()),
            hint,
            &Tensor::from(value),
            DataType::Float,
        )
    }

    pub fn emit(&mut self, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attr>) {
        let name = format!("{}#{}", outputs.first().copied().unwrap_or(op_type), self.nodes.len());
        self.nodes.push(NodeProto {
            name,
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    /// A value computed once and shared (an attention mask read by every layer).
    pub fn memo(&mut self, key: &str, make: impl FnOnce(&mut GraphBuilder) -> Result<String>) -> Result<String> {
        if let Some(v) = self.memo.get(key) {
            return Ok(v.clone());
        }
        let v = make(self)?;
        self.memo.insert(key.to_string(), v.clone());
        Ok(v)
    }

    /// One node with one fresh output, named after `hint`.
    pub fn op(&mut self, hint: &str, op_type: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.fresh(&format!("{hint}/{op_type}"));
        self.emit(op_type, inputs, &[&out], attrs);
        out
    }

    /// ReduceSum / ReduceMean over `axes`: axes are an attribute before opset 18 (ReduceSum: 13)
    /// and an input from then on.
    pub fn reduce(&mut self, hint: &str, op_type: &str, x: &str, axes: &[i64], keepdims: bool) -> Result<String> {
        let input_from = if op_type == "ReduceSum" { 13 } else { 18 };
        let keep = Attr::Int("keepdims", i64::from(keepdims));
        Ok(if self.opset >= input_from {
            let a = self.ints("axes", axes)?;
            self.op(hint, op_type, &[x, &a], vec![keep])
        } else {
            self.op(hint, op_type, &[x], vec![Attr::Ints("axes", axes.to_vec()), keep])
        })
    }

    pub fn unsqueeze(&mut self, hint: &str, x: &str, axes: &[i64]) -> Result<String> {
        let a = self.ints("axes", axes)?;
        Ok(self.op(hint, "Unsqueeze", &[x, &a], vec![]))
    }
}

impl ExportCx<'_> {
    pub fn param(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .ok_or_else(|| anyhow!("tensor '{name}' is missing"))
    }
    /// A parameter as a value (an initializer, written once).
    pub fn weight(&mut self, name: &str) -> Result<String> {
        let t = self.param(name)?.shallow_clone();
        self.graph.float(name, &t)
    }
    /// A parameter transposed ([out, in] -> [in, out], for MatMul).
    pub fn weight_t(&mut self, name: &str) -> Result<String> {
        let t = self.param(name)?.t_copy();
        self.graph.float(&format!("{name}.T"), &t)
    }
    /// A tensor the export computes (a folded or sliced parameter).
    pub fn constant(&mut self, name: &str, t: &Tensor) -> Result<String> {
        self.graph.float(name, t)
    }
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        self.graph.op(self.node, op_type, inputs, attrs)
    }
    /// Refuses an opset older than `min`, naming the node.
    pub fn require_opset(&self, min: i64, what: &str) -> Result<()> {
        if self.graph.opset < min {
            crate::usage_bail!(
                "node '{}': {what} needs opset {min} or newer (asked: --opset {})",
                self.node,
                self.graph.opset
            );
        }
        Ok(())
    }
}
