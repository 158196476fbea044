use super::args::{DataArgs, ModelArgs};
use super::progress::progress;
use anyhow::Result;
use cut::checkpoint::Checkpoint;
use cut::data::Split;
use cut::device::{resolve, DeviceChoice};
use cut::eval::{evaluate, read_baseline, ConstantPredictor, EvalReport};
use cut::graph::parse_task_list;
use cut::metrics::delta_m;
use cut::report::table::render;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
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
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let ckpt = Checkpoint::open(&a.model.model)?;
    let loaded = ckpt.model(&a.model.load_options()?)?;
    for w in &loaded.warnings {
        eprintln!("cut: warning: {w}");
    }
    let model = loaded.model;
    let tasks = match &a.tasks {
        Some(t) => model.select_tasks(&parse_task_list(t))?,
        None => model.tasks.clone(),
    };
    let data = a.data.require_for(&model, "to evaluate")?;
    let mut items = data.split(a.split, a.data.val_fraction)?;
    if let Some(n) = a.limit {
        if n == 0 {
            cut::usage_bail!("--limit must be positive");
        }
        let n = n.min(items.count());
        items = std::sync::Arc::new(cut::data::example::Subset {
            source: items,
            indices: (0..n).collect(),
        });
    }
    let device = resolve(a.device)?;
    let (metrics, images) = if a.constant {
        let predictor = ConstantPredictor::fit(data.split(Split::Train, a.data.val_fraction)?, &tasks)?;
        predictor.evaluate(items, &tasks)?
    } else {
        let params = ckpt.load_params(&model, device)?;
        let bar = progress(items.count() as u64, "eval");
        let out = evaluate(&model, &params, items, &tasks, a.data.batch, device, |done| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        out
    };
    for t in &metrics {
        for w in &t.warnings {
            eprintln!("cut: warning: task '{}': {w}", t.task);
        }
    }
    let delta = match &a.baseline {
        Some(path) => Some(delta_m(&metrics, &read_baseline(path)?)?),
        None => None,
    };
    let report = EvalReport {
        model: if a.constant {
            format!("constant predictor for {}", a.model.model.display())
        } else {
            a.model.model.display().to_string()
        },
        data: data.root.display().to_string(),
        split: a.split.as_str().into(),
        images,
        device: cut::device::describe(device),
        seconds: started.elapsed().as_secs_f64(),
        miou_convention: cut::eval::convention(),
        tasks: metrics,
        baseline: a.baseline.as_ref().map(|p| p.display().to_string()),
        delta_m: delta,
    };
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
        TaskKind::samples_noun(r.tasks.iter().map(|t| t.kind)),
        r.device,
        r.seconds
    );
    out.push_str(&metrics_table(&r.tasks));
    if r.tasks.iter().any(|t| t.kind == TaskKind::Segmentation) {
        out.push_str(&format!("\nmIoU: {}\n", r.miou_convention));
    }
    if let (Some(d), Some(b)) = (r.delta_m, &r.baseline) {
        out.push_str(&format!("delta_m against {b}: {d:+.2}%\n"));
    }
    out
}
