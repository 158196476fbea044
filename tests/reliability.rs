//! What a run leaves and what it reads: a signal at any moment leaves no temporary behind, an
//! output is never written over a device node or FIFO, and every file `cut` reads besides the
//! checkpoint goes through the same guard (regular files only).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = "assets/demo.safetensors";
const DEMO_DATA: &str = "assets/demo-data";

fn cut() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("cut").unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain libc call on a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// The one-line error of a command that must fail (within a minute: a FIFO once blocked forever).
fn fails(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.timeout(Duration::from_secs(60)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure; stderr: {err}");
    assert!(out.status.code().is_some(), "killed by the timeout: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

/// `cut new` of a model of about 90 MB: its write (and fsync) is long enough to be hit.
fn new_large(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cut"));
    c.args(["new", "--tasks", "seg:segmentation:13,normal:normal,depth:depth"])
        .args(["--head-width", "256", "--force", "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Sends `signal` to a running `cut` `after` its start (or once a temporary appears in `dir`, when
/// `on_temporary`), and returns its exit code.
fn interrupt(mut cmd: Command, dir: &Path, signal: i32, after: Duration, on_temporary: bool) -> Option<i32> {
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    if on_temporary {
        while !names(dir).iter().any(|n| n.ends_with(".tmp")) && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    std::thread::sleep(after);
    // SAFETY: a signal to our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap().code()
}

/// SIGTERM or SIGINT at many moments of a run that writes a large file (before, while the
/// temporary is written and synced, after) leaves either nothing or the complete output, and never
/// a temporary. Before, 22 of 23 such signals left a `.cut-*.tmp`.
#[test]
fn a_signal_at_any_moment_leaves_no_temporary() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("big.safetensors");
    let start = Instant::now();
    assert!(new_large(&out).status().unwrap().success());
    let whole = start.elapsed();
    let complete = std::fs::read(&out).unwrap();
    assert!(complete.len() > 50 << 20, "{} bytes", complete.len());
    std::fs::remove_file(&out).unwrap();

    let mut moments: Vec<(Duration, bool)> = (1..=8).map(|k| (whole * k / 9, false)).collect();
    moments.extend([0, 1, 3, 10, 30, 100].map(|ms| (Duration::from_millis(ms), true)));
    let mut interrupted = 0;
    for (i, (after, on_temporary)) in moments.into_iter().enumerate() {
        let signal = if i % 2 == 0 { libc::SIGTERM } else { libc::SIGINT };
        let code = interrupt(new_large(&out), t.path(), signal, after, on_temporary);
        let left = names(t.path());
        let at = format!("signal {signal} at {after:?} (temporary seen first: {on_temporary}), exit {code:?}");
        assert!(left.iter().all(|n| !n.starts_with(".cut-")), "{at}: left {left:?}");
        match code {
            Some(130) => interrupted += 1,
            // Finished before the signal, or killed by it before `main` installed the handler
            // (while libtorch loads), when nothing is written yet.
            Some(0) | None => {}
            other => panic!("{at}: unexpected exit {other:?}"),
        }
        if out.exists() {
            assert!(std::fs::read(&out).unwrap() == complete, "{at}: a partial output");
            std::fs::remove_file(&out).unwrap();
        }
    }
    assert!(interrupted >= 8, "only {interrupted} runs were interrupted");
}

/// An output may only be a regular file or a new path: a device node (through a link) or a FIFO
/// named with `-o --force` is refused before work starts and stays what it was.
#[test]
fn outputs_never_replace_a_device_node_or_fifo() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("null.onnx");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    let fifo = t.path().join("pipe.onnx");
    mkfifo(&fifo);
    for target in [&link, &fifo] {
        let err = fails(cut().args(["export", DEMO, "--force", "-o"]).arg(target));
        assert!(err.contains("not a regular file (a device, FIFO or socket)"), "{err}");
        let err = fails(
            cut()
                .args([
                    "prune",
                    "--tasks",
                    "seg",
                    DEMO,
                    "--finetune-steps",
                    "0",
                    "--force",
                    "-o",
                ])
                .arg(target),
        );
        assert!(err.contains("not a regular file"), "{err}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(names(t.path()), ["null.onnx", "pipe.onnx"], "nothing else written");
}

/// A copy of the demo dataset's index folder with `index` replaced by a FIFO.
fn data_with_fifo_index(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    for sub in ["train", "test"] {
        std::os::unix::fs::symlink(Path::new(DEMO_DATA).canonicalize().unwrap().join(sub), data.join(sub)).unwrap();
    }
    mkfifo(&data.join("nyu_v2_3task.json"));
    data
}

/// Every file `cut` reads besides the checkpoint refuses a FIFO (which blocked forever) and a
/// device (/dev/zero was read until memory ran out), naming the file.
#[test]
fn every_input_file_is_guarded() {
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo.json");
    mkfifo(&fifo);
    for bad in [fifo.as_path(), Path::new("/dev/zero")] {
        let shown = bad.display().to_string();
        let cases: Vec<(&str, assert_cmd::Command)> = vec![
            ("plan --devices", {
                let mut c = cut();
                c.args(["plan", DEMO, "--devices"]).arg(bad);
                c
            }),
            ("eval --baseline", {
                let mut c = cut();
                c.args(["eval", DEMO, "--data", DEMO_DATA, "--baseline"]).arg(bad);
                c
            }),
            ("new --config", {
                let mut c = cut();
                c.args(["new", "--config"])
                    .arg(bad)
                    .arg("-o")
                    .arg(t.path().join("m.safetensors"));
                c
            }),
        ];
        for (what, mut cmd) in cases {
            let err = fails(&mut cmd);
            assert!(
                err.contains(&format!("{shown}: not a regular file")),
                "{what} {shown}: {err}"
            );
        }
    }
    let data = data_with_fifo_index(t.path());
    let err = fails(cut().args(["eval", DEMO, "--data"]).arg(&data));
    assert!(err.contains("nyu_v2_3task.json: not a regular file"), "{err}");

    // A text dataset whose train.jsonl is a FIFO.
    let text = t.path().join("text");
    std::fs::create_dir(&text).unwrap();
    std::fs::copy("tests/fixtures/text/data/test.jsonl", text.join("test.jsonl")).unwrap();
    mkfifo(&text.join("train.jsonl"));
    let err = fails(
        cut()
            .args(["eval", "tests/fixtures/text/bert"])
            .args(["--task-kinds", "pos:token,mood:sequence,topic:sequence-mean", "--data"])
            .arg(&text),
    );
    assert!(err.contains("train.jsonl: not a regular file"), "{err}");
}

/// Numbers that passed unchecked: a zero fixed batch in ONNX, a one-class segmentation head
/// (mIoU 1.0 whatever the model does), an unknown graph format, MACs past 2^64, and calibration
/// batches far beyond the data.
#[test]
fn figures_are_honest() {
    let t = tempfile::tempdir().unwrap();
    let onnx = t.path().join("m.onnx");
    let out = cut()
        .args(["export", DEMO, "--batch", "0", "-o"])
        .arg(&onnx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch 0: a fixed batch size must be at least 1"));
    assert!(!onnx.exists());

    let copy = t.path().join("demo.safetensors");
    let patched = |edit: &dyn Fn(&str) -> String, key: &str| {
        std::fs::copy(DEMO, &copy).unwrap();
        common::patch_metadata(&copy, key, edit);
    };
    patched(
        &|tasks: &str| {
            let mut v: serde_json::Value = serde_json::from_str(tasks).unwrap();
            for t in v.as_array_mut().unwrap() {
                if t["name"] == "depth" {
                    t["kind"] = "segmentation".into();
                }
            }
            v.to_string()
        },
        "cut.tasks",
    );
    let err = fails(cut().arg("eval").arg(&copy).args(["--data", DEMO_DATA]));
    assert!(
        err.contains("task 'depth' (segmentation) has 1 output; a segmentation head needs at least two classes"),
        "{err}"
    );
    for (format, want) in [
        ("2", "graph format 2 declares 'inputs'; 'input' is format 1's form"),
        ("0", "has format 0, not a version cut knows"),
        ("7", "has format 7, newer than this cut reads"),
    ] {
        patched(
            &|g: &str| g.replacen("\"format\":1", &format!("\"format\":{format}"), 1),
            "cut.graph",
        );
        let err = fails(cut().arg("inspect").arg(&copy));
        assert!(err.contains(want), "format {format}: {err}");
    }

    let huge = ["inspect", DEMO, "--input", "3x99999999999x99999999999"];
    let out = cut().args(huge).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("overflow"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&cut().args(huge).arg("--json").output().unwrap().stdout).unwrap();
    assert_eq!(json["total"]["macs"], "overflow", "{}", json["total"]);

    let pruned = t.path().join("p.safetensors");
    let out = cut()
        .args(["prune", "--tasks", "seg,depth", DEMO, "--data", DEMO_DATA])
        .args(["--calib-batches", "1000000000", "--finetune-steps", "0", "-o"])
        .arg(&pruned)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "--calib-batches 1000000000: the train split holds 135 samples, 16 batches of 8; scoring on those 16"
        ),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("p.report.json")).unwrap()).unwrap();
    assert_eq!(report["settings"]["calib_batches"], 16);
    // The default (20) fits the data without a word.
    let out = cut()
        .args([
            "prune",
            "--tasks",
            "seg,depth",
            DEMO,
            "--data",
            DEMO_DATA,
            "--finetune-steps",
            "0",
            "--force",
            "-o",
        ])
        .arg(&pruned)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--calib-batches"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("p.report.json")).unwrap()).unwrap();
    assert_eq!(report["settings"]["calib_batches"], 16);
}
