//! libtorch's inference mode, which tch does not bind (a guard from `csrc/inference_mode.cpp`).

extern "C" {
    fn cut_inference_mode_enter() -> *mut std::ffi::c_void;
    fn cut_inference_mode_leave(guard: *mut std::ffi::c_void);
}

/// While alive, libtorch's inference mode is on for this thread: no gradients, and ops skip the
/// autograd and view-tracking layers of the dispatcher. Tensors made meanwhile cannot join autograd
/// later, so use it only around pure inference.
pub struct InferenceMode(*mut std::ffi::c_void);

impl InferenceMode {
    pub fn enter() -> Self {
        // SAFETY: the shim allocates a c10::InferenceMode guard and returns it.
        InferenceMode(unsafe { cut_inference_mode_enter() })
    }
}

impl Drop for InferenceMode {
    fn drop(&mut self) {
        // SAFETY: the guard came from cut_inference_mode_enter and is dropped once, on its thread.
        unsafe { cut_inference_mode_leave(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    /// Inside the guard, new tensors are inference tensors and gradients are off; after it, both
    /// are as before, also when guards nest.
    #[test]
    fn inference_mode_is_on_only_inside_the_guard() {
        let before = Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu));
        assert!(!before.is_inference());
        {
            let _outer = InferenceMode::enter();
            let inside = &before * 2.0;
            assert!(inside.is_inference());
            {
                let _inner = InferenceMode::enter();
                assert!((&before + 1.0).is_inference());
            }
            assert!(
                (&before + 1.0).is_inference(),
                "leaving the inner guard kept the outer one's mode"
            );
            let w = Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
            assert!(!(&w * 2.0).requires_grad(), "no gradients in inference mode");
        }
        let after = &before * 2.0;
        assert!(!after.is_inference());
        let w = Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        assert!((&w * 2.0).requires_grad(), "gradients are back after the guard");
    }
}
