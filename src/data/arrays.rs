//! Arrays in NumPy's files: `.npy` (one array) and `.npz` (arrays by name), f32 or i64, as
//! tensors; and tensors as the fields of an example.

use super::example::{Field, Values};
use anyhow::{anyhow, bail, Result};
use ndarray_npy::{NpzReader, ReadNpyExt};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The arrays of an `.npz` file (f32 or i64), by name.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let shown = path.display();
    let mut out = BTreeMap::new();
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{shown}: cannot open ({e})"))?;
    let mut npz = NpzReader::new(file).map_err(|e| anyhow!("{shown}: not an .npz file ({e})"))?;
    for key in npz.names().map_err(|e| anyhow!("{shown}: {e}"))? {
        let t = match npz.by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>(&key) {
            Ok(a) => tensor_of(a.shape(), a.iter().copied().collect::<Vec<f32>>()),
            Err(_) => {
                let a = npz
                    .by_name::<ndarray::OwnedRepr<i64>, ndarray::IxDyn>(&key)
                    .map_err(|e| anyhow!("{shown}: array '{key}': {e} (f32 or i64 arrays)"))?;
                tensor_of(a.shape(), a.iter().copied().collect::<Vec<i64>>())
            }
        };
        out.insert(key.trim_end_matches(".npy").to_string(), t);
    }
    Ok(out)
}

pub fn read_npy(path: &Path) -> Result<Tensor> {
    let open = || std::fs::File::open(path).map_err(|e| anyhow!("cannot open ({e})"));
    if let Ok(a) = ndarray::ArrayD::<f32>::read_npy(open()?) {
        return Ok(tensor_of(a.shape(), a.iter().copied().collect::<Vec<f32>>()));
    }
    let a = ndarray::ArrayD::<i64>::read_npy(open()?).map_err(|e| anyhow!("not an f32 or i64 .npy array ({e})"))?;
    Ok(tensor_of(a.shape(), a.iter().copied().collect::<Vec<i64>>()))
}

pub fn tensor_of<T: tch::kind::Element>(shape: &[usize], values: Vec<T>) -> Tensor {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&values).view(dims.as_slice())
}

/// A tensor (f32 or i64, any device) as an example's field called `name`.
pub fn field_of(name: &str, t: &Tensor) -> Result<Field> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let values = match t.kind() {
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => {
            Values::F32(Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?)
        }
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool => {
            Values::I64(Vec::<i64>::try_from(t.to_kind(Kind::Int64).flatten(0, -1))?)
        }
        other => bail!("array '{name}' is {other:?}; give f32 or i64"),
    };
    Ok(Field {
        name: name.into(),
        shape: t.size(),
        values,
    })
}
