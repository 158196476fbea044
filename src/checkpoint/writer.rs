//! Writes safetensors files deterministically and atomically.
//!
//! The safetensors crate serialises `__metadata__` from a HashMap, whose order changes from run to
//! run; `cut` promises byte-identical outputs for identical inputs, so the (small) header is
//! written here with sorted keys. Files are read back with the crate.

use super::metadata::{model_metadata, Provenance};
use super::DType;
use crate::graph::interpreter::Params;
use crate::graph::{Model, ParamRole};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub struct TensorBytes {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl TensorBytes {
    /// Copies a tensor to the host in `dtype`.
    pub fn from_tensor(name: &str, tensor: &Tensor, dtype: DType) -> Result<TensorBytes> {
        let t = tensor.to_device(Device::Cpu).to_kind(dtype.kind()).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * dtype.size()];
        t.f_copy_data_u8(&mut data, numel)
            .with_context(|| format!("copying tensor '{name}'"))?;
        Ok(TensorBytes {
            name: name.to_string(),
            dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }
}

/// Serialises tensors (sorted by name) and metadata (sorted by key) into safetensors bytes.
pub fn serialize(tensors: &mut [TensorBytes], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(metadata)?);
    }
    let mut offset = 0usize;
    for t in tensors.iter() {
        if t.data.len() != t.shape.iter().product::<usize>() * t.dtype.size() {
            bail!(
                "tensor '{}' has {} bytes for shape {:?} and dtype {}",
                t.name,
                t.data.len(),
                t.shape,
                t.dtype
            );
        }
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&serde_json::to_string(&t.name)?);
        header.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
            t.dtype.safetensors_name(),
            serde_json::to_string(&t.shape)?,
            offset,
            offset + t.data.len()
        ));
        offset += t.data.len();
    }
    header.push('}');
    // The format pads the header with spaces to an 8-byte boundary.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in tensors.iter() {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// The absolute path a (possibly not yet existing) file would have.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// Checks an output path before any work is done: its folder exists, it is not one of the inputs,
/// and it does not exist unless `overwrite`.
pub fn check_output(path: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!("{shown}: output folder {} does not exist", parent.display());
    }
    let out = resolved(path).ok_or_else(|| anyhow!("{shown}: not a file path"))?;
    for input in inputs {
        if resolved(input).as_deref() == Some(out.as_path()) {
            bail!("{shown}: refusing to overwrite the input file; name another output with -o");
        }
    }
    if out.is_dir() {
        bail!("{shown}: is a directory");
    }
    if out.exists() && !overwrite {
        bail!("{shown}: already exists; pass --force to replace it");
    }
    Ok(())
}

/// Writes bytes to a temporary file in the target folder and renames it into place, so a reader
/// never sees a half-written file and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cut-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .with_context(|| format!("{shown}: cannot create a temporary file in {}", parent.display()))?;
    tmp.write_all(bytes).with_context(|| format!("{shown}: write failed"))?;
    // tempfile creates 0600; a model file is an ordinary artefact, readable like any other output.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("{shown}: cannot set permissions"))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("{shown}: sync failed"))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("{shown}: cannot rename into place ({})", e.error))?;
    Ok(())
}

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
    serialize(&mut tensors, &meta)
}
