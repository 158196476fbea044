//! Device selection. CUDA support is loaded at run time so CPU runs never need CUDA libraries.

pub mod cuda;

use anyhow::{bail, Result};
use std::sync::OnceLock;
use tch::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when available, otherwise CPU.
    Auto,
}

crate::choices!(DeviceChoice { Cpu => "cpu", Cuda => "cuda", Auto => "auto" });

/// The linker drops libtorch_cuda.so (nothing references it directly), so it is opened by hand
/// before the first CUDA query. Returns whether a CUDA device can be used.
fn cuda_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // cuBLAS is reproducible only with a fixed workspace, set before CUDA starts.
        if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
            std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
        }
        let name = c"libtorch_cuda.so";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally kept open.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        let available = !handle.is_null() && tch::Cuda::is_available();
        if available {
            deterministic_cudnn();
        }
        available
    })
}

/// Asks cuDNN for deterministic algorithms, so that fine-tuning on a GPU gives the same weights
/// from the same inputs and seed. tch has no binding for it; libtorch exports the C++ setter.
fn deterministic_cudnn() {
    // SAFETY: both symbols are plain exported functions of libtorch_cpu.so with these Itanium-ABI
    // signatures: `at::Context& at::globalContext()` and `void at::Context::setDeterministicCuDNN(bool)`
    // (the object pointer is the first argument). If either is missing, nothing is called.
    unsafe {
        let lib = libc::dlopen(c"libtorch_cpu.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if lib.is_null() {
            return;
        }
        let context = libc::dlsym(lib, c"_ZN2at13globalContextEv".as_ptr());
        let setter = libc::dlsym(lib, c"_ZN2at7Context21setDeterministicCuDNNEb".as_ptr());
        if context.is_null() || setter.is_null() {
            return;
        }
        let context: extern "C" fn() -> *mut libc::c_void = std::mem::transmute(context);
        let setter: extern "C" fn(*mut libc::c_void, bool) = std::mem::transmute(setter);
        setter(context(), true);
    }
}

pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            if cuda_available() {
                Ok(Device::Cuda(0))
            } else {
                bail!("--device cuda: no usable CUDA device (libtorch_cuda.so could not be loaded or no GPU is visible); use --device cpu or auto")
            }
        }
        DeviceChoice::Auto => Ok(if cuda_available() { Device::Cuda(0) } else { Device::Cpu }),
    }
}

pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}
