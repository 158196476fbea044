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
    /// ONNX: write int8 (QDQ) instead, calibrated on `data`.
    pub int8: Option<crate::onnx::quantize::Int8Options>,
    /// The calibration data, with `int8`.
    pub data: crate::data::DataSettings,
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
    /// With --int8: what was quantized and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<crate::onnx::quantize::Int8Summary>,
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
            let (nodes, int8) = match &job.int8 {
                Some(int8) => write_int8(job, &ckpt.path, &model, &params, opts, int8, &mut outputs, warn)?,
                None => {
                    let done =
                        crate::onnx::stage(&model, &params, opts, &job.out, &[&ckpt.path], job.force, &mut outputs)?;
                    (done.nodes, None)
                }
            };
            outputs.commit()?;
            Ok(ExportDone {
                wrote: job.out.clone(),
                format: "onnx",
                tasks,
                nodes: Some(nodes),
                opset: Some(opts.opset),
                files: Vec::new(),
                int8,
            })
        }
        ExportFormat::HfFolder => {
            if job.int8.is_some() {
                crate::usage_bail!("--int8 writes ONNX, not a Hugging Face folder");
            }
            let files = write_hf_folder(job, &ckpt.path, &model, &params)?;
            Ok(ExportDone {
                wrote: job.out.clone(),
                format: "hf-folder",
                tasks,
                nodes: None,
                opset: None,
                files,
                int8: None,
            })
        }
    }
}

/// The int8 file, calibrated on the job's data; its node count and what was quantized.
#[allow(clippy::too_many_arguments)]
fn write_int8(
    job: &ExportJob,
    input: &Path,
    model: &Model,
    params: &Params,
    opts: &ExportOptions,
    int8: &crate::onnx::quantize::Int8Options,
    outputs: &mut fsio::Outputs,
    warn: &mut dyn FnMut(&str),
) -> Result<(usize, Option<crate::onnx::quantize::Int8Summary>)> {
    if opts.half {
        crate::usage_bail!("--int8 and --dtype f16 exclude each other (int8 weights are not stored in f16)");
    }
    fsio::check_output(&job.out, &[input], job.force)?;
    let Some(data) = job.data.open(model, warn)? else {
        crate::usage_bail!(
            "--int8 needs --data: inputs to calibrate the activations' ranges on (labels are not needed)"
        );
    };
    let files = super::int8::int8_files(model, params, opts, &data, &job.data, int8)?;
    outputs.stage(&job.out, &files.int8)?;
    Ok((files.nodes, Some(files.summary)))
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
