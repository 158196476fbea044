//! `cut import`: an ONNX file written once as a `cut` checkpoint (graph in the header,
//! initializers as tensors), so later commands skip the import.

use crate::checkpoint::metadata::Provenance;
use crate::checkpoint::{sha256_file, writer, DType};
use crate::fsio;
use crate::onnx::import::{import, ImportOptions};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

/// Everything `cut import` was asked.
#[derive(Clone, Debug)]
pub struct ImportJob {
    pub model: PathBuf,
    pub options: ImportOptions,
    /// How image files become the image input, recorded in the checkpoint.
    pub normalisation: Option<crate::graph::Normalisation>,
    /// Default: the input with `.safetensors`.
    pub out: Option<PathBuf>,
    pub force: bool,
    /// The command line, for the provenance record.
    pub command: String,
}

/// What `cut import` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportDone {
    pub wrote: PathBuf,
    pub opset: i64,
    /// Graph nodes, and ONNX nodes folded at import (constants, shape arithmetic, identities).
    pub nodes: usize,
    pub folded: usize,
    pub parameters: usize,
    /// Output name and kind, in output order.
    pub tasks: Vec<(String, String)>,
    /// The image input's normalisation as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<crate::graph::Normalisation>,
    pub import_s: f64,
}

/// Imports the file and writes the checkpoint; nothing is written on error.
pub fn run(job: &ImportJob) -> Result<ImportDone> {
    let out = job
        .out
        .clone()
        .unwrap_or_else(|| job.model.with_extension("safetensors"));
    fsio::check_output(&out, &[&job.model], job.force)?;
    let t = Instant::now();
    let mut imported = import(&job.model, &job.options)?;
    if let Some(norm) = &job.normalisation {
        let graph = &mut imported.model.graph;
        graph
            .set_image_normalisation(norm)
            .map_err(|e| anyhow::anyhow!("{}: {e}", job.model.display()))?;
    }
    let import_s = t.elapsed().as_secs_f64();
    let provenance = Provenance::new(job.command.clone(), Some(sha256_file(&job.model)?));
    let mut outputs = fsio::Outputs::new(job.force);
    outputs.stage_streamed(&out, &mut |w| {
        writer::write_model(w, &imported.model, &imported.params, DType::F32, Some(&provenance))
    })?;
    outputs.commit()?;
    Ok(ImportDone {
        wrote: out,
        opset: imported.opset,
        nodes: imported.model.graph.nodes.len(),
        folded: imported.folded,
        parameters: imported.params.values().map(|t| t.numel()).sum(),
        tasks: imported
            .model
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.kind.as_str().to_string()))
            .collect(),
        normalisation: imported.model.graph.image_normalisation().cloned(),
        import_s,
    })
}
