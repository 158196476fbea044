//! `cut export`: a model as ONNX (for on-device runtimes) or as a Hugging Face folder.

use super::args::ModelArgs;
use anyhow::Result;
use cut::graph::parse_task_list;
use cut::jobs::export::{run as run_job, ExportFormat, ExportJob};
use cut::onnx::{ExportOptions, DEFAULT_OPSET};
use std::path::PathBuf;

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
    /// ONNX, image models: the input size HxW (the unnamed `--input`'s form, kept for scripts).
    #[arg(long, hide = true, value_name = "HxW", value_parser = super::args::parse_hw)]
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
    #[command(flatten)]
    int8: super::int8::Int8Args,
    /// int8: calibration inputs, any form `cut prune --data` reads (labels are not needed).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// int8, a folder of images: resize them to HxW (default: the model's input size).
    #[arg(long, value_name = "HxW", value_parser = cut::data::unlabelled::parse_resize)]
    resize: Option<[usize; 2]>,
    #[command(flatten)]
    norm: super::args::NormArgs,
}

pub fn run(a: Args) -> Result<()> {
    let (load, run_size) = a.model.load_options_and_run_size()?;
    let load = a.norm.apply(load)?;
    let format = match a.format {
        Format::HfFolder => ExportFormat::HfFolder,
        Format::Onnx => ExportFormat::Onnx(ExportOptions {
            opset: a.opset,
            half: a.dtype == WeightType::F16,
            sizes: fixed_sizes(&a, run_size.as_deref())?,
            ..Default::default()
        }),
    };
    let job = ExportJob {
        model: a.model.model.clone(),
        load,
        tasks: a.tasks.as_deref().map(parse_task_list),
        format,
        out: a.out.clone(),
        force: a.force,
        int8: a.int8.options(),
        data: cut::data::DataSettings {
            folder: a.data.clone().map(|d| (d, cut::data::layout::INDEX_FILE.to_string())),
            val_fraction: 0.1,
            batch: 8,
            max_len: None,
            resize: a.resize,
        },
    };
    let done = run_job(&job, &mut |w| eprintln!("cut: warning: {w}"))?;
    let line = match (done.nodes, done.opset) {
        (Some(nodes), Some(opset)) => format!(
            "wrote {} ({nodes} nodes, opset {opset}, tasks {}{})",
            done.wrote.display(),
            done.tasks.join(", "),
            done.int8.as_ref().map_or(String::new(), |q| format!(
                "; int8, calibrated on {} inputs by {}",
                q.calibration_inputs, q.calibration
            ))
        ),
        _ => format!("wrote {} ({})", done.wrote.display(), done.files.join(", ")),
    };
    super::print_wrote(a.json, serde_json::to_value(&done)?, &line)
}

/// The sizes the ONNX file fixes: the batch, a text model's sequence length, an image's size
/// (`--input [C]xHxW`).
fn fixed_sizes(a: &Args, input: Option<&str>) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut sizes = std::collections::BTreeMap::new();
    if let Some(b) = a.batch {
        sizes.insert("batch".to_string(), b);
    }
    if let Some(s) = a.seq_len {
        sizes.insert("seq".to_string(), s);
    }
    let hw = match input {
        Some(text) => {
            let [_, h, w] = super::args::parse_input_size(text, 0)?;
            Some((h, w))
        }
        None => a.size,
    };
    if let Some((h, w)) = hw {
        sizes.insert("height".to_string(), h);
        sizes.insert("width".to_string(), w);
    }
    Ok(sizes)
}
