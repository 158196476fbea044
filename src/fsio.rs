//! Output files: checks made before any work starts, and atomic writes.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The absolute path a (possibly not yet existing) file would have.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(path.file_name()?))
}

/// Checks an output path before any work is done: its folder exists, it is not one of the inputs,
/// and it does not exist unless `overwrite`.
pub fn check_output(path: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
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
    if out.exists() && !overwrite {
        bail!("{shown}: already exists; pass --force to replace it");
    }
    Ok(())
}

/// Writes bytes to a temporary file in the target folder and renames it into place, so a reader
/// never sees a half-written file and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cut-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .with_context(|| format!("{shown}: cannot create a temporary file in {}", parent.display()))?;
    tmp.write_all(bytes).with_context(|| format!("{shown}: write failed"))?;
    // tempfile creates 0600; a model file is an ordinary artefact, readable like any other output.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("{shown}: cannot set permissions"))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("{shown}: sync failed"))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("{shown}: cannot rename into place ({})", e.error))?;
    Ok(())
}
