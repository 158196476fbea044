//! The training loop: fixed masks, validation-based selection, determinism.

mod common;

use cut::data::synth::{write_dataset, SynthConfig};
use cut::data::{Dataset, Split};
use cut::train::{train, TrainConfig};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

#[test]
fn masked_training_is_deterministic_and_selects_on_validation() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("d");
    write_dataset(
        &root,
        &SynthConfig {
            train: 10,
            test: 2,
            height: 32,
            width: 32,
            seed: 3,
        },
        2,
    )
    .unwrap();
    let ds = Dataset::open(&root, None, &cut::data::layout::reference_normalisation()).unwrap();
    let (model, params) = common::small_model();
    let tasks = model.tasks.clone();

    // Zero every other weight of a backbone conv and of a head conv.
    let mut masks = BTreeMap::new();
    for name in ["backbone.blocks.1.0.conv1.weight", "task1_fc1_c0.conv1.weight"] {
        let n = params[name].numel() as i64;
        let mask = Tensor::arange(n, (Kind::Int64, Device::Cpu))
            .remainder(2)
            .to_kind(Kind::Float)
            .view(params[name].size().as_slice());
        masks.insert(name.to_string(), mask);
    }
    let cfg = TrainConfig {
        schedule: cut::train::Schedule {
            seed: 11,
            steps: 6,
            lr: 1e-3,
            weight_decay: 1e-4,
            step_size: 3,
            gamma: 0.5,
            val_every: 2,
            freeze_norm: false,
        },
        batch: 4,
        lambdas: [("normal".to_string(), 20.0)].into_iter().collect(),
        device: Device::Cpu,
        only: None,
        inference_mode: false,
    };
    let run = || {
        train(
            &model,
            &params,
            &tasks,
            ds.split(Split::Train, 0.2).unwrap(),
            ds.split(Split::Val, 0.2).unwrap(),
            Some(&masks),
            &cfg,
            |_, _| {},
        )
        .unwrap()
    };
    let a = run();
    for (name, mask) in &masks {
        let w = &a.params[name];
        let off = w.masked_select(&mask.eq(0.0));
        assert_eq!(off.abs().max().double_value(&[]), 0.0, "{name}: pruned weights moved");
    }
    // Selection: the kept step is the one with the lowest logged validation loss.
    let (best_step, best_loss) = a
        .log
        .iter()
        .map(|e| (e.step, e.val_total.unwrap()))
        .fold((0, f64::INFINITY), |acc, (s, l)| if l < acc.1 { (s, l) } else { acc });
    assert_eq!((a.best_step, a.best_val_loss), (best_step, best_loss));
    assert_eq!(a.log.iter().map(|e| e.step).collect::<Vec<_>>(), [0, 2, 4, 6]);
    // The learning rate halves after step 3.
    assert_eq!(a.log[1].lr, 1e-3);
    assert_eq!(a.log[3].lr, 5e-4);

    let b = run();
    assert_eq!(a.best_step, b.best_step);
    for (name, t) in &a.params {
        assert!(
            t.equal(&b.params[name]),
            "{name} differs between two runs with one seed"
        );
    }
    if a.best_step > 0 {
        let moved = (&a.params["backbone.conv1.weight"] - &params["backbone.conv1.weight"])
            .abs()
            .max()
            .double_value(&[]);
        assert!(moved > 0.0);
    }
}

/// Bad training options are refused before any data is read or work done, as bad command lines.
#[test]
fn train_options_are_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["--lr", "NaN"], "--lr NaN must be a finite number >= 0"),
        (vec!["--batch", "0"], "--batch must be at least 1"),
        (vec!["--steps", "0"], "--steps must be positive"),
    ] {
        let o = assert_cmd::Command::cargo_bin("cut")
            .unwrap()
            .args(["train", "--tasks", "seg:segmentation:3", "--data"])
            .arg(dir.path().join("no-such-data"))
            .args(&args)
            .arg("-o")
            .arg(dir.path().join("m.safetensors"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim(), format!("cut: error: {needle}"));
    }
}
