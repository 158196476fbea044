//! The packed layout: each pruned weight `NAME` is stored as `NAME.mask` (u8, one bit per element,
//! element i in bit i % 8 of byte i / 8, 1 = kept) and `NAME.values` (the kept values in row-major
//! order, in the file's dtype). Metadata `cut.layout` is "packed" and `cut.packed` maps each packed
//! name to its shape and dtype. Every other tensor is stored as usual.

use super::format::TensorBytes;
use super::metadata::LAYOUT_KEY;
use super::{DType, Storage, TensorEntry};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

pub const PACKED_KEY: &str = "cut.packed";
pub const MASK_SUFFIX: &str = ".mask";
pub const VALUES_SUFFIX: &str = ".values";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PackedInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// Turns the physical tensors of a file into the logical tensors its graph uses.
pub fn logical_entries(
    mut physical: BTreeMap<String, TensorEntry>,
    meta: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, TensorEntry>> {
    let packed: BTreeMap<String, PackedInfo> = match meta.get(LAYOUT_KEY).map(String::as_str) {
        None | Some("dense") => BTreeMap::new(),
        Some("packed") => {
            let text = meta
                .get(PACKED_KEY)
                .ok_or_else(|| anyhow!("layout is packed but metadata has no '{PACKED_KEY}'"))?;
            serde_json::from_str(text).with_context(|| format!("metadata field '{PACKED_KEY}' is not valid"))?
        }
        Some(other) => bail!("metadata field '{LAYOUT_KEY}' is '{other}'; this cut reads 'dense' and 'packed'"),
    };
    let mut out = BTreeMap::new();
    for (name, info) in packed {
        let numel: usize = info.shape.iter().product();
        let take = |physical: &mut BTreeMap<String, TensorEntry>, suffix: &str| {
            physical
                .remove(&format!("{name}{suffix}"))
                .ok_or_else(|| anyhow!("packed tensor '{name}' has no '{name}{suffix}'"))
        };
        let mask = take(&mut physical, MASK_SUFFIX)?;
        let values = take(&mut physical, VALUES_SUFFIX)?;
        if mask.dtype != DType::U8 || mask.shape != [numel.div_ceil(8)] {
            bail!(
                "tensor '{name}{MASK_SUFFIX}' must be u8 of shape [{}], found {} {:?}",
                numel.div_ceil(8),
                mask.dtype,
                mask.shape
            );
        }
        if values.dtype != info.dtype || values.shape.len() != 1 || values.shape[0] > numel {
            bail!(
                "tensor '{name}{VALUES_SUFFIX}' must be a 1-d {} tensor of at most {numel} values, found {} {:?}",
                info.dtype,
                values.dtype,
                values.shape
            );
        }
        let (Storage::Dense(m), Storage::Dense(v)) = (mask.storage, values.storage) else {
            unreachable!("physical tensors are dense")
        };
        out.insert(
            name.clone(),
            TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape,
                storage: Storage::Packed {
                    mask: m,
                    values: v,
                    nnz: values.shape[0],
                },
            },
        );
    }
    for (name, entry) in physical {
        if entry.dtype == DType::U8 {
            bail!("tensor '{name}' is u8, which cut only reads as the mask of a packed tensor");
        }
        out.insert(name, entry);
    }
    Ok(out)
}

/// Rebuilds the dense tensor from its bitmask and kept values.
pub fn unpack(mask: &[u8], values: &[u8], nnz: usize, shape: &[i64], kind: Kind) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    let bytes = Tensor::from_slice(mask);
    let bits = bytes
        .unsqueeze(1)
        .bitwise_right_shift(&Tensor::arange(8, (Kind::Uint8, Device::Cpu)))
        .bitwise_and(1)
        .flatten(0, -1)
        .narrow(0, 0, numel)
        .to_kind(Kind::Bool);
    let kept = bits.sum(Kind::Int64).int64_value(&[]) as usize;
    if kept != nnz {
        bail!("mask keeps {kept} elements but {nnz} values are stored");
    }
    let vals = Tensor::f_from_data_size(values, &[nnz as i64], kind)?;
    Ok(Tensor::zeros([numel], (kind, Device::Cpu))
        .masked_scatter(&bits, &vals)
        .view(shape))
}

/// Splits a tensor into its mask and kept values, stored in `dtype`.
pub fn pack(name: &str, tensor: &Tensor, dtype: DType) -> Result<(TensorBytes, TensorBytes, PackedInfo)> {
    let t = tensor.to_device(Device::Cpu).to_kind(dtype.kind()).contiguous();
    let flat = t.flatten(0, -1);
    let keep = flat.ne(0.0);
    let numel = flat.numel() as i64;
    let padded = (numel + 7) / 8 * 8;
    let bits = Tensor::cat(
        &[
            keep.to_kind(Kind::Uint8),
            Tensor::zeros([padded - numel], (Kind::Uint8, Device::Cpu)),
        ],
        0,
    )
    .view([-1, 8]);
    let weights = Tensor::from_slice(&[1u8, 2, 4, 8, 16, 32, 64, 128]);
    let mask = (bits.to_kind(Kind::Int64) * weights.to_kind(Kind::Int64))
        .sum_dim_intlist(1, false, Kind::Int64)
        .to_kind(Kind::Uint8);
    let values = flat.masked_select(&keep);
    Ok((
        TensorBytes::from_tensor(&format!("{name}{MASK_SUFFIX}"), &mask, DType::U8)?,
        TensorBytes::from_tensor(&format!("{name}{VALUES_SUFFIX}"), &values, dtype)?,
        PackedInfo {
            shape: t.size().iter().map(|&d| d as usize).collect(),
            dtype,
        },
    ))
}
