//! The safetensors byte layout, written by hand: the safetensors crate serialises `__metadata__`
//! from a HashMap, whose order changes from run to run, and `cut` promises byte-identical outputs,
//! so the (small) header is written here with sorted keys. Files are read back with the crate.

use super::DType;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// One tensor's bytes as it will be stored.
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
