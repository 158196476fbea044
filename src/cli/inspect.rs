use super::args::{parse_input_size, ModelArgs};
use anyhow::Result;
use cut::jobs::inspect::{run as run_job, InspectJob};
use cut::report::inspect::{InputChoice, Inspection};
use cut::report::table::{bytes, count, percent, render};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Sequence length for a text model's multiply-accumulate counts (default: the graph's, 128).
    #[arg(long, value_name = "N")]
    seq_len: Option<usize>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
    /// List what `cut prune --granularity channel` can narrow: each group of channels, neurons,
    /// attention heads or convolution groups, and why a group must stay whole.
    #[arg(long)]
    prunable: bool,
}

pub fn run(a: Args) -> Result<()> {
    // An unnamed --input CxHxW sizes the multiply-accumulate counts (default: the graph's).
    let (load, run_size) = a.model.load_options_and_run_size()?;
    let job = InspectJob {
        model: a.model.model.clone(),
        load,
        input: InputChoice {
            image: run_size.as_deref().map(|t| parse_input_size(t, 3)).transpose()?,
            seq_len: a.seq_len,
        },
        list_tensors: a.tensors,
        list_prunable: a.prunable,
    };
    let report = run_job(&job)?;
    for w in &report.warnings {
        eprintln!("cut: warning: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(())
}

fn human(r: &Inspection) -> String {
    let mut out = format!(
        "{}: {} on disk, {}{}\n",
        r.file,
        bytes(r.file_bytes as f64),
        r.family.clone().unwrap_or_else(|| "graph".into()),
        if r.inferred_graph {
            " (graph inferred from the tensor names)"
        } else {
            ""
        }
    );
    out.push_str("tasks:\n");
    for t in &r.tasks {
        out.push_str(&format!(
            "  {:<12} {:<14} {} outputs\n",
            t.name,
            t.kind.as_str(),
            t.outputs
        ));
    }
    out.push('\n');
    out.push_str(&groups_table(r));
    if !r.drop_head_savings.is_empty() {
        out.push_str("\ndropping a head saves:\n");
        out.push_str(&savings_table(r));
    }
    if let Some(groups) = &r.prunable {
        out.push('\n');
        out.push_str(&prunable_table(groups));
    }
    if let Some(list) = &r.tensor_list {
        out.push('\n');
        out.push_str(&tensor_table(list));
    }
    if let Some(p) = &r.provenance {
        out.push_str(&format!("\nwritten by {} {}: {}\n", p.tool, p.version, p.command));
    }
    out
}

/// Per group (backbone, each head) and in total: tensors, parameters, bytes, dtypes, zeros, MACs.
fn groups_table(r: &Inspection) -> String {
    let row = |g: &cut::report::inspect::GroupStats| {
        vec![
            g.group.clone(),
            g.tensors.to_string(),
            count(g.params as f64),
            bytes(g.bytes as f64),
            g.dtypes.join(","),
            percent(g.zero_share),
            cut::report::table::macs(g.macs),
        ]
    };
    let mut rows: Vec<Vec<String>> = r.groups.iter().map(row).collect();
    rows.push(row(&r.total));
    let macs_header = match (&r.input, &r.sizes) {
        (Some([c, h, w]), _) => format!("MACs@{c}x{h}x{w}"),
        (None, Some(sizes)) => format!(
            "MACs@{}",
            sizes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        (None, None) => "MACs".into(),
    };
    render(
        &[
            "group",
            "tensors",
            "params",
            "bytes",
            "dtype",
            "zero weights",
            &macs_header,
        ],
        &rows,
    )
}

/// What dropping each task's head saves.
fn savings_table(r: &Inspection) -> String {
    let rows: Vec<Vec<String>> = r
        .drop_head_savings
        .iter()
        .map(|d| {
            vec![
                d.task.clone(),
                count(d.params as f64),
                percent(d.share_of_params),
                bytes(d.bytes as f64),
                cut::report::table::macs(d.macs),
            ]
        })
        .collect();
    render(&["task", "params", "of params", "bytes", "MACs"], &rows)
}

/// Every tensor: its group, dtype, shape, size and share of zeros.
fn tensor_table(list: &[cut::report::inspect::TensorStats]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.group.clone(),
                t.dtype.clone(),
                format!("{:?}", t.shape),
                t.elements.to_string(),
                percent(t.zeros as f64 / t.elements.max(1) as f64),
            ]
        })
        .collect();
    render(&["tensor", "group", "dtype", "shape", "elements", "zeros"], &rows)
}

/// One row per group of channels: the first layer writing it (and how many more), its units, and
/// whether channel pruning may narrow it.
fn prunable_table(groups: &[cut::report::inspect::PrunableGroup]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let layer = match g.producers {
                1 => g.layer.clone(),
                n => format!("{} (+{} more)", g.layer, n - 1),
            };
            let status = g
                .fixed
                .as_ref()
                .map_or("prunable".to_string(), |why| format!("fixed: {why}"));
            vec![layer, format!("{} {}", g.units, g.unit), status]
        })
        .collect();
    let open = groups.iter().filter(|g| g.fixed.is_none()).count();
    format!(
        "channel pruning: {open} of {} groups prunable\n{}",
        groups.len(),
        render(&["layer", "units", "channel pruning"], &rows)
    )
}
