//! `cut import`: arguments in, an [`ImportJob`] to the library, what was written out.

use anyhow::{Context, Result};
use cut::graph::TaskKind;
use cut::jobs::import::{run as run_job, ImportJob};
use cut::onnx::import::ImportOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX file (opsets 13 to 21; external data beside it is read).
    model: PathBuf,
    /// Per-sample size of an input the file leaves symbolic (or to override it), as
    /// NAME:CxHxW, NAME:L, or CxHxW for the file's only input; repeat for several inputs.
    #[arg(long = "input", value_name = "[NAME:]SIZE")]
    inputs: Vec<String>,
    #[command(flatten)]
    norm: super::args::NormArgs,
    /// Task kinds of the outputs, by output name: seg:segmentation,cls:classification. Outputs
    /// not named are of kind `output` (no labels: magnitude pruning, export and bench work;
    /// evaluation and fine-tuning need a kind).
    #[arg(long, value_name = "name:kind,...")]
    task_kinds: Option<String>,
    /// Output checkpoint (default: the input with .safetensors).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = ImportJob {
        model: a.model.clone(),
        options: ImportOptions {
            input_sizes: cut::checkpoint::LoadOptions::parse_input_sizes(&a.inputs)?,
            task_kinds: task_kinds(a.task_kinds.as_deref())?,
        },
        normalisation: a.norm.normalisation()?,
        out: a.out.clone(),
        force: a.force,
        command: super::command_line(),
    };
    let done = run_job(&job)?;
    let tasks: Vec<String> = done.tasks.iter().map(|(n, k)| format!("{n} ({k})")).collect();
    let line = format!(
        "wrote {} (opset {}, {} nodes, {} folded, {} parameters; tasks {})",
        done.wrote.display(),
        done.opset,
        done.nodes,
        done.folded,
        done.parameters,
        tasks.join(", ")
    );
    super::print_wrote(a.json, serde_json::to_value(&done)?, &line)
}

/// `--task-kinds a:kind,b:kind`.
fn task_kinds(text: Option<&str>) -> Result<BTreeMap<String, TaskKind>> {
    let mut kinds = BTreeMap::new();
    for item in text.map(cut::graph::parse_task_list).unwrap_or_default() {
        let Some((name, kind)) = item.split_once(':') else {
            cut::usage_bail!("--task-kinds '{item}': expected output:kind");
        };
        let kind = TaskKind::parse(kind).with_context(|| format!("--task-kinds '{item}'"))?;
        kinds.insert(name.to_string(), kind);
    }
    Ok(kinds)
}
