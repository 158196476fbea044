//! What only a machine with a GPU can check: CUDA graph replays and the GPU's peak memory. CI has
//! no GPU, so these tests are ignored unless asked for (`cargo test --release --test cuda --
//! --ignored`), and then fail without a usable CUDA device. On a GPU machine without Rust, carry
//! the test binary (`cargo test --release --test cuda --no-run` prints its path) and run it there
//! with `--ignored`.

mod common;

use cut::device::cuda::{peak_allocated_bytes, reset_peak_memory, CapturedForward};
use cut::device::{resolve, DeviceChoice};
use cut::graph::interpreter::{forward, Mode, Params};
use cut::graph::passes::fold_batch_norms;
use tch::{Device, Kind, Tensor};

fn gpu() -> usize {
    match resolve(DeviceChoice::Auto).unwrap() {
        Device::Cuda(i) => i,
        other => panic!("these tests need a usable CUDA device; this machine offers {other:?}"),
    }
}

/// The small SceneNet with folded batch norms (so that convolutions run fused with their ReLUs),
/// recorded on one batch and replayed on another: each replay gives what an eager forward of the
/// same batch gives, and a batch of another shape is refused.
#[test]
#[ignore = "needs a CUDA device"]
fn a_replayed_forward_equals_the_eager_one() {
    let i = gpu();
    let device = Device::Cuda(i);
    let _guard = tch::no_grad_guard();
    let (model, params) = common::small_model();
    let params: Params = params.iter().map(|(k, t)| (k.clone(), t.to_device(device))).collect();
    let (graph, params, folded) = fold_batch_norms(&model.graph, &params).unwrap();
    assert!(folded > 0);
    let tasks = model.task_names();
    let [c, h, w] = model.graph.image_input().unwrap();
    let shape = [2, c as i64, h as i64, w as i64];
    tch::manual_seed(1);
    let recorded = Tensor::randn(shape, (Kind::Float, device));
    let other = Tensor::randn(shape, (Kind::Float, device)) * 3.0;
    let mut run = |x: &Tensor| -> anyhow::Result<Vec<Tensor>> {
        Ok(forward(&graph, &params, x, &tasks, Mode::Eval)?.into_values().collect())
    };
    let eager_other = run(&other).unwrap();
    let eager_recorded = run(&recorded).unwrap();
    let mut captured = CapturedForward::capture(&recorded, 2, &mut run).unwrap();
    for (x, eager) in [
        (&other, &eager_other),
        (&recorded, &eager_recorded),
        (&other, &eager_other),
    ] {
        let replayed: Vec<Tensor> = captured.run(x).unwrap().iter().map(|t| t.copy()).collect();
        assert_eq!(replayed.len(), eager.len());
        for (r, e) in replayed.iter().zip(eager) {
            assert_eq!(r.size(), e.size());
            let diff = (r - e).abs().max().double_value(&[]);
            let scale = e.abs().max().double_value(&[]).max(1e-6);
            assert!(
                diff <= 1e-5 * scale,
                "replay differs from eager by {diff} (largest {scale})"
            );
        }
    }
    let wrong = Tensor::zeros([1, shape[1], shape[2], shape[3]], (Kind::Float, device));
    let err = captured.run(&wrong).expect_err("another shape is refused");
    assert!(err.to_string().contains("replays one input shape"), "{err}");
}

/// A 64 MiB tensor raises the allocator's peak by at least 64 MiB, and the peak outlives it.
#[test]
#[ignore = "needs a CUDA device"]
fn peak_memory_counts_an_allocation() {
    let i = gpu();
    reset_peak_memory(i).unwrap();
    let before = peak_allocated_bytes(i).unwrap();
    let bytes = 64 << 20;
    let t = Tensor::zeros([bytes], (Kind::Uint8, Device::Cuda(i)));
    tch::Cuda::synchronize(i as i64);
    drop(t);
    let after = peak_allocated_bytes(i).unwrap();
    assert!(after >= before + bytes as u64, "peak {before} -> {after}");
}
