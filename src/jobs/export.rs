//! `cut export`: a model as ONNX (for on-device runtimes) or as a Hugging Face folder.

use crate::checkpoint::{hf_folder, Checkpoint, LoadOptions};
use crate::fsio;
use crate::graph::{Model, Params};
use crate::onnx::ExportOptions;
use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};

/// What to write.
#[derive(Clone, Debug)]
pub enum ExportFormat {
    /// One .onnx file (plus OUT.data when the weights pass 2 GiB).
    Onnx(ExportOptions),
    /// A Hugging Face model folder (text encoders): model.safetensors, config.json,
    /// tokenizer.json, labels.json.
    HfFolder,
}

/// Everything `cut export` was asked.
#[derive(Clone, Debug)]
pub struct ExportJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// Export only these tasks' heads (all when `None`).
    pub tasks: Option<Vec<String>>,
    pub format: ExportFormat,
    /// The .onnx file, or the folder for a Hugging Face folder.
    pub out: PathBuf,
    pub force: bool,
}

/// What `cut export` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportDone {
    pub wrote: PathBuf,
    /// "onnx" or "hf-folder".
    pub format: &'static str,
    pub tasks: Vec<String>,
    /// ONNX: the graph's nodes and opset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opset: Option<i64>,
    /// A Hugging Face folder: its files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// Loads the model (its selected heads), writes it in the asked format, all files or none.
pub fn run(job: &ExportJob, warn: &mut dyn FnMut(&str)) -> Result<ExportDone> {
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let loaded = ckpt.model(&job.load)?;
    for w in &loaded.warnings {
        warn(w);
    }
    let mut model = loaded.model;
    if let Some(tasks) = &job.tasks {
        let selected = model.select_tasks(tasks)?;
        let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
        model = model.keep_tasks(&names);
    }
    let params = ckpt.load_params(&model, tch::Device::Cpu)?;
    let tasks = model.task_names().into_iter().map(String::from).collect();
    match &job.format {
        ExportFormat::Onnx(opts) => {
            let mut outputs = fsio::Outputs::new(job.force);
            let done = crate::onnx::stage(&model, &params, opts, &job.out, &[&ckpt.path], job.force, &mut outputs)?;
            outputs.commit()?;
            Ok(ExportDone {
                wrote: job.out.clone(),
                format: "onnx",
                tasks,
                nodes: Some(done.nodes),
                opset: Some(opts.opset),
                files: Vec::new(),
            })
        }
        ExportFormat::HfFolder => {
            let files = write_hf_folder(job, &ckpt.path, &model, &params)?;
            Ok(ExportDone {
                wrote: job.out.clone(),
                format: "hf-folder",
                tasks,
                nodes: None,
                opset: None,
                files,
            })
        }
    }
}

/// The folder's files, each checked first, written together; returns their names.
fn write_hf_folder(job: &ExportJob, input: &Path, model: &Model, params: &Params) -> Result<Vec<String>> {
    let files = hf_folder::files(model, params).map_err(|e| anyhow!("{}: {e}", job.model.display()))?;
    let out = &job.out;
    if out.exists() && !out.is_dir() {
        crate::usage_bail!("{}: -o names a file; give a folder", out.display());
    }
    let paths: Vec<PathBuf> = files.iter().map(|(name, _)| out.join(name)).collect();
    for p in &paths {
        fsio::check_output(p, &[input], job.force).or_else(|e| {
            // The folder itself may not exist yet; everything else is a real refusal.
            if out.exists() {
                Err(e)
            } else {
                Ok(())
            }
        })?;
    }
    std::fs::create_dir_all(out).map_err(|e| anyhow!("{}: cannot create ({e})", out.display()))?;
    let mut outputs = fsio::Outputs::new(job.force);
    for (path, (_, bytes)) in paths.iter().zip(&files) {
        outputs.stage(path, bytes)?;
    }
    outputs.commit()?;
    Ok(files.iter().map(|(n, _)| n.to_string()).collect())
}
