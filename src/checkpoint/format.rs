//! The safetensors byte layout, written by hand: the safetensors crate serialises `__metadata__`
//! from a HashMap, whose order changes from run to run, and `cut` promises byte-identical outputs,
//! so the (small) header is written here with sorted keys. Files are read back with the crate.

use super::DType;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// One tensor as it will be stored: on the CPU, contiguous, in its storage dtype. Its bytes are
/// copied out only while the file is written, a chunk at a time, so writing a model needs no
/// second copy of its weights.
pub struct TensorBytes {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    data: Tensor,
}

impl TensorBytes {
    /// The tensor on the host in `dtype` (no copy when it is there already).
    pub fn from_tensor(name: &str, tensor: &Tensor, dtype: DType) -> Result<TensorBytes> {
        let data = tensor.to_device(Device::Cpu).to_kind(dtype.kind()).contiguous();
        Ok(TensorBytes {
            name: name.to_string(),
            dtype,
            shape: data.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }

    /// The stored size in bytes.
    pub fn len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored bytes, in memory.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the values, little-endian, through a 1 MB buffer.
    fn write_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        let size = self.dtype.size();
        let flat = self.data.reshape([-1]);
        let numel = flat.numel();
        let per_chunk = ((1 << 20) / size).max(1);
        let mut buf = vec![0u8; per_chunk.min(numel.max(1)) * size];
        let mut start = 0;
        while start < numel {
            let n = per_chunk.min(numel - start);
            flat.narrow(0, start as i64, n as i64)
                .f_copy_data_u8(&mut buf[..n * size], n)
                .with_context(|| format!("copying tensor '{}'", self.name))?;
            out.write_all(&buf[..n * size])?;
            start += n;
        }
        Ok(())
    }
}

/// Serialises tensors (sorted by name) and metadata (sorted by key) into safetensors bytes.
pub fn serialize(tensors: &mut [TensorBytes], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    serialize_to(tensors, metadata, &mut out)?;
    Ok(out)
}

/// [`serialize`], written to `out` as it goes.
pub fn serialize_to(
    tensors: &mut [TensorBytes],
    metadata: &BTreeMap<String, String>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(metadata)?);
    }
    let mut offset = 0usize;
    for t in tensors.iter() {
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&serde_json::to_string(&t.name)?);
        header.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
            t.dtype.safetensors_name(),
            serde_json::to_string(&t.shape)?,
            offset,
            offset + t.len()
        ));
        offset += t.len();
    }
    header.push('}');
    // The format pads the header with spaces to an 8-byte boundary.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for t in tensors.iter() {
        t.write_to(out)?;
    }
    Ok(())
}
