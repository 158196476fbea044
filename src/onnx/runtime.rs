//! ONNX Runtime, loaded when first needed from the shared library that PyPI's `onnxruntime` wheel
//! ships (`onnxruntime/capi/libonnxruntime.so.*`): int8 calibration runs the f32 file in it, and
//! the int8 figures of a report come from running the int8 file in it. Nothing of `cut`'s build
//! needs it; a command that needs it and cannot find it says where it looked.

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{DynValue, Tensor as OrtTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Kind, Tensor};

/// The environment variable naming the library (the `ort` crate's own name for it).
pub const LIBRARY_VAR: &str = "ORT_DYLIB_PATH";

/// The library's file name on this platform, as the wheel names it (versioned on Linux).
fn is_library(name: &str) -> bool {
    name.starts_with("libonnxruntime.so") || name == "onnxruntime.dll" || {
        name.starts_with("libonnxruntime.") && name.ends_with(".dylib")
    }
}

/// The library in a wheel's `capi` folder, when it is there.
fn in_capi(capi: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| is_library(&n.to_string_lossy())))
        .collect();
    found.sort();
    found.pop()
}

/// Where to look: `$ORT_DYLIB_PATH`; `.onnx-env/` (what `scripts/setup-onnx.sh` installs) in the
/// working folder, the executable's folder or up to three folders above either; the
/// `onnxruntime` package that `python3` imports.
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(LIBRARY_VAR) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "{LIBRARY_VAR}={}: no such file (it names ONNX Runtime's shared library)",
            p.display()
        );
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().take(4).map(Path::to_path_buf));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(dir.ancestors().take(4).map(Path::to_path_buf));
    }
    let local = roots
        .iter()
        .find_map(|r| in_capi(&r.join(".onnx-env/onnxruntime/capi")));
    if let Some(found) = local.or_else(python_package_library) {
        return Ok(found);
    }
    bail!(
        "ONNX Runtime not found: `pip install onnxruntime` (or scripts/setup-onnx.sh), or set {LIBRARY_VAR} to its libonnxruntime shared library"
    )
}

/// The library of the `onnxruntime` package `python3` imports, if any.
fn python_package_library() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    out.status
        .success()
        .then(|| in_capi(&Path::new(dir.trim()).join("capi")))
        .flatten()
}

/// Loads the library once per process. ONNX Runtime's own log (optimiser notices) is dropped:
/// what fails comes back as an error.
fn environment() -> Result<Environment> {
    static LOADED: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = find_library().map_err(|e| e.to_string())?;
            let builder =
                ort::init_from(&path).map_err(|e| format!("{}: cannot load ONNX Runtime ({e})", path.display()))?;
            builder
                .with_name("cut")
                .with_logger(std::sync::Arc::new(|_, _, _, _, _| {}))
                .build()
                .map_err(|e| format!("{}: cannot start ONNX Runtime ({e})", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// One ONNX model in an ONNX Runtime session on the CPU.
pub struct OrtModel {
    session: Session,
    /// What names the model in errors.
    what: String,
}

impl OrtModel {
    /// A session over `bytes` with `threads` intra-op threads (0: ONNX Runtime's default) and every
    /// graph optimisation (which is where QDQ groups become int8 kernels).
    pub fn from_bytes(bytes: &[u8], threads: usize, what: &str) -> Result<OrtModel> {
        let env = environment()?;
        let fail = |e: ort::Error| anyhow!("{what}: ONNX Runtime refused the model ({e})");
        let mut builder = Session::builder(&env)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.into()))?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| fail(e.into()))?;
        }
        let session = builder.commit_from_memory(bytes).map_err(fail)?;
        Ok(OrtModel {
            session,
            what: what.to_string(),
        })
    }

    /// Runs the model on `inputs` (by the model's input names; f32 or int64 tensors on any
    /// device) and returns every output as an f32 tensor on the CPU, by name.
    pub fn run(&mut self, inputs: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        self.run_with(inputs, |name, dims, data| {
            out.insert(name.to_string(), Tensor::from_slice(data).reshape(dims));
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs the model and hands `each` every output (name, dimensions, f32 values) where ONNX
    /// Runtime holds it, without a copy.
    pub fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        mut each: impl FnMut(&str, &[i64], &[f32]) -> Result<()>,
    ) -> Result<()> {
        let values = self
            .session
            .inputs()
            .iter()
            .map(|outlet| {
                let name = outlet.name();
                let t = inputs
                    .get(name)
                    .ok_or_else(|| anyhow!("{}: the model reads input '{name}', which was not given", self.what))?;
                Ok((
                    name.to_string(),
                    to_ort(t).with_context(|| format!("{}: input '{name}'", self.what))?,
                ))
            })
            .collect::<Result<Vec<(String, DynValue)>>>()?;
        let outputs = self
            .session
            .run(values)
            .map_err(|e| anyhow!("{}: ONNX Runtime failed to run ({e})", self.what))?;
        for (name, value) in outputs.iter() {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| anyhow!("{}: output '{name}' is not f32 ({e})", self.what))?;
            let dims: Vec<i64> = shape.iter().copied().collect();
            each(name, &dims, data)?;
        }
        Ok(())
    }
}

/// A tch tensor as an ONNX Runtime value (copied to the host).
fn to_ort(t: &Tensor) -> Result<DynValue> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let shape: Vec<i64> = t.size();
    let flat = t.flatten(0, -1);
    Ok(match t.kind() {
        Kind::Int64 => OrtTensor::from_array((shape, Vec::<i64>::try_from(&flat)?))?.into_dyn(),
        Kind::Float => OrtTensor::from_array((shape, Vec::<f32>::try_from(&flat)?))?.into_dyn(),
        other => bail!("tensors of {other:?} are not passed to ONNX Runtime (f32 and int64 are)"),
    })
}
