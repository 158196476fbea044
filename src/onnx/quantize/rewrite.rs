//! The QDQ form of a plan: `QuantizeLinear` + `DequantizeLinear` after each int8 activation, int8
//! weights (symmetric, per output channel) and int32 biases behind `DequantizeLinear`, int8
//! embedding tables (per row). Runtimes fuse each DQ -> op -> Q group into an int8 kernel.

use super::plan::Plan;
use crate::graph::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::graph::onnx::{Attr, DataType};
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, HashMap};

/// uint8 activations: scale and zero point for the range [lo, hi] (which holds 0).
pub fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        return (1.0, 0);
    }
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

fn tensor(name: &str, data_type: DataType, dims: Vec<i64>, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: data_type as i32,
        dims,
        raw_data: raw_data.into(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<Attr>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs.into_iter().map(Attr::proto).collect(),
        ..Default::default()
    }
}

fn floats(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn raw_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Symmetric int8 per slice along `axis` of a 2-D or 4-D tensor: the codes and one scale per slice.
pub fn quantize_weight(values: &[f32], dims: &[i64], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut peak = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        peak[channel_of(i)] = peak[channel_of(i)].max(v.abs());
    }
    let scales: Vec<f32> = peak.iter().map(|&p| if p > 0.0 { p / 127.0 } else { 1.0 }).collect();
    let codes = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scales)
}

/// What the rewrite needs besides the plan: each activation's (scale, zero point) by the name
/// `QuantizeLinear` reads.
pub struct Rewrite<'a> {
    pub plan: &'a Plan,
    pub params: BTreeMap<String, (f32, u8)>,
}

impl Rewrite<'_> {
    /// The graph in QDQ form.
    pub fn apply(&self, graph: &GraphProto) -> Result<GraphProto> {
        let mut out = graph.clone();
        out.node.clear();
        let inits: HashMap<String, TensorProto> =
            graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let mut renamed: HashMap<String, String> = HashMap::new();
        // Readers of a quantized tensor read its DequantizeLinear. (An absorbed ReLU's reader is
        // the ReLU itself, which goes.)
        for a in &self.plan.activations {
            if a.output != a.source {
                renamed.insert(a.source.clone(), a.output.clone());
            }
        }
        let mut replaced: Vec<String> = Vec::new();
        // Activations that are graph inputs are quantized first.
        for input in &graph.input {
            self.emit_qdq(&input.name, &mut out)?;
        }
        for (i, n) in graph.node.iter().enumerate() {
            if self.plan.absorbed.contains(&i) {
                continue;
            }
            let mut n = n.clone();
            for x in n.input.iter_mut() {
                if let Some(r) = renamed.get(x.as_str()) {
                    *x = r.clone();
                }
            }
            if self.plan.weight_nodes.contains(&i) {
                self.int8_weights(&mut n, &inits, &mut out, &mut replaced)?;
            }
            let dequantize = match self.plan.tables.contains(&i) {
                true => Some(int8_table(&mut n, &inits, &mut out, &mut replaced)?),
                false => None,
            };
            let produced = n.output.clone();
            out.node.push(n);
            out.node.extend(dequantize);
            for o in &produced {
                self.emit_qdq(o, &mut out)?;
            }
        }
        // The f32 originals go; their integer codes, stored under the same names, stay.
        out.initializer
            .retain(|t| !(t.data_type == DataType::Float as i32 && replaced.contains(&t.name)));
        Ok(out)
    }

    /// QuantizeLinear + DequantizeLinear after `source`, when it is an int8 activation.
    fn emit_qdq(&self, source: &str, out: &mut GraphProto) -> Result<()> {
        let Some(a) = self.plan.activations.iter().find(|a| a.source == source) else {
            return Ok(());
        };
        let (scale, zero) = *self
            .params
            .get(&a.calibrate)
            .ok_or_else(|| anyhow!("int8: no calibrated range for '{}'", a.calibrate))?;
        let id = out.node.len();
        let (s, z, q) = (format!("s{id}"), format!("z{id}"), format!("q{id}"));
        out.initializer
            .push(tensor(&s, DataType::Float, vec![], raw_f32(&[scale])));
        out.initializer.push(tensor(&z, DataType::Uint8, vec![], vec![zero]));
        out.node.push(node("QuantizeLinear", &[source, &s, &z], &q, vec![]));
        out.node
            .push(node("DequantizeLinear", &[&q, &s, &z], &a.output, vec![]));
        Ok(())
    }

    /// The input activation's scale, for the bias.
    fn input_scale(&self, n: &NodeProto) -> Result<f32> {
        let a = self
            .plan
            .activations
            .iter()
            .find(|a| a.output == n.input[0] || a.source == n.input[0])
            .ok_or_else(|| anyhow!("int8: node '{}' reads '{}', which is not int8", n.name, n.input[0]))?;
        Ok(self.params[&a.calibrate].0)
    }

    /// The node's weight as int8 per output channel, its bias as int32, both behind DQ nodes.
    fn int8_weights(
        &self,
        n: &mut NodeProto,
        inits: &HashMap<String, TensorProto>,
        out: &mut GraphProto,
        replaced: &mut Vec<String>,
    ) -> Result<()> {
        // Conv [M, C, kh, kw] and Gemm (transB) [N, K]: outputs on axis 0; MatMul [K, N]: axis 1.
        let axis = if n.op_type == "MatMul" { 1 } else { 0 };
        let w = &inits[&n.input[1]];
        let (codes, scales) = quantize_weight(&floats(w), &w.dims, axis);
        let name = n.input[1].clone();
        if replaced.contains(&name) {
            // A weight several nodes share is quantized once.
            n.input[1] = format!("{name}/dq");
        } else {
            let raw: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
            n.input[1] = symmetric(out, &name, (DataType::Int8, raw), &w.dims, &scales, axis);
            replaced.push(name);
        }
        if n.input.len() > 2 && !n.input[2].is_empty() {
            let x_scale = self.input_scale(n)?;
            self.int32_bias(n, inits, &scales, x_scale, out, replaced)?;
        }
        Ok(())
    }

    fn int32_bias(
        &self,
        n: &mut NodeProto,
        inits: &HashMap<String, TensorProto>,
        w_scales: &[f32],
        x_scale: f32,
        out: &mut GraphProto,
        replaced: &mut Vec<String>,
    ) -> Result<()> {
        let original = n.input[2].clone();
        let b = floats(&inits[&original]);
        // A bias several nodes share gets codes per node (each has its own input scale).
        let name = match replaced.contains(&original) {
            true => format!("{original}/{}", out.node.len()),
            false => original.clone(),
        };
        if b.len() != w_scales.len() {
            bail!(
                "int8: node '{}' has {} biases for {} output channels",
                n.name,
                b.len(),
                w_scales.len()
            );
        }
        let scales: Vec<f32> = w_scales.iter().map(|s| s * x_scale).collect();
        let codes: Vec<u8> = b
            .iter()
            .zip(&scales)
            .flat_map(|(v, s)| ((v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32).to_le_bytes())
            .collect();
        n.input[2] = symmetric(out, &name, (DataType::Int32, codes), &[b.len() as i64], &scales, 0);
        replaced.push(original);
        Ok(())
    }
}

/// A Gather's constant table stored as int8 with one scale (its largest magnitude over 127): the
/// Gather reads the codes and a DequantizeLinear after it turns only the gathered rows back into
/// f32 (a DequantizeLinear before it would expand the whole table on every run).
fn int8_table(
    n: &mut NodeProto,
    inits: &HashMap<String, TensorProto>,
    out: &mut GraphProto,
    replaced: &mut Vec<String>,
) -> Result<NodeProto> {
    let name = n.input[0].clone();
    let scale = format!("{name}/scale");
    // A table read by several Gathers is stored once.
    if !replaced.contains(&name) {
        let t = &inits[&name];
        let values = floats(t);
        // One scale for the whole table: the table as a single slice.
        let (codes, step) = quantize_weight(&values, &[1, values.len() as i64], 0);
        let codes = codes.iter().map(|&c| c as u8).collect();
        out.initializer
            .push(tensor(&name, DataType::Int8, t.dims.clone(), codes));
        out.initializer
            .push(tensor(&scale, DataType::Float, vec![], raw_f32(&step)));
        replaced.push(name.clone());
    }
    let rows = n.output[0].clone();
    n.output[0] = format!("{rows}/int8");
    Ok(node("DequantizeLinear", &[&n.output[0], &scale], &rows, vec![]))
}

/// A constant stored as integer `codes` under its own name with one scale per slice along `axis`
/// (zero point 0, left out), and the DequantizeLinear that reads it back; returns the f32 name.
fn symmetric(
    out: &mut GraphProto,
    name: &str,
    (data_type, codes): (DataType, Vec<u8>),
    dims: &[i64],
    scales: &[f32],
    axis: usize,
) -> String {
    let scale = format!("{name}/scale");
    out.initializer.push(tensor(name, data_type, dims.to_vec(), codes));
    out.initializer.push(tensor(
        &scale,
        DataType::Float,
        vec![scales.len() as i64],
        raw_f32(scales),
    ));
    let deq = format!("{name}/dq");
    out.node.push(node(
        "DequantizeLinear",
        &[name, &scale],
        &deq,
        vec![Attr::Int("axis", axis as i64)],
    ));
    deq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_activations_by_hand() {
        // Two output channels of a [2, 1, 1, 2] conv: peaks 2.54 and 0.127.
        let (codes, scales) = quantize_weight(&[2.54, -1.27, 0.127, 0.0635], &[2, 1, 1, 2], 0);
        assert!(
            (scales[0] - 0.02).abs() < 1e-9 && (scales[1] - 0.001).abs() < 1e-9,
            "{scales:?}"
        );
        assert_eq!(codes, [127, -64, 127, 64]);
        // A MatMul weight [K=2, N=2] per column.
        let (codes, scales) = quantize_weight(&[1.0, 4.0, -0.5, 2.0], &[2, 2], 1);
        assert_eq!(scales, [1.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(codes, [127, 127, -64, 64]);
        // ReLU range [0, 5.1]: scale 0.02, zero point 0; [-1, 1.55]: zero point 100.
        let (s, z) = activation_params(0.0, 5.1);
        assert!((s - 0.02).abs() < 1e-8 && z == 0);
        let (s, z) = activation_params(-1.0, 1.55);
        assert!((s - 0.01).abs() < 1e-7 && z == 100);
        assert_eq!(activation_params(0.0, 0.0), (1.0, 0));
    }
}
