// libtorch's InferenceMode, which tch 0.24 does not bind: a stricter no-grad mode whose ops skip
// the autograd and view-tracking dispatch layers. Linked statically into cut (CPU-only headers).
#include <c10/core/InferenceMode.h>

extern "C" {

void* cut_inference_mode_enter() { return new c10::InferenceMode(true); }

void cut_inference_mode_leave(void* guard) { delete static_cast<c10::InferenceMode*>(guard); }

}  // extern "C"
