use super::args::{DataArgs, ModelArgs};
use super::progress::progress;
use anyhow::Result;
use cut::data::Split;
use cut::device::DeviceChoice;
use cut::eval::EvalReport;
use cut::graph::parse_task_list;
use cut::jobs::eval::{run as run_job, EvalJob};
use cut::report::table::render;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    norm: super::args::NormArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Split to evaluate.
    #[arg(long, value_parser = super::args::choice::<Split>(), default_value = "test")]
    split: Split,
    /// Evaluate only these tasks (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    /// Only the first N images of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Where the model runs: cpu, cuda, or auto (cuda when present).
    #[arg(long, value_parser = super::args::choice::<DeviceChoice>(), default_value = "cpu")]
    device: DeviceChoice,
    /// Compute delta_m against this report (the JSON of `cut eval` or `cut prune`).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Score the best constant predictor (majority class, mean normal, mean depth, fitted on the
    /// train split) instead of the model.
    #[arg(long)]
    constant: bool,
    /// Also compare the model's outputs with this model's (the original, before pruning) on the
    /// same inputs, per task: top-1 agreement and KL for class outputs, relative L2 and cosine
    /// for values. Needs no labels.
    #[arg(long, value_name = "MODEL")]
    reference: Option<PathBuf>,
    /// Where the model runs: cut's interpreter, or ONNX Runtime on the CPU (an .onnx file as it is,
    /// another model as its ONNX export): the kernels a deployment runs.
    #[arg(long, default_value = "cut", value_parser = ["cut", "onnxruntime"])]
    runtime: String,
    /// With --runtime onnxruntime: run the model's int8 export, calibrated on --data's training
    /// split (see cut export --int8).
    #[command(flatten)]
    int8: super::int8::Int8Args,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = EvalJob {
        model: a.model.model.clone(),
        load: a.norm.apply(a.model.load_options()?)?,
        data: a.data.settings(),
        split: a.split,
        tasks: a.tasks.as_deref().map(parse_task_list),
        limit: a.limit,
        device: a.device,
        baseline: a.baseline.clone(),
        constant: a.constant,
        reference: a.reference.clone(),
        onnx_runtime: a.runtime == "onnxruntime",
        int8: a.int8.options(),
    };
    let mut bar = None;
    let report = run_job(&job, &mut |w| eprintln!("cut: warning: {w}"), &mut |done, total| {
        bar.get_or_insert_with(|| progress(total as u64, "eval"))
            .set_position(done as u64)
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(())
}

pub fn metrics_table(tasks: &[cut::metrics::TaskMetrics]) -> String {
    let mut out = String::new();
    for t in tasks {
        let rows: Vec<Vec<String>> = t
            .metrics
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.shown(),
                    if m.higher_is_better {
                        "higher".into()
                    } else {
                        "lower".into()
                    },
                ]
            })
            .collect();
        out.push_str(&format!("{} ({}, {} scored)\n", t.task, t.kind.as_str(), t.count));
        out.push_str(&render(
            &["  metric", "value", "better"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        ));
    }
    out
}

fn human(r: &EvalReport) -> String {
    use cut::graph::TaskKind;
    let mut out = format!(
        "{} on {} ({} split, {} {}, {}, {:.1} s)\n\n",
        r.model,
        r.data,
        r.split,
        r.images,
        TaskKind::samples_noun(r.tasks.iter().chain(r.fidelity.iter().flatten()).map(|t| t.kind)),
        r.device,
        r.seconds
    );
    out.push_str(&metrics_table(&r.tasks));
    if let (Some(reference), Some(fidelity)) = (&r.reference, &r.fidelity) {
        let gap = if r.tasks.is_empty() { "" } else { "\n" };
        out.push_str(&format!("{gap}fidelity to {reference} (same inputs, no labels):\n"));
        out.push_str(&metrics_table(fidelity));
    }
    if r.tasks.iter().any(|t| t.kind == TaskKind::Segmentation) {
        out.push_str(&format!("\nmIoU: {}\n", r.miou_convention));
    }
    if let (Some(d), Some(b)) = (r.delta_m, &r.baseline) {
        out.push_str(&format!("delta_m against {b}: {d:+.2}%\n"));
    }
    out
}
