// What cut needs of libtorch's CUDA side that tch 0.24 does not bind: CUDA graph capture and
// replay, and the caching allocator's peak statistics. Built by build.rs as a shared library that
// is embedded in the `cut` binary and loaded only after libtorch_cuda.so, so CPU runs never need
// CUDA libraries. Every call returns nullptr on success or a message that the caller frees with
// cut_cuda_free_message; no C++ exception crosses into Rust.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>

namespace {

struct SideStream {
  std::optional<c10::cuda::CUDAStreamGuard> guard;
};

char* message(const char* what) {
  size_t len = std::strlen(what);
  char* copy = static_cast<char*>(std::malloc(len + 1));
  if (copy != nullptr) {
    std::memcpy(copy, what, len + 1);
  }
  return copy;
}

template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

}  // namespace

extern "C" {

// Makes a stream from libtorch's pool the current one of this thread for `device` (capture needs
// a stream other than the default one), until cut_cuda_side_stream_leave.
char* cut_cuda_side_stream_enter(int device, void** out) {
  return guarded([&] {
    auto side = std::make_unique<SideStream>();
    side->guard.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
    *out = side.release();
  });
}

char* cut_cuda_side_stream_leave(void* side) {
  return guarded([&] { delete static_cast<SideStream*>(side); });
}

char* cut_cuda_graph_new(void** out) {
  return guarded([&] { *out = new at::cuda::CUDAGraph(); });
}

// Records, instead of running, the kernels launched on the current stream from here on.
char* cut_cuda_graph_capture_begin(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin(); });
}

char* cut_cuda_graph_capture_end(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); });
}

// Launches the recorded kernels again, on the current stream, with one call.
char* cut_cuda_graph_replay(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); });
}

char* cut_cuda_graph_delete(void* graph) {
  return guarded([&] { delete static_cast<at::cuda::CUDAGraph*>(graph); });
}

// The most bytes the caching allocator has had allocated on `device` at once since the last reset.
char* cut_cuda_peak_allocated_bytes(int device, long long* out) {
  return guarded([&] {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    *out = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  });
}

char* cut_cuda_reset_peak(int device) {
  return guarded([&] { c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device)); });
}

void cut_cuda_free_message(char* message) { std::free(message); }

}  // extern "C"
