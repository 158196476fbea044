//! `cut export`: a model as ONNX (for on-device runtimes) or as a Hugging Face folder.

use super::args::ModelArgs;
use anyhow::{anyhow, Result};
use cut::checkpoint::{hf_folder, Checkpoint};
use cut::fsio;
use cut::graph::parse_task_list;
use cut::onnx::{ExportOptions, DEFAULT_OPSET};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One .onnx file (plus OUT.data when the weights pass 2 GiB).
    Onnx,
    /// A Hugging Face model folder (text encoders): model.safetensors, config.json, tokenizer.json,
    /// labels.json.
    HfFolder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WeightType {
    F32,
    F16,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// What to write.
    #[arg(long, value_enum, default_value = "onnx")]
    format: Format,
    /// Export only these tasks' heads (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    /// ONNX opset (13 to 21). 17 is read by ONNX Runtime, TensorRT 10 and OpenVINO; 20 and newer
    /// write GELU as one node.
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    opset: i64,
    /// ONNX weight storage: f16 halves the file (arithmetic stays f32).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: WeightType,
    /// ONNX: a fixed batch size instead of a dynamic one.
    #[arg(long)]
    batch: Option<usize>,
    /// ONNX, text models: a fixed sequence length instead of a dynamic one.
    #[arg(long)]
    seq_len: Option<usize>,
    /// ONNX, image models: the input size HxW (default: the graph's).
    #[arg(long = "input", alias = "size", value_name = "HxW", value_parser = super::args::parse_hw)]
    size: Option<(usize, usize)>,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
    /// Output: the .onnx file, or the folder for hf-folder.
    #[arg(short, long)]
    out: PathBuf,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model.model)?;
    let loaded = ckpt.model(&a.model.load_options()?)?;
    for w in &loaded.warnings {
        eprintln!("cut: warning: {w}");
    }
    let mut model = loaded.model;
    if let Some(tasks) = &a.tasks {
        let selected = model.select_tasks(&parse_task_list(tasks))?;
        let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
        model = model.keep_tasks(&names);
    }
    let params = ckpt.load_params(&model, tch::Device::Cpu)?;
    match a.format {
        Format::HfFolder => hf(&a, &ckpt, &model, &params),
        Format::Onnx => {
            let mut sizes = std::collections::BTreeMap::new();
            if let Some(b) = a.batch {
                sizes.insert("batch".to_string(), b);
            }
            if let Some(s) = a.seq_len {
                sizes.insert("seq".to_string(), s);
            }
            if let Some((h, w)) = a.size {
                sizes.insert("height".to_string(), h);
                sizes.insert("width".to_string(), w);
            }
            let opts = ExportOptions {
                opset: a.opset,
                half: a.dtype == WeightType::F16,
                sizes,
                ..Default::default()
            };
            let mut outputs = fsio::Outputs::new(a.force);
            let done = cut::onnx::stage(&model, &params, &opts, &a.out, &[&ckpt.path], a.force, &mut outputs)?;
            outputs.commit()?;
            let tasks = model.task_names();
            let facts = serde_json::json!({
                "wrote": a.out.display().to_string(),
                "format": "onnx",
                "nodes": done.nodes,
                "opset": a.opset,
                "tasks": tasks,
            });
            let line = format!(
                "wrote {} ({} nodes, opset {}, tasks {})",
                a.out.display(),
                done.nodes,
                a.opset,
                tasks.join(", ")
            );
            super::args::print_wrote(a.json, facts, &line)
        }
    }
}

fn hf(a: &Args, ckpt: &Checkpoint, model: &cut::graph::Model, params: &cut::graph::Params) -> Result<()> {
    let files = hf_folder::files(model, params).map_err(|e| anyhow!("{}: {e}", a.model.model.display()))?;
    if a.out.exists() && !a.out.is_dir() {
        cut::usage_bail!("{}: -o names a file; give a folder", a.out.display());
    }
    let paths: Vec<PathBuf> = files.iter().map(|(name, _)| a.out.join(name)).collect();
    for p in &paths {
        fsio::check_output(p, &[&ckpt.path], a.force).or_else(|e| {
            // The folder itself may not exist yet; everything else is a real refusal.
            if a.out.exists() {
                Err(e)
            } else {
                Ok(())
            }
        })?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow!("{}: cannot create ({e})", a.out.display()))?;
    let mut outputs = fsio::Outputs::new(a.force);
    for (path, (_, bytes)) in paths.iter().zip(&files) {
        outputs.stage(path, bytes)?;
    }
    outputs.commit()?;
    let shown: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let facts = serde_json::json!({
        "wrote": a.out.display().to_string(),
        "format": "hf-folder",
        "files": shown,
    });
    super::args::print_wrote(
        a.json,
        facts,
        &format!("wrote {} ({})", Path::new(&a.out).display(), shown.join(", ")),
    )
}
