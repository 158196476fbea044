//! int8 ONNX for a model (`cut export --int8`, `cut prune --onnx --int8`): its f32 export
//! calibrated on the training split of a dataset, and both files' figures in ONNX Runtime on an
//! evaluation split.

use crate::data::example::{Samples, Subset};
use crate::data::loader::Loader;
use crate::data::{Dataset, Split};
use crate::eval::{compare_runs, Compared};
use crate::graph::{Graph, InputRole, Model, Params, TaskSpec};
use crate::onnx::quantize::{quantize, Int8Options, Int8Summary};
use crate::onnx::runtime::OrtModel;
use crate::onnx::ExportOptions;
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::{Device, Tensor};

/// The two ONNX files of a model.
pub struct Int8Files {
    pub f32: Vec<u8>,
    pub int8: Vec<u8>,
    /// The int8 file's nodes.
    pub nodes: usize,
    pub summary: Int8Summary,
}

/// The f32 ONNX file of `model` in memory (weights in f32, none external), as calibration and
/// ONNX Runtime read it.
pub fn f32_onnx(model: &Model, params: &Params, export: &ExportOptions) -> Result<Vec<u8>> {
    let opts = ExportOptions {
        half: false,
        external_threshold: u64::MAX,
        ..export.clone()
    };
    Ok(crate::onnx::export(model, params, &opts, "")?.model)
}

/// At most `n` examples of `items`, evenly spaced (a folder sorted by name is not one scene type
/// after another), in order.
fn spread(items: Samples, n: usize) -> Samples {
    let count = items.count();
    if n >= count {
        return items;
    }
    let indices = (0..n).map(|i| i * count / n).collect();
    Arc::new(Subset { source: items, indices })
}

/// The f32 export of `model` (all its tasks) and its int8 form, calibrated on up to
/// `opts.calibration` training examples of `data`.
pub fn int8_files(
    model: &Model,
    params: &Params,
    export: &ExportOptions,
    data: &Dataset,
    settings: &crate::data::DataSettings,
    opts: &Int8Options,
) -> Result<Int8Files> {
    let f32 = f32_onnx(model, params, export)?;
    let items = spread(data.split(Split::Train, settings.val_fraction)?, opts.calibration);
    let mut batches = Loader::sequential(items, settings.batch, Device::Cpu).map(|b| b?.graph_inputs(&model.graph));
    let q = quantize(&f32, &mut batches, opts)?;
    Ok(Int8Files {
        f32,
        int8: q.bytes,
        nodes: q.nodes,
        summary: q.summary,
    })
}

/// Both files run in ONNX Runtime over `items`: the int8 file's metrics against the f32 file's
/// and its fidelity to them.
pub fn compare_in_ort(
    files: &Int8Files,
    graph: &Graph,
    items: Samples,
    tasks: &[TaskSpec],
    batch: usize,
) -> Result<Compared> {
    let mut int8 = OrtModel::from_bytes(&files.int8, 0, "the int8 model")?;
    let mut f32 = OrtModel::from_bytes(&files.f32, 0, "the f32 model")?;
    let inputs = |b: &crate::data::loader::Batch| -> Result<BTreeMap<String, Tensor>> { b.graph_inputs(graph) };
    let mut got = |b: &crate::data::loader::Batch| int8.run(&inputs(b)?);
    let mut want = |b: &crate::data::loader::Batch| f32.run(&inputs(b)?);
    let mask = graph.input_named_by(InputRole::AttentionMask);
    compare_runs(&mut got, &mut want, mask, items, tasks, batch, Device::Cpu)
}

/// The report of `files` written at `path`: both files compared in ONNX Runtime on `items`.
pub fn report(
    files: &Int8Files,
    path: &std::path::Path,
    graph: &Graph,
    (items, split): (Samples, &str),
    tasks: &[TaskSpec],
    batch: usize,
) -> Result<crate::report::int8::Int8Report> {
    let compared = compare_in_ort(files, graph, items, tasks, batch)?;
    Ok(crate::report::int8::Int8Report {
        file: path.display().to_string(),
        bytes: files.int8.len() as u64,
        f32_bytes: files.f32.len() as u64,
        quantization: files.summary.clone(),
        split: split.to_string(),
        images: compared.images,
        rows: crate::report::int8::rows(&compared.reference_metrics, &compared.metrics),
        f32: compared.reference_metrics,
        int8: compared.metrics,
        fidelity: compared.fidelity,
    })
}
