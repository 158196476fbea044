//! Checkpoint I/O through the library: round trips, inference from reference names, atomic writes.

mod common;

use common::*;
use cut::checkpoint::metadata::{read_provenance, GRAPH_KEY};
use cut::checkpoint::writer::save_model;
use cut::checkpoint::{Checkpoint, DType, LoadOptions};
use cut::fsio::{check_output, write_atomic};
use cut::graph::interpreter::{forward, Mode};
use cut::graph::TaskKind;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[test]
fn metadata_and_tensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (model, params) = small_model();
    let path = write_small(dir.path(), "m.safetensors", DType::F32);
    let ckpt = Checkpoint::open(&path).unwrap();
    let loaded = ckpt.model(&LoadOptions::default()).unwrap();
    assert!(!loaded.inferred);
    assert_eq!(loaded.model, model);
    assert_eq!(read_provenance(&ckpt.metadata).unwrap().command, "test");
    let back = ckpt.load_params(&model, Device::Cpu).unwrap();
    for (name, t) in &params {
        assert!(back[name].equal(t), "{name}");
    }
    // The safetensors crate reads what we write.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), params.len());
}

#[test]
fn half_precision_files_load_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (model, params) = small_model();
    for dtype in [DType::F16, DType::BF16] {
        let path = write_small(dir.path(), &format!("m-{dtype}.safetensors"), dtype);
        let ckpt = Checkpoint::open(&path).unwrap();
        assert_eq!(ckpt.entry("backbone.conv1.weight").unwrap().dtype, dtype);
        assert_eq!(
            ckpt.entry("backbone.bn1.num_batches_tracked").unwrap().dtype,
            DType::I64
        );
        let back = ckpt.load_params(&model, Device::Cpu).unwrap();
        let w = &back["backbone.conv1.weight"];
        assert_eq!(w.kind(), Kind::Float);
        let rel = (w - &params["backbone.conv1.weight"]).abs().max().double_value(&[])
            / params["backbone.conv1.weight"].abs().max().double_value(&[]);
        assert!(rel < 1e-2, "{dtype}: {rel}");
        assert!(rel > 0.0, "{dtype} should lose precision");
    }
}

#[test]
fn same_model_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_small(dir.path(), "a.safetensors", DType::F32);
    let b = write_small(dir.path(), "b.safetensors", DType::F32);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn reference_state_dict_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_bare(dir.path(), "ref.safetensors");
    let ckpt = Checkpoint::open(&path).unwrap();
    assert!(!ckpt.metadata.contains_key(GRAPH_KEY));

    let loaded = ckpt.model(&LoadOptions::default()).unwrap();
    assert!(loaded.inferred);
    let names: Vec<&str> = loaded.model.task_names();
    assert_eq!(names, ["task1", "task2", "task3"]);
    let kinds: Vec<TaskKind> = loaded.model.tasks.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [TaskKind::Segmentation, TaskKind::Normal, TaskKind::Depth]);
    // The family records the reference's input, so image files need no flags.
    assert_eq!(
        loaded.model.graph.image_normalisation(),
        Some(&cut::data::layout::reference_normalisation())
    );
    assert!(
        loaded.warnings[0].contains("guessed from output widths"),
        "{:?}",
        loaded.warnings
    );

    // Same graph as the one that made the tensors, up to task names.
    let (original, params) = small_model();
    assert_eq!(loaded.model.graph.nodes.len(), original.graph.nodes.len());
    let opts = LoadOptions {
        task_names: Some(vec!["seg".into(), "normal".into(), "depth".into()]),
        task_kinds: Some(vec![TaskKind::Segmentation, TaskKind::Normal, TaskKind::Depth]),
        ..Default::default()
    };
    let named = ckpt.model(&opts).unwrap();
    assert!(named.warnings.is_empty());
    assert_eq!(named.model, original);

    // And it computes the same outputs.
    let loaded_params = ckpt.load_params(&named.model, Device::Cpu).unwrap();
    let x = Tensor::randn([1, 3, 40, 40], (Kind::Float, Device::Cpu));
    let a = forward(&original.graph, &params, &x, &["depth"], Mode::Eval).unwrap();
    let b = forward(&named.model.graph, &loaded_params, &x, &["depth"], Mode::Eval).unwrap();
    let diff = (&a["depth"] - &b["depth"]).abs().max().double_value(&[]);
    assert!(diff == 0.0, "max difference {diff}");

    let wrong = LoadOptions {
        task_names: Some(vec!["a".into()]),
        ..Default::default()
    };
    let err = format!("{:#}", ckpt.model(&wrong).err().unwrap());
    assert!(
        err.contains("--task-names gives 1 names but the checkpoint has 3 task heads"),
        "{err}"
    );
}

#[test]
fn mismatched_tensors_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_small(dir.path(), "m.safetensors", DType::F32);
    let ckpt = Checkpoint::open(&path).unwrap();
    let mut model = ckpt.model(&LoadOptions::default()).unwrap().model;
    // Claim a wider stem than the file has.
    if let cut::graph::Op::Conv2d(c) = &mut model.graph.nodes[1].op {
        c.out_channels = 16;
    }
    let err = format!("{:#}", ckpt.check_against(&model, &[]).unwrap_err());
    assert!(
        err.contains("'backbone.conv1.weight' expected [16, 3, 7, 7], found [8, 3, 7, 7]"),
        "{err}"
    );
}

#[test]
fn outputs_are_checked_and_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_small(dir.path(), "in.safetensors", DType::F32);
    let err = check_output(&input, &[&input], true).unwrap_err().to_string();
    assert!(err.contains("refusing to overwrite the input"), "{err}");
    // The same file reached through another spelling is still the input.
    let other = dir.path().join(".").join("in.safetensors");
    assert!(check_output(&other, &[&input], true).is_err());
    let err = check_output(&dir.path().join("missing/out.safetensors"), &[], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let existing = dir.path().join("exists.bin");
    std::fs::write(&existing, b"x").unwrap();
    assert!(check_output(&existing, &[], false)
        .unwrap_err()
        .to_string()
        .contains("--force"));
    check_output(&existing, &[], true).unwrap();

    write_atomic(&existing, b"new contents").unwrap();
    assert_eq!(std::fs::read(&existing).unwrap(), b"new contents");
    // No temporary files are left behind, after success or failure.
    assert!(write_atomic(&dir.path().join("missing/x"), b"y").is_err());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".cut-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (model, mut params) = small_model();
    params.remove("backbone.conv1.weight");
    let target = dir.path().join("never.safetensors");
    assert!(save_model(&target, &model, &params, DType::F32, false, None).is_err());
    assert!(!target.exists());
}

/// Values and metadata no model should have are refused at load, naming the file and the tensor
/// or task; `cut inspect` reports bad values instead of refusing; a FIFO is refused, not waited on.
#[test]
fn bad_values_and_mismatched_metadata_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cut_bin = || assert_cmd::Command::cargo_bin("cut").unwrap();
    let load = |path: &Path| -> anyhow::Result<()> {
        let ckpt = Checkpoint::open(path)?;
        let model = ckpt.model(&LoadOptions::default())?.model;
        ckpt.load_params(&model, Device::Cpu).map(|_| ())
    };

    // A NaN weight, and a negative running variance.
    let (model, mut params) = small_model();
    let _ = params
        .get_mut("backbone.conv1.weight")
        .unwrap()
        .get(0)
        .get(0)
        .fill_(f64::NAN);
    save_model(&d.join("nan.safetensors"), &model, &params, DType::F32, false, None).unwrap();
    let err = load(&d.join("nan.safetensors")).unwrap_err().to_string();
    assert!(
        err.ends_with("nan.safetensors: tensor 'backbone.conv1.weight' holds non-finite values (NaN or infinity)"),
        "{err}"
    );
    let o = cut_bin()
        .arg("inspect")
        .arg(d.join("nan.safetensors"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("cut: warning: tensor 'backbone.conv1.weight' holds non-finite values"),
        "{stderr}"
    );

    let (model, mut params) = small_model();
    let _ = params.get_mut("backbone.bn1.running_var").unwrap().get(2).fill_(-0.5);
    save_model(&d.join("var.safetensors"), &model, &params, DType::F32, false, None).unwrap();
    let err = load(&d.join("var.safetensors")).unwrap_err().to_string();
    assert!(
        err.ends_with("tensor 'backbone.bn1.running_var' is a batch-norm running variance with negative values"),
        "{err}"
    );
    let o = cut_bin()
        .arg("bench")
        .arg(d.join("var.safetensors"))
        .args(["--runs", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);

    // A task list that does not fit its heads: seg is listed with one class more than its head has.
    let path = write_small(d, "tasks.safetensors", DType::F32);
    patch_metadata(&path, "cut.tasks", |t| {
        t.replace(
            r#""name":"seg","kind":"segmentation","outputs":5"#,
            r#""name":"seg","kind":"segmentation","outputs":6"#,
        )
    });
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(
        err.contains("task 'seg' is listed with 6 outputs, but its head"),
        "{err}"
    );
    assert!(err.contains("produces 5"), "{err}");
    // ... or its kind: a normal task with 4 outputs.
    let o = cut_bin()
        .args(["new", "--tasks", "n:normal:4", "-o"])
        .arg(d.join("n.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("task 'n' (normal) has 4 outputs; normal tasks have 3"));
    // A head annotation naming a task the graph has no output for.
    let path = write_small(d, "head.safetensors", DType::F32);
    patch_metadata(&path, "cut.graph", |g| {
        g.replacen(r#""head":"seg""#, r#""head":"nope""#, 1)
    });
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(
        err.contains("is in the head of task 'nope', which the graph has no output for"),
        "{err}"
    );

    // A header that names a tensor, or a metadata field, twice (serde would keep the last).
    let twice = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let err = Checkpoint::open(raw_file(d, "twice.safetensors", twice, 8))
        .err()
        .unwrap()
        .to_string();
    assert!(err.ends_with("twice.safetensors: the header names 'x' twice"), "{err}");
    let meta = r#"{"__metadata__":{"cut.layout":"dense","cut.layout":"packed"},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let err = Checkpoint::open(raw_file(d, "meta.safetensors", meta, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.ends_with("meta.safetensors: the header names '__metadata__.cut.layout' twice"),
        "{err}"
    );
    assert!(Checkpoint::open(write_small(d, "fine.safetensors", DType::F32)).is_ok());

    // Overlapping offsets name the first tensor in file order, the same every run (the crate's hash
    // map named either).
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"c":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#;
    let path = raw_file(d, "overlap.safetensors", overlap, 16);
    for _ in 0..5 {
        let err = Checkpoint::open(&path).err().unwrap().to_string();
        assert!(
            err.ends_with("tensor 'b' starts at byte 4 of the data, where the tensors before it end at 8: it overlaps the tensor before it"),
            "{err}"
        );
    }

    // A negative size in the graph names its node and field; a shape whose size overflows names
    // its tensor.
    let path = write_small(d, "neg.safetensors", DType::F32);
    patch_metadata(&path, "cut.graph", |g| {
        g.replacen(r#""in_channels":3"#, r#""in_channels":-3"#, 1)
    });
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(
        err.contains("graph node 'backbone.conv1' has in_channels -3; sizes and counts cannot be negative"),
        "{err}"
    );
    let huge = r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}"#;
    let err = Checkpoint::open(raw_file(d, "huge.safetensors", huge, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tensor 'x' has shape [4294967296, 4294967296, 4], whose byte count overflows"),
        "{err}"
    );

    // A packed mask that keeps one element more than the values stored: inspect refuses it as
    // loading does (it only counted zeros before).
    let packed = d.join("packed.safetensors");
    let (model, mut params) = small_model();
    let _ = params.get_mut("backbone.conv1.weight").unwrap().get(0).fill_(0.0);
    save_model(&packed, &model, &params, DType::F32, true, None).unwrap();
    let bytes = std::fs::read(&packed).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header["backbone.conv1.weight.mask"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    let mut bytes = bytes.clone();
    bytes[8 + n + start] |= 1; // element 0 was zeroed, so its bit was clear
    std::fs::write(&packed, &bytes).unwrap();
    let o = cut_bin().arg("inspect").arg(&packed).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("tensor 'backbone.conv1.weight'") && stderr.contains("values are stored"),
        "{stderr}"
    );

    // A reader that stops early: cut ends quietly, as Unix tools do (it panicked before).
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cut"))
        .arg("inspect")
        .arg(write_small(d, "many.safetensors", DType::F32))
        .arg("--tensors")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));

    // Values libtorch would panic on, refused at load: a dropout probability of 2, a negative eps.
    let path = write_small(d, "drop.safetensors", DType::F32);
    patch_metadata(&path, "cut.graph", |g| g.replacen(r#""p":0.5"#, r#""p":2.0"#, 1));
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(err.contains("has a dropout probability of 2, outside 0..1"), "{err}");
    let path = write_small(d, "eps.safetensors", DType::F32);
    patch_metadata(&path, "cut.graph", |g| {
        g.replacen(r#""eps":0.00001"#, r#""eps":-0.00001"#, 1)
    });
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(
        err.contains("has a batch-norm eps of -0.00001, not a finite number >= 0"),
        "{err}"
    );

    // A FIFO: refused at once (opening one would wait for a writer).
    let fifo = d.join("pipe.safetensors");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let o = cut_bin()
        .arg("inspect")
        .arg(&fifo)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a regular file (a FIFO, device or socket)"));
}
