//! ONNX tensors and attributes as values: initializers (inline or in an external data file) to tch
//! tensors, and the attribute getters the converters use.

use crate::graph::onnx::proto::{attribute_proto::AttributeType, tensor_proto::DataType, NodeProto, TensorProto};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// A tensor's values: f32 for the floating types (f64 and f16 widened or narrowed), i64 for the
/// integer types and booleans. External data is read from the file beside `model`.
pub fn tensor_of(t: &TensorProto, model: &Path) -> Result<Tensor> {
    let dims: Vec<i64> = t.dims.clone();
    let dtype =
        DataType::try_from(t.data_type).map_err(|_| anyhow!("tensor '{}' has data type {}", t.name, t.data_type))?;
    let external;
    let raw: &[u8] = if t.data_location == 1 {
        external = read_external(t, model)?;
        &external
    } else {
        &t.raw_data
    };
    let numel: i64 = dims.iter().product();
    let tensor = match dtype {
        DataType::Float if !raw.is_empty() && cfg!(target_endian = "little") => {
            if raw.len() as i64 != numel * 4 {
                bail!(
                    "tensor '{}' holds {} bytes for dimensions {:?}",
                    t.name,
                    raw.len(),
                    dims
                );
            }
            let tensor = Tensor::f_from_data_size(raw, &[numel], Kind::Float)?;
            if t.data_location != 1 {
                release(raw);
            }
            tensor
        }
        DataType::Float => floats(raw, &t.float_data, 4, |b| f32::from_le_bytes(b.try_into().unwrap()))?,
        DataType::Double => doubles(t, raw),
        DataType::Float16 => halves(t, raw),
        DataType::Int64 => ints(raw, &t.int64_data, 8, |b| i64::from_le_bytes(b.try_into().unwrap())),
        // int8 and uint8 keep their kind: a quantization's zero point says the codes' type by it.
        DataType::Int8 => narrow_ints(t, raw, dtype).to_kind(Kind::Int8),
        DataType::Uint8 => narrow_ints(t, raw, dtype).to_kind(Kind::Uint8),
        DataType::Int32 | DataType::Int16 | DataType::Bool => narrow_ints(t, raw, dtype),
        other => bail!("tensor '{}' is of type {:?}, which cut does not read", t.name, other),
    };
    if tensor.numel() as i64 != numel {
        bail!(
            "tensor '{}' holds {} values for dimensions {:?}",
            t.name,
            tensor.numel(),
            dims
        );
    }
    Ok(tensor.reshape(dims.as_slice()))
}

/// f64 values, narrowed to f32.
fn doubles(t: &TensorProto, raw: &[u8]) -> Tensor {
    let v: Vec<f64> = if raw.is_empty() {
        t.double_data.clone()
    } else {
        raw.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    Tensor::from_slice(&v).to_kind(Kind::Float)
}

/// f16 values (raw, or as int32 bits), widened to f32.
fn halves(t: &TensorProto, raw: &[u8]) -> Tensor {
    let bits: Vec<u16> = if raw.is_empty() {
        t.int32_data.iter().map(|&v| v as u16).collect()
    } else {
        raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
    };
    let v: Vec<f32> = bits.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
    Tensor::from_slice(&v)
}

/// The integer types narrower than int64, and booleans, widened to i64.
fn narrow_ints(t: &TensorProto, raw: &[u8], dtype: DataType) -> Tensor {
    let width = match dtype {
        DataType::Int32 => 4,
        DataType::Int16 => 2,
        _ => 1,
    };
    let v: Vec<i64> = if raw.is_empty() {
        t.int32_data.iter().map(|&v| v as i64).collect()
    } else {
        raw.chunks_exact(width)
            .map(|b| match dtype {
                DataType::Int32 => i32::from_le_bytes(b.try_into().unwrap()) as i64,
                DataType::Int16 => i16::from_le_bytes(b.try_into().unwrap()) as i64,
                DataType::Int8 => b[0] as i8 as i64,
                _ => b[0] as i64,
            })
            .collect()
    };
    Tensor::from_slice(&v)
}

/// Lets the kernel drop the pages of a weight already copied out of a memory map (they are
/// re-read from the file if touched again), so an import holds about one copy of the weights.
fn release(raw: &[u8]) {
    const PAGE: usize = 4096;
    let start = (raw.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (raw.as_ptr() as usize + raw.len()) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside `raw`, which the caller passes only for weights inside
        // the read-only file map `read_model` decodes from: DONTNEED there drops cached pages,
        // which a later read faults in again from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn floats(raw: &[u8], inline: &[f32], width: usize, read: impl Fn(&[u8]) -> f32) -> Result<Tensor> {
    let v: Vec<f32> = if raw.is_empty() {
        inline.to_vec()
    } else {
        raw.chunks_exact(width).map(read).collect()
    };
    Ok(Tensor::from_slice(&v))
}

fn ints(raw: &[u8], inline: &[i64], width: usize, read: impl Fn(&[u8]) -> i64) -> Tensor {
    let v: Vec<i64> = if raw.is_empty() {
        inline.to_vec()
    } else {
        raw.chunks_exact(width).map(read).collect()
    };
    Tensor::from_slice(&v)
}

/// The bytes of an externally stored tensor: `location` relative to the model's folder, from
/// `offset`, `length` bytes (the rest of the file without it).
fn read_external(t: &TensorProto, model: &Path) -> Result<Vec<u8>> {
    let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.clone());
    let location = entry("location").ok_or_else(|| anyhow!("tensor '{}' is external but names no file", t.name))?;
    if Path::new(&location).is_absolute() || location.split(['/', '\\']).any(|p| p == "..") {
        bail!(
            "tensor '{}': external data '{location}' must lie beside the model",
            t.name
        );
    }
    let path = model.parent().unwrap_or(Path::new(".")).join(&location);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("tensor '{}': cannot read its external data {}", t.name, path.display()))?;
    let offset: usize = entry("offset").map(|o| o.parse()).transpose()?.unwrap_or(0);
    let length: usize = entry("length")
        .map(|l| l.parse())
        .transpose()?
        .unwrap_or(bytes.len().saturating_sub(offset));
    bytes.get(offset..offset + length).map(<[u8]>::to_vec).ok_or_else(|| {
        anyhow!(
            "tensor '{}': {} ends before byte {}",
            t.name,
            path.display(),
            offset + length
        )
    })
}

/// Attribute getters of one node.
pub struct Attrs<'a>(pub &'a NodeProto);

impl Attrs<'_> {
    fn find(&self, name: &str) -> Option<&crate::graph::onnx::proto::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.find(name).map_or(default, |a| a.i)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.find(name).map_or(default, |a| a.f)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.find(name).map(|a| a.ints.clone())
    }
    pub fn string(&self, name: &str, default: &str) -> String {
        self.find(name)
            .map_or(default.to_string(), |a| String::from_utf8_lossy(&a.s).into_owned())
    }
    /// A tensor attribute (`Constant`'s `value`).
    pub fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.find(name)
            .filter(|a| a.r#type == AttributeType::Tensor as i32)
            .and_then(|a| a.t.as_ref())
    }
    /// Whether the attribute is given at all.
    pub fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}
