use super::args::{parse_input_size, ModelArgs};
use anyhow::{bail, Result};
use cut::bench::{compare, profile, speedup, BenchConfig, BenchReport, Candidate, NodeTime};
use cut::checkpoint::Checkpoint;
use cut::device::{resolve, DeviceChoice};
use cut::graph::parse_task_list;
use cut::report::table::{count, percent, render};
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks whose heads run (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input size CxHxW (default: the graph's).
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// CPU threads for intra-op parallelism (default: libtorch's choice, usually the core count).
    #[arg(long)]
    threads: Option<usize>,
    /// Another checkpoint (all its heads) to time in the same runs, interleaved, for a speed-up.
    #[arg(long, value_name = "MODEL")]
    baseline: Option<std::path::PathBuf>,
    /// Time the model as stored, batch norms separate, instead of folding each batch norm into
    /// the convolution before it as a deployment would.
    #[arg(long)]
    keep_batch_norm: bool,
    /// Also time every node separately and print where the time goes: per op kind, and the
    /// slowest nodes (`--json`: every node).
    #[arg(long, conflicts_with = "baseline")]
    profile: bool,
    /// With --device cuda: record each model's forward once as a CUDA graph and time replays of it
    /// (one launch per forward instead of one per kernel). Hidden until it has run on a GPU: the
    /// sessions that wrote it had none.
    #[arg(long, hide = true, conflicts_with = "profile")]
    cuda_graph: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.runs == 0 {
        bail!("--batch and --runs must be positive");
    }
    if let Some(t) = a.threads {
        if t == 0 {
            bail!("--threads must be positive");
        }
        tch::set_num_threads(t as i32);
    }
    let device = resolve(a.device)?;
    let ckpt = Checkpoint::open(&a.model.model)?;
    let model = ckpt.model(&a.model.load_options()?)?.model;
    let tasks = match &a.tasks {
        Some(t) => model.select_tasks(&parse_task_list(t))?,
        None => model.tasks.clone(),
    };
    let default = model.graph.image_input()?;
    let input = match &a.input {
        Some(text) => parse_input_size(text, default[0])?,
        None => default,
    };
    cut::graph::shapes::infer(&model.graph, input)?;
    let params = ckpt.load_params(&model, device)?;

    let baseline = match &a.baseline {
        Some(path) => {
            let ckpt = Checkpoint::open(path)?;
            let m = ckpt.model(&Default::default())?.model;
            cut::graph::shapes::infer(&m.graph, input)
                .map_err(|e| anyhow::anyhow!("{}: input {input:?} does not fit: {e}", path.display()))?;
            let p = ckpt.load_params(&m, device)?;

            Some((path, m, p))
        }
        None => None,
    };
    let cfg = BenchConfig {
        device,
        batch: a.batch,
        input,
        warmup: a.warmup,
        runs: a.runs,
        fold_batch_norm: !a.keep_batch_norm,
        cuda_graph: a.cuda_graph,
    };
    let mut candidates = vec![Candidate {
        model: &model,
        params: &params,
        tasks: tasks.iter().map(|t| t.name.as_str()).collect(),
    }];
    if let Some((_, m, p)) = &baseline {
        candidates.push(Candidate {
            model: m,
            params: p,
            tasks: m.task_names(),
        });
    }
    let mut reports = compare(&candidates, cfg)?;
    if a.profile {
        let nodes = profile(&model, &params, &candidates[0].tasks, cfg)?;
        let r = reports.remove(0);
        if a.json {
            let json = serde_json::json!({ "model": r, "nodes": nodes });
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            println!("{}", line(&a.model.model.display().to_string(), &r));
            print!("{}", profile_tables(&nodes, r.median_ms));
        }
        return Ok(());
    }
    let base = (reports.len() == 2).then(|| reports.remove(1));
    let r = reports.remove(0);
    let base = base.map(|b| {
        let ratio = speedup(&r, &b);
        (b, ratio)
    });
    if a.json {
        let json = match &base {
            Some((b, ratio)) => serde_json::json!({
                "model": r,
                "baseline": b,
                "baseline_path": a.baseline.as_ref().map(|p| p.display().to_string()),
                "speedup": ratio.median_over_median,
                "speedup_per_round": {
                    "median": ratio.per_round_median,
                    "p10": ratio.per_round_p10,
                    "p90": ratio.per_round_p90,
                },
            }),
            None => serde_json::to_value(&r)?,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{}", line(&a.model.model.display().to_string(), &r));
        if let (Some((b, ratio)), Some(path)) = (&base, &a.baseline) {
            println!("{}", line(&path.display().to_string(), b));
            println!(
                "speedup {:.2}x (median against median, runs interleaved; per round: median {:.2}x, 10-90% {:.2}x-{:.2}x)",
                ratio.median_over_median, ratio.per_round_median, ratio.per_round_p10, ratio.per_round_p90
            );
        }
    }
    Ok(())
}

fn line(name: &str, r: &BenchReport) -> String {
    format!(
        "{name} ({}) on {} ({} threads), batch {} of {}x{}x{}: median {:.2} ms (min {:.2}, p90 {:.2}, max {:.2}; {} runs after {} warm-up), {:.1} images/s{}, planned weights {} and activations {} at peak{}{}",
        r.tasks.join(", "),
        r.device,
        r.threads,
        r.batch,
        r.input[0],
        r.input[1],
        r.input[2],
        r.median_ms,
        r.min_ms,
        r.p90_ms,
        r.max_ms,
        r.runs,
        r.warmup,
        r.images_per_s,
        r.peak_memory_bytes
            .map(|b| format!(", peak memory {}", cut::report::table::bytes(b as f64)))
            .unwrap_or_default(),
        cut::report::table::bytes(r.planned_memory.weight_bytes as f64),
        cut::report::table::bytes(r.planned_memory.activation_peak_bytes as f64),
        match r.batch_norms_folded {
            0 => String::new(),
            n => format!(" ({n} batch norms folded into convolutions)"),
        },
        if r.cuda_graph { " (CUDA graph replays)" } else { "" }
    )
}

/// Time per op kind, then the slowest nodes, with their multiply-accumulate rates.
fn profile_tables(nodes: &[NodeTime], forward_ms: f64) -> String {
    let total: f64 = nodes.iter().map(|n| n.median_ms).sum();
    let rate = |macs: Option<u64>, ms: f64| match macs {
        Some(m) if ms > 0.0 => format!("{:.1}", m as f64 / ms / 1e6),
        _ => "-".into(),
    };
    let mut by_op: BTreeMap<&str, (usize, f64, Option<u64>)> = BTreeMap::new();
    for n in nodes {
        let e = by_op.entry(n.op).or_insert((0, 0.0, None));
        e.0 += 1;
        e.1 += n.median_ms;
        if let Some(m) = n.macs {
            e.2 = Some(e.2.unwrap_or(0) + m);
        }
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|(op, (k, ms, macs))| {
            vec![
                op.to_string(),
                k.to_string(),
                format!("{ms:.3}"),
                percent(ms / total),
                macs.map(|m| count(m as f64)).unwrap_or_else(|| "-".into()),
                rate(*macs, *ms),
            ]
        })
        .collect();
    let mut out =
        format!("\nper node, synchronised: {total:.2} ms in all (the unprofiled forward: {forward_ms:.2} ms)\n");
    out += &render(&["op", "nodes", "ms", "share", "MACs", "GMAC/s"], &rows);
    let mut slow: Vec<&NodeTime> = nodes.iter().collect();
    slow.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    let rows: Vec<Vec<String>> = slow
        .iter()
        .take(15)
        .map(|n| {
            vec![
                n.node.clone(),
                n.op.to_string(),
                n.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
                format!("{:.3}", n.median_ms),
                percent(n.median_ms / total),
                n.macs.map(|m| count(m as f64)).unwrap_or_else(|| "-".into()),
                rate(n.macs, n.median_ms),
            ]
        })
        .collect();
    out += "\nslowest nodes\n";
    out += &render(&["node", "op", "output", "ms", "share", "MACs", "GMAC/s"], &rows);
    out
}
