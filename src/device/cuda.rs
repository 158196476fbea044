//! What cut needs of libtorch's CUDA side beyond tch 0.24's bindings:
//! - CUDA graphs: a forward pass recorded once and replayed with one launch. A batch-1 forward on a
//!   fast GPU is a few milliseconds of small kernels that the host can barely launch in time, so
//!   its latency follows the number of launches rather than the work; a replay issues them all at
//!   once.
//! - The caching allocator's peak of allocated bytes, for `cut bench`'s peak memory on a GPU.
//!
//! csrc/cuda_shim.cpp wraps these in a few C functions. build.rs compiles that into a shared
//! library, embedded here and loaded only when one is asked for, after libtorch_cuda.so (whose
//! symbols it uses): CPU runs never need it.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;
use tch::{Device, Tensor};

/// The embedded shim (see build.rs); empty when the build had no CUDA headers.
#[cfg(cut_cuda_shim)]
const SHIM_LIBRARY: &[u8] = include_bytes!(env!("CUT_CUDA_SHIM"));
#[cfg(not(cut_cuda_shim))]
const SHIM_LIBRARY: &[u8] = &[];

/// Whether this build has the shim, so can capture CUDA graphs at all (it still needs a GPU).
pub fn built_in() -> bool {
    !SHIM_LIBRARY.is_empty()
}

/// Each shim call returns null on success or an error message that `free_message` releases.
type Status = *mut c_char;

/// `(device, &mut new object)`.
type EnterFn = unsafe extern "C" fn(c_int, *mut *mut c_void) -> Status;
/// `(&mut new object)`.
type NewFn = unsafe extern "C" fn(*mut *mut c_void) -> Status;
/// `(object)`.
type ObjectFn = unsafe extern "C" fn(*mut c_void) -> Status;
type FreeFn = unsafe extern "C" fn(*mut c_char);
/// `(device, &mut bytes)`.
type PeakFn = unsafe extern "C" fn(c_int, *mut i64) -> Status;
/// `(device)`.
type DeviceFn = unsafe extern "C" fn(c_int) -> Status;

struct Shim {
    side_stream_enter: EnterFn,
    side_stream_leave: ObjectFn,
    graph_new: NewFn,
    capture_begin: ObjectFn,
    capture_end: ObjectFn,
    replay: ObjectFn,
    graph_delete: ObjectFn,
    peak_allocated_bytes: PeakFn,
    reset_peak: DeviceFn,
    free_message: FreeFn,
}

impl Shim {
    /// Turns a shim call's status into a Result naming what was being done.
    fn check(&self, status: Status, what: &str) -> Result<()> {
        if status.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null status is a NUL-terminated string the shim allocated for us to free.
        let message = unsafe { CStr::from_ptr(status) }.to_string_lossy().into_owned();
        unsafe { (self.free_message)(status) };
        bail!("{what}: {}", message.lines().next().unwrap_or("failed"))
    }
}

fn shim() -> Result<&'static Shim> {
    static SHIM: OnceLock<std::result::Result<Shim, String>> = OnceLock::new();
    SHIM.get_or_init(|| load().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Loads the embedded shim from an in-memory file. Its symbols resolve against libtorch_cuda.so,
/// which [`super::resolve`] has opened globally by the time a CUDA tensor exists.
fn load() -> Result<Shim> {
    if !built_in() {
        bail!(
            "this build of cut has no CUDA shim (so no CUDA graphs): the CUDA headers were missing when it was \
             built (run scripts/setup-libtorch.sh, then cargo build --release)"
        );
    }
    if !super::cuda_available() {
        bail!("the CUDA shim needs a usable CUDA device (libtorch_cuda.so could not be loaded or no GPU is visible)");
    }
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"cut_cuda_shim".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("CUDA shim: memfd_create");
    }
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(SHIM_LIBRARY)
        .context("CUDA shim: writing the shim library")?;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a path of digits");
    // SAFETY: dlopen with a valid path; the handle is kept open for the life of the process.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    drop(file);
    if handle.is_null() {
        // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
        let error = unsafe { libc::dlerror() };
        let error = if error.is_null() {
            "unknown error".into()
        } else {
            unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned()
        };
        bail!("CUDA shim: loading the shim library failed: {error}");
    }
    let symbol = |name: &CStr| -> Result<*mut c_void> {
        // SAFETY: a valid handle and NUL-terminated name.
        let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if f.is_null() {
            bail!("CUDA shim: the shim library lacks {}", name.to_string_lossy());
        }
        Ok(f)
    };
    // SAFETY: each symbol is the extern "C" function of csrc/cuda_shim.cpp with this signature.
    unsafe {
        Ok(Shim {
            side_stream_enter: std::mem::transmute::<*mut c_void, EnterFn>(symbol(c"cut_cuda_side_stream_enter")?),
            side_stream_leave: std::mem::transmute::<*mut c_void, ObjectFn>(symbol(c"cut_cuda_side_stream_leave")?),
            graph_new: std::mem::transmute::<*mut c_void, NewFn>(symbol(c"cut_cuda_graph_new")?),
            capture_begin: std::mem::transmute::<*mut c_void, ObjectFn>(symbol(c"cut_cuda_graph_capture_begin")?),
            capture_end: std::mem::transmute::<*mut c_void, ObjectFn>(symbol(c"cut_cuda_graph_capture_end")?),
            replay: std::mem::transmute::<*mut c_void, ObjectFn>(symbol(c"cut_cuda_graph_replay")?),
            graph_delete: std::mem::transmute::<*mut c_void, ObjectFn>(symbol(c"cut_cuda_graph_delete")?),
            peak_allocated_bytes: std::mem::transmute::<*mut c_void, PeakFn>(symbol(c"cut_cuda_peak_allocated_bytes")?),
            reset_peak: std::mem::transmute::<*mut c_void, DeviceFn>(symbol(c"cut_cuda_reset_peak")?),
            free_message: std::mem::transmute::<*mut c_void, FreeFn>(symbol(c"cut_cuda_free_message")?),
        })
    }
}

/// The most bytes libtorch's CUDA caching allocator has had allocated on `device` at once since the
/// last [`reset_peak_memory`] (or since CUDA started).
pub fn peak_allocated_bytes(device: usize) -> Result<u64> {
    let shim = shim()?;
    let mut bytes = 0i64;
    shim.check(
        unsafe { (shim.peak_allocated_bytes)(device as c_int, &mut bytes) },
        "CUDA peak memory",
    )?;
    Ok(bytes.max(0) as u64)
}

/// Starts the peak of [`peak_allocated_bytes`] afresh from what is allocated now.
pub fn reset_peak_memory(device: usize) -> Result<()> {
    let shim = shim()?;
    shim.check(unsafe { (shim.reset_peak)(device as c_int) }, "CUDA peak memory reset")
}

/// While alive, this thread's current CUDA stream is one from libtorch's pool rather than the
/// default stream, on which a capture cannot begin.
struct SideStream {
    shim: &'static Shim,
    raw: *mut c_void,
}

impl SideStream {
    fn enter(shim: &'static Shim, device: usize) -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        shim.check(
            unsafe { (shim.side_stream_enter)(device as c_int, &mut raw) },
            "CUDA graph side stream",
        )?;
        Ok(SideStream { shim, raw })
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        // Restoring the previous stream cannot fail short of a broken CUDA context; nothing to do then.
        let _ = self.shim.check(
            unsafe { (self.shim.side_stream_leave)(self.raw) },
            "CUDA graph side stream",
        );
    }
}

/// A forward pass recorded as a CUDA graph. [`CapturedForward::run`] copies its input into the
/// tensor the recording read and replays it; the outputs are the tensors the recording wrote,
/// overwritten by every replay.
pub struct CapturedForward {
    shim: &'static Shim,
    graph: *mut c_void,
    input: Tensor,
    outputs: Vec<Tensor>,
}

impl CapturedForward {
    /// Runs `forward` `warmup` times (at least once: libraries set up their handles and pick their
    /// kernels on first use, which a capture must not record), then once more under capture, all on
    /// a side stream, on a private copy of `example`.
    pub fn capture(
        example: &Tensor,
        warmup: usize,
        forward: &mut dyn FnMut(&Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<Self> {
        let Device::Cuda(device) = example.device() else {
            bail!(
                "a CUDA graph needs its input on a CUDA device, not {:?}",
                example.device()
            );
        };
        let shim = shim()?;
        let input = example.copy();
        tch::Cuda::synchronize(device as i64);
        let side = SideStream::enter(shim, device)?;
        for _ in 0..warmup.max(1) {
            forward(&input)?;
        }
        tch::Cuda::synchronize(device as i64);
        let mut graph = std::ptr::null_mut();
        shim.check(unsafe { (shim.graph_new)(&mut graph) }, "CUDA graph creation")?;
        let mut captured = CapturedForward {
            shim,
            graph,
            input,
            outputs: vec![],
        };
        shim.check(unsafe { (shim.capture_begin)(graph) }, "CUDA graph capture")?;
        let outputs = forward(&captured.input);
        // End the capture even when the forward failed, or the stream stays in capture mode.
        let ended = shim.check(unsafe { (shim.capture_end)(graph) }, "CUDA graph capture");
        drop(side);
        captured.outputs = outputs.context("the forward pass under CUDA graph capture")?;
        ended?;
        tch::Cuda::synchronize(device as i64);
        Ok(captured)
    }

    /// Replays the recorded forward on `input` (same shape and device as the example). The work is
    /// queued, not finished: synchronise before reading the clock.
    pub fn run(&mut self, input: &Tensor) -> Result<&[Tensor]> {
        if input.size() != self.input.size() || input.device() != self.input.device() {
            bail!(
                "a CUDA graph replays one input shape: recorded {:?} on {:?}, got {:?} on {:?}",
                self.input.size(),
                self.input.device(),
                input.size(),
                input.device()
            );
        }
        self.input.copy_(input);
        self.shim
            .check(unsafe { (self.shim.replay)(self.graph) }, "CUDA graph replay")?;
        Ok(&self.outputs)
    }
}

impl Drop for CapturedForward {
    fn drop(&mut self) {
        self.outputs.clear();
        let _ = self
            .shim
            .check(unsafe { (self.shim.graph_delete)(self.graph) }, "CUDA graph release");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_refuses_a_cpu_input_with_a_clear_error() {
        let x = Tensor::zeros([1, 3, 4, 4], (tch::Kind::Float, Device::Cpu));
        let err = CapturedForward::capture(&x, 1, &mut |x| Ok(vec![x.relu()]))
            .err()
            .expect("a CPU input cannot be captured");
        assert!(err.to_string().contains("needs its input on a CUDA device"), "{err}");
    }

    #[test]
    fn the_build_embeds_a_shared_library() {
        // scripts/setup-libtorch.sh installs every header the shim needs, so a build from the
        // README's commands must have it; an ELF header tells a library from an empty stand-in.
        assert!(built_in(), "build.rs built no CUDA shim (see its cargo warning)");
        assert_eq!(&SHIM_LIBRARY[..4], b"\x7fELF");
    }
}
