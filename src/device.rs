//! Device selection. CUDA support is loaded at run time so CPU runs never need CUDA libraries.

use anyhow::{bail, Result};
use std::sync::OnceLock;
use tch::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when available, otherwise CPU.
    Auto,
}

/// The linker drops libtorch_cuda.so (nothing references it directly), so it is opened by hand
/// before the first CUDA query. Returns whether a CUDA device can be used.
fn cuda_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let name = c"libtorch_cuda.so";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally kept open.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        !handle.is_null() && tch::Cuda::is_available()
    })
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
