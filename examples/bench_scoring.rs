//! Seconds per SNIP calibration batch: cut's shared strategy (one forward per batch, one backward per
//! selected task) against the reference's loop (one forward and backward per task per batch).
//!
//!     cargo run --release --example bench_scoring -- MODEL|scenenet34 SIZE BATCH BATCHES TASKS [cpu|cuda]
//!
//! `scenenet34` builds the reference ResNet-34 SceneNet with three heads (seg 40, normal, depth) and
//! random weights. Data: synthetic scenes of SIZE x SIZE. Prints the median and spread per strategy.

use cut::checkpoint::{Checkpoint, LoadOptions};
use cut::data::synth::{write_dataset, SynthConfig};
use cut::data::{Dataset, Split};
use cut::families::scenenet::SceneNetConfig;
use cut::graph::parse_task_list;
use cut::prune::mask::{Fusion, MaskSearch};
use cut::prune::score::{snip, Calibration, Precision, Strategy};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        anyhow::bail!("usage: bench_scoring MODEL|scenenet34 SIZE BATCH BATCHES TASKS [cpu|cuda]");
    }
    let size: usize = args[1].parse()?;
    let batch: usize = args[2].parse()?;
    let batches: usize = args[3].parse()?;
    let device = cut::device::resolve(match args.get(5).map(String::as_str) {
        Some("cuda") => cut::device::DeviceChoice::Cuda,
        _ => cut::device::DeviceChoice::Cpu,
    })?;
    let (model, params) = if args[0] == "scenenet34" {
        let tasks = cut::families::scenenet::scene_tasks(40);
        let model = SceneNetConfig::reference(tasks).build()?;
        let params = cut::graph::init::init_params(&model.graph, 0, device);
        (model, params)
    } else {
        let ckpt = Checkpoint::open(&args[0])?;
        let model = ckpt.model(&LoadOptions::default())?.model;
        let params = ckpt.load_params(&model, device)?;
        (model, params)
    };
    let selected = model.select_tasks(&parse_task_list(&args[4]))?;
    let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    let kept = model.keep_tasks(&names);
    let dir = tempfile::tempdir()?;
    write_dataset(
        &dir.path().join("d"),
        &SynthConfig {
            train: batch * 2,
            test: 1,
            height: size,
            width: size,
            seed: 0,
        },
        2,
    )?;
    let items = Dataset::open(
        &dir.path().join("d"),
        None,
        &cut::data::layout::reference_normalisation(),
    )?
    .split(Split::Train, 0.0)?;
    println!(
        "model {} ({} tasks scored), input {size}x{size}, batch {batch}, device {}",
        args[0],
        selected.len(),
        cut::device::describe(device)
    );
    // cut scores only the selected tasks through a shared forward; the reference loop runs a forward
    // and backward for every task of the model, selected or not.
    let runs = [
        ("shared f32", Strategy::Shared, Precision::F32, &kept, &selected),
        ("shared bf16", Strategy::Shared, Precision::Bf16, &kept, &selected),
        (
            "reference loop f32",
            Strategy::PerTask,
            Precision::F32,
            &model,
            &model.tasks,
        ),
    ];
    for (label, strategy, precision, m, tasks) in runs {
        // One warm-up batch, then time each batch separately.
        snip(
            m,
            &params,
            tasks,
            Calibration {
                items: items.clone(),
                batches: 1,
                batch_size: batch,
                seed: 0,
                device,
            },
            strategy,
            precision,
            |_| {},
        )?;
        // One call over 1 + `batches` batches: the first absorbs set-up (leaves, first decode);
        // the time between later batches is the steady state (the loader decodes ahead).
        let sync = || {
            if device != tch::Device::Cpu {
                tch::Cuda::synchronize(0);
            }
        };
        let mut stamps = Vec::new();
        snip(
            m,
            &params,
            tasks,
            Calibration {
                items: items.clone(),
                batches: batches + 1,
                batch_size: batch,
                seed: 1,
                device,
            },
            strategy,
            precision,
            |_| {
                sync();
                stamps.push(Instant::now());
            },
        )?;
        let mut times: Vec<f64> = stamps.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{label:>19} ({} tasks): median {:.3} s per batch (min {:.3}, max {:.3}, {} batches)",
            tasks.len(),
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            times.len()
        );
    }
    // How far bf16 arithmetic moves the masks: same calibration batches, 90% sparsity, vote fusion.
    let masks = |precision| -> anyhow::Result<_> {
        let scores = snip(
            &kept,
            &params,
            &selected,
            Calibration {
                items: items.clone(),
                batches,
                batch_size: batch,
                seed: 0,
                device,
            },
            Strategy::Shared,
            precision,
            |_| {},
        )?;
        Ok(MaskSearch::new(&kept, &scores, Fusion::Vote, None)?
            .search(cut::prune::types::Sparsity::new(0.9)?, 0.005)?
            .masks)
    };
    let (a, b) = (masks(Precision::F32)?, masks(Precision::Bf16)?);
    let (mut differ, mut total, mut kept_both, mut kept_any) = (0i64, 0i64, 0i64, 0i64);
    for (name, ma) in &a {
        let mb = &b[name];
        differ += ma.ne_tensor(mb).sum(tch::Kind::Int64).int64_value(&[]);
        total += ma.numel() as i64;
        kept_both += ma.logical_and(mb).sum(tch::Kind::Int64).int64_value(&[]);
        kept_any += ma.logical_or(mb).sum(tch::Kind::Int64).int64_value(&[]);
    }
    println!(
        "bf16 vs f32 masks at 90%: {:.3}% of weights decided differently, kept sets overlap {:.1}% (intersection over union)",
        differ as f64 / total as f64 * 100.0,
        kept_both as f64 / kept_any.max(1) as f64 * 100.0
    );
    Ok(())
}
