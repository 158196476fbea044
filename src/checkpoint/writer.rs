//! Writes models: their tensors in the chosen dtype and layout, with the graph, tasks and
//! provenance in the header, deterministically (see [`super::format`]) and atomically.

use super::format::{serialize, TensorBytes};
use super::metadata::{model_metadata, Provenance};
use super::DType;
use crate::fsio::write_atomic;
use crate::graph::interpreter::Params;
use crate::graph::{Model, ParamRole};
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes a model with its graph, tasks and provenance. Floating-point tensors are stored in
/// `dtype`; integer counters stay i64. With `packed`, conv and linear weights are stored as a
/// bitmask plus their non-zero values (see `packed`).
pub fn save_model(
    path: &Path,
    model: &Model,
    params: &Params,
    dtype: DType,
    packed: bool,
    provenance: Option<&Provenance>,
) -> Result<()> {
    let bytes = model_bytes(model, params, dtype, packed, provenance)?;
    write_atomic(path, &bytes)
}

/// The bytes `save_model` writes.
pub fn model_bytes(
    model: &Model,
    params: &Params,
    dtype: DType,
    packed: bool,
    provenance: Option<&Provenance>,
) -> Result<Vec<u8>> {
    let (mut tensors, meta) = model_tensors(model, params, dtype, packed, provenance)?;
    serialize(&mut tensors, &meta)
}

/// [`model_bytes`], streamed into `out` tensor by tensor (no second copy of the weights).
pub fn write_model(
    out: &mut dyn std::io::Write,
    model: &Model,
    params: &Params,
    dtype: DType,
    provenance: Option<&Provenance>,
) -> Result<()> {
    let (mut tensors, meta) = model_tensors(model, params, dtype, false, provenance)?;
    super::format::serialize_to(&mut tensors, &meta, out)
}

/// The tensors as stored, and the header's metadata.
#[allow(clippy::type_complexity)]
fn model_tensors(
    model: &Model,
    params: &Params,
    dtype: DType,
    packed: bool,
    provenance: Option<&Provenance>,
) -> Result<(Vec<TensorBytes>, BTreeMap<String, String>)> {
    let mut tensors = Vec::new();
    let mut packed_info = BTreeMap::new();
    for spec in model.graph.param_specs() {
        let t = params
            .get(&spec.name)
            .ok_or_else(|| anyhow!("tensor '{}' is missing from the parameters", spec.name))?;
        if spec.role == ParamRole::BnBatchesTracked {
            tensors.push(TensorBytes::from_tensor(&spec.name, t, DType::I64)?);
        } else if packed && spec.role.is_prunable_weight() {
            let (mask, values, info) = super::packed::pack(&spec.name, t, dtype)?;
            tensors.push(mask);
            tensors.push(values);
            packed_info.insert(spec.name.clone(), info);
        } else {
            tensors.push(TensorBytes::from_tensor(&spec.name, t, dtype)?);
        }
    }
    let mut meta = model_metadata(model, provenance)?;
    if packed {
        meta.insert(super::metadata::LAYOUT_KEY.to_string(), "packed".to_string());
        meta.insert(
            super::packed::PACKED_KEY.to_string(),
            serde_json::to_string(&packed_info)?,
        );
    }
    Ok((tensors, meta))
}
