//! Output files: checks made before any work starts, and atomic writes.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder a file path lives in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The absolute path a (possibly not yet existing) file would have.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    Some(folder(path).canonicalize().ok()?.join(path.file_name()?))
}

/// Checks an output path before any work is done: its folder exists, it is not one of the inputs,
/// and it does not exist unless `overwrite`.
pub fn check_output(path: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    let shown = path.display();
    let parent = folder(path);
    if !parent.is_dir() {
        bail!("{shown}: output folder {} does not exist", parent.display());
    }
    let out = resolved(path).ok_or_else(|| anyhow!("{shown}: not a file path"))?;
    for input in inputs {
        if resolved(input).as_deref() == Some(out.as_path()) {
            bail!("{shown}: refusing to overwrite the input file; name another output with -o");
        }
    }
    if out.is_dir() {
        bail!("{shown}: is a directory");
    }
    // A device node, FIFO or socket is never replaced, --force or not.
    check_target(&out).map_err(|e| anyhow!("{shown}: {e}"))?;
    if out.exists() && !overwrite {
        bail!("{shown}: already exists; pass --force to replace it");
    }
    // Writable now, not only when the work is done. Under the registry's lock, so that a signal
    // handler (which takes it first) never finds the probe file made and not yet removed.
    let _live = live();
    tempfile::Builder::new()
        .prefix(".cut-check-")
        .tempfile_in(parent)
        .map_err(|e| anyhow!("{shown}: cannot write in the output folder {} ({e})", parent.display()))?;
    Ok(())
}

/// Size limits of the files `cut` reads whole, by what they hold: far above any real file, low
/// enough that a wrong path fails at once instead of filling memory.
pub mod limit {
    /// A small JSON document: a devices file, a baseline, a configuration, labels, a dataset index.
    pub const JSON: u64 = 64 << 20;
    /// A `tokenizer.json` (the largest multilingual ones are tens of MB).
    pub const TOKENIZER: u64 = 512 << 20;
    /// A text dataset file (`train.jsonl`), read whole.
    pub const TEXT_DATA: u64 = 8 << 30;
    /// One image of a dataset.
    pub const IMAGE: u64 = 512 << 20;
}

/// Reads a whole input file through the same guard as checkpoints: a regular file only (opening a
/// FIFO blocks; a device such as /dev/zero never ends) and at most `limit` bytes. `what` names it
/// in errors ("the dataset index").
pub fn read_input(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{shown}: cannot read {what} ({e})"))?;
    if meta.is_dir() {
        bail!("{shown}: is a directory, not a file");
    }
    if !meta.is_file() {
        bail!("{shown}: not a regular file (a FIFO, device or socket)");
    }
    let too_big = || anyhow!("{shown}: larger than {} MB, more than such a file holds", limit >> 20);
    if meta.len() > limit {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{shown}: cannot read {what} ({e})"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file growing while it is read stops at the limit too.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("{shown}: cannot read {what} ({e})"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// [`read_input`] of a UTF-8 text file.
pub fn read_input_text(path: &Path, limit: u64, what: &str) -> Result<String> {
    String::from_utf8(read_input(path, limit, what)?).map_err(|e| {
        anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The temporaries staged and not yet placed, for [`remove_temporaries`]. Held across a whole
/// [`Outputs::commit`], so a signal lands before or after a commit, never inside one.
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every temporary this process staged and has not placed: for a SIGINT or SIGTERM
/// handler, which then exits. Waits for a commit under way to finish.
pub fn remove_temporaries() -> usize {
    let mut live = live();
    let n = live.len();
    for p in live.drain(..) {
        let _ = std::fs::remove_file(p);
    }
    n
}

/// A staged temporary, registered for [`remove_temporaries`] while it exists.
struct Staged(Option<tempfile::NamedTempFile>);

impl Staged {
    /// Renames the temporary to `path` (refusing to replace a file unless `overwrite`); the
    /// caller holds the registry.
    fn place(mut self, path: &Path, overwrite: bool, live: &mut Vec<PathBuf>) -> Result<(), tempfile::PersistError> {
        let tmp = self.0.take().expect("placed once");
        let tmp_path = tmp.path().to_path_buf();
        if let Err(error) = check_target(path) {
            live.retain(|p| *p != tmp_path);
            return Err(tempfile::PersistError { error, file: tmp });
        }
        let result = if overwrite {
            tmp.persist(path).map(|_| ())
        } else {
            tmp.persist_noclobber(path).map(|_| ())
        };
        live.retain(|p| *p != tmp_path);
        // On failure the temporary is back in the error's `file`; dropping it removes it.
        result
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.0.take() {
            let path = tmp.path().to_path_buf();
            drop(tmp);
            live().retain(|p| *p != path);
        }
    }
}

/// A temporary file beside `path`, holding `bytes`, synced, readable like any output. It is
/// registered for [`remove_temporaries`] in the same step that creates it (under the registry's
/// lock, which the signal handler takes first), so a signal at any moment of the write finds it.
fn staged_file(path: &Path, bytes: &[u8]) -> Result<Staged> {
    staged_file_with(path, &mut |w| Ok(w.write_all(bytes)?))
}

/// [`staged_file`], its contents written by `write` through a buffer (a model streamed tensor by
/// tensor, never whole in memory).
fn staged_file_with(path: &Path, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<Staged> {
    let shown = path.display();
    let parent = folder(path);
    let staged = {
        let mut live = live();
        let tmp = tempfile::Builder::new()
            .prefix(".cut-")
            .suffix(".tmp")
            .tempfile_in(parent)
            .with_context(|| format!("{shown}: cannot create a temporary file in {}", parent.display()))?;
        live.push(tmp.path().to_path_buf());
        Staged(Some(tmp))
    };
    let file = staged.0.as_ref().expect("just made").as_file();
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    write(&mut writer).with_context(|| format!("{shown}: write failed"))?;
    writer.flush().with_context(|| format!("{shown}: write failed"))?;
    drop(writer);
    // tempfile creates 0600; a model file is an ordinary artefact, readable like any other output.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("{shown}: cannot set permissions"))?;
    file.sync_all().with_context(|| format!("{shown}: sync failed"))?;
    Ok(staged)
}

/// Refuses to rename onto anything but a regular file (or a new path): a device node or FIFO
/// that appeared after [`check_output`] is not replaced.
fn check_target(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(std::io::Error::other(
            "not a regular file (a device, FIFO or socket); outputs are regular files",
        )),
        _ => Ok(()),
    }
}

/// Writes bytes to a temporary file in the target folder and renames it into place, so a reader
/// never sees a half-written file and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let staged = staged_file(path, bytes)?;
    let mut live = live();
    staged
        .place(path, true, &mut live)
        .map_err(|e| anyhow!("{}: cannot rename into place ({})", path.display(), e.error))?;
    Ok(())
}

/// The outputs of one run, written as one: each is staged in a temporary file beside its target,
/// and only [`Outputs::commit`] renames them into place, after every one is complete. Dropping the
/// set without committing removes the temporaries. Without `overwrite`, a target that appeared
/// since the run started is not replaced: the commit fails instead, and removes what it placed.
pub struct Outputs {
    /// Each target, its temporary, and whether it may replace an existing file.
    staged: Vec<(PathBuf, Staged, bool)>,
    overwrite: bool,
}

impl Outputs {
    pub fn new(overwrite: bool) -> Outputs {
        Outputs {
            staged: Vec::new(),
            overwrite,
        }
    }

    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.stage_with(path, bytes, self.overwrite)
    }

    /// [`Outputs::stage`], replacing an existing file when `overwrite` whatever the set's rule (a
    /// log that each run rewrites).
    pub fn stage_with(&mut self, path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
        let tmp = staged_file(path, bytes)?;
        self.staged.push((path.to_path_buf(), tmp, overwrite));
        Ok(())
    }

    /// [`Outputs::stage`] for contents `write` streams into the temporary.
    pub fn stage_streamed(&mut self, path: &Path, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        let tmp = staged_file_with(path, write)?;
        self.staged.push((path.to_path_buf(), tmp, self.overwrite));
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        let mut live = live();
        let mut placed: Vec<PathBuf> = Vec::new();
        let mut staged = self.staged.into_iter();
        while let Some((path, tmp, overwrite)) = staged.next() {
            if let Err(e) = tmp.place(&path, overwrite, &mut live) {
                let why = if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    "it appeared while this run worked; pass --force to replace it".to_string()
                } else {
                    e.error.to_string()
                };
                // The rest go while the registry is held (their drop would wait for it).
                for (_, mut rest, _) in staged {
                    if let Some(tmp) = rest.0.take() {
                        live.retain(|p| p != tmp.path());
                    }
                }
                for p in &placed {
                    let _ = std::fs::remove_file(p);
                }
                bail!("{}: cannot move into place ({why})", path.display());
            }
            placed.push(path);
        }
        Ok(())
    }
}

/// `out` with `.safetensors` replaced by `suffix` (the reports beside a model).
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    out.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn outputs_appear_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("a.report.json"));
        // A failure while staging (the third target's folder is missing) leaves nothing behind.
        let mut outputs = Outputs::new(false);
        outputs.stage(&a, b"model").unwrap();
        outputs.stage(&b, b"report").unwrap();
        assert_eq!(names(dir.path()).len(), 2, "two temporaries, no targets yet");
        assert!(!a.exists() && !b.exists());
        let err = outputs
            .stage(&dir.path().join("missing/a.report.md"), b"md")
            .unwrap_err();
        assert!(err.to_string().contains("cannot create a temporary file"), "{err}");
        drop(outputs);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));

        // A commit places every file.
        let mut outputs = Outputs::new(false);
        outputs.stage(&a, b"model").unwrap();
        outputs.stage(&b, b"report").unwrap();
        outputs.commit().unwrap();
        assert_eq!(names(dir.path()), ["a.report.json", "a.safetensors"]);
        assert_eq!(std::fs::read(&a).unwrap(), b"model");

        // Without overwrite, a target that appeared meanwhile is not replaced, and what the commit
        // placed before it is removed again.
        let c = dir.path().join("c.safetensors");
        let mut outputs = Outputs::new(false);
        outputs.stage(&c, b"new model").unwrap();
        outputs.stage(&b, b"new report").unwrap();
        let err = outputs.commit().unwrap_err().to_string();
        assert!(
            err.contains("a.report.json: cannot move into place (it appeared"),
            "{err}"
        );
        assert_eq!(names(dir.path()), ["a.report.json", "a.safetensors"]);
        assert_eq!(std::fs::read(&b).unwrap(), b"report");

        // With overwrite, the commit replaces.
        let mut outputs = Outputs::new(true);
        outputs.stage(&b, b"newer").unwrap();
        outputs.commit().unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"newer");
        assert_eq!(names(dir.path()), ["a.report.json", "a.safetensors"]);

        // What a signal handler does: the staged temporaries go, placed files stay. (In this test,
        // not another: the registry is the process's, and tests run side by side.)
        let mut outputs = Outputs::new(true);
        outputs.stage(&dir.path().join("x.safetensors"), b"x").unwrap();
        outputs.stage(&dir.path().join("x.report.json"), b"x").unwrap();
        assert_eq!(names(dir.path()).len(), 4);
        assert_eq!(remove_temporaries(), 2);
        assert_eq!(names(dir.path()), ["a.report.json", "a.safetensors"]);
        assert!(outputs.commit().is_err(), "nothing left to place");
        assert_eq!(names(dir.path()), ["a.report.json", "a.safetensors"]);

        // The output folder must be writable at the start: /proc exists but takes no files, not
        // even from root, who may write anywhere else.
        let err = check_output(Path::new("/proc/m.safetensors"), &[], false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/proc/m.safetensors: cannot write in the output folder /proc ("),
            "{err}"
        );
    }
}
