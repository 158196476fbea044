//! `cut predict`: a model's outputs on given inputs, named by task, in a file (`.safetensors` or
//! `.npz`). For looking at what a pruned model predicts, and for parity checks against another
//! runtime.

use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::data::arrays::{read_npy, read_npz, tensor_of};
use crate::device::DeviceChoice;
use crate::fsio;
use crate::graph::interpreter::forward_inputs;
use crate::graph::ops::Mode;
use anyhow::{anyhow, bail, Context, Result};
use ndarray_npy::NpzWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Everything `cut predict` was asked.
#[derive(Clone, Debug)]
pub struct PredictJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// Input files: `.npy` (one array: for the graph's only input, or named as `name=file.npy`),
    /// `.npz` or `.safetensors` (arrays named by graph input), images (`.png`, `.jpg`: one batch
    /// for the image input) or a `.jsonl` of texts (for a model with a tokenizer).
    pub inputs: Vec<String>,
    /// Only these tasks' outputs (all when `None`).
    pub tasks: Option<Vec<String>>,
    pub device: DeviceChoice,
    /// `.safetensors` or `.npz`.
    pub out: PathBuf,
    pub force: bool,
}

/// What `cut predict` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PredictDone {
    pub wrote: PathBuf,
    pub batch: usize,
    /// Each task's output shape, batch first.
    pub outputs: BTreeMap<String, Vec<i64>>,
    /// How image files became the image input (absent when none were given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<crate::graph::Normalisation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Reads the inputs, runs the model (inference mode) and writes every selected task's output.
pub fn run(job: &PredictJob) -> Result<PredictDone> {
    let format = OutFormat::of(&job.out)?;
    let mut inputs_read: Vec<&Path> = vec![&job.model];
    let files: Vec<PathBuf> = job
        .inputs
        .iter()
        .map(|i| PathBuf::from(i.split_once('=').map_or(i.as_str(), |p| p.1)))
        .collect();
    inputs_read.extend(files.iter().map(PathBuf::as_path));
    fsio::check_output(&job.out, &inputs_read, job.force)?;
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let model = ckpt.model(&job.load)?.model;
    let device = crate::device::resolve(job.device)?;
    let params = ckpt.load_params(&model, device)?;
    let (norm, warnings) = image_normalisation(&job.inputs, &model.graph, &job.model);
    let graph_inputs = read_inputs(&job.inputs, &model, &norm.clone().unwrap_or_default())?;
    let batch = check_inputs(&graph_inputs, &model.graph)?;
    let tasks: Vec<String> = match &job.tasks {
        Some(t) => model.select_tasks(t)?.into_iter().map(|t| t.name).collect(),
        None => model.tasks.iter().map(|t| t.name.clone()).collect(),
    };
    let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
    let on_device = graph_inputs
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(device)))
        .collect();
    let outputs = tch::no_grad(|| forward_inputs(&model.graph, &params, &on_device, &names, Mode::Eval))?;
    let outputs: BTreeMap<String, Tensor> = outputs
        .into_iter()
        .map(|(k, v)| (k, v.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous()))
        .collect();
    let bytes = format.bytes(&outputs)?;
    let mut staged = fsio::Outputs::new(job.force);
    staged.stage(&job.out, &bytes)?;
    staged.commit()?;
    Ok(PredictDone {
        wrote: job.out.clone(),
        batch,
        outputs: outputs.iter().map(|(k, v)| (k.clone(), v.size())).collect(),
        normalisation: norm,
        warnings,
    })
}

enum OutFormat {
    Safetensors,
    Npz,
}

impl OutFormat {
    fn of(path: &Path) -> Result<OutFormat> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Ok(OutFormat::Safetensors),
            Some("npz") => Ok(OutFormat::Npz),
            _ => crate::usage_bail!("-o {}: write .safetensors or .npz", path.display()),
        }
    }

    fn bytes(&self, outputs: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
        let values: BTreeMap<&String, (Vec<f32>, Vec<usize>)> = outputs
            .iter()
            .map(|(k, v)| {
                let shape = v.size().iter().map(|&d| d as usize).collect();
                Ok((k, (Vec::<f32>::try_from(v.flatten(0, -1))?, shape)))
            })
            .collect::<Result<_>>()?;
        match self {
            OutFormat::Safetensors => {
                let raw: BTreeMap<&String, (Vec<u8>, Vec<usize>)> = values
                    .iter()
                    .map(|(k, (v, s))| (*k, (v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone())))
                    .collect();
                let views: Vec<(&str, safetensors::tensor::TensorView)> = raw
                    .iter()
                    .map(|(k, (b, s))| {
                        Ok((
                            k.as_str(),
                            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
                        ))
                    })
                    .collect::<Result<_>>()?;
                Ok(safetensors::serialize(views, None)?)
            }
            OutFormat::Npz => {
                let mut npz = NpzWriter::new(std::io::Cursor::new(Vec::new()));
                for (k, (v, s)) in values {
                    npz.add_array(k.as_str(), &ndarray::ArrayD::from_shape_vec(s, v)?)?;
                }
                Ok(npz.finish()?.into_inner())
            }
        }
    }
}

/// How image files among `inputs` become the image input: as the model records (or the user
/// stated), else pixels in [0, 1], RGB, with a warning.
fn image_normalisation(
    inputs: &[String],
    graph: &crate::graph::Graph,
    model: &Path,
) -> (Option<crate::graph::Normalisation>, Vec<String>) {
    if !inputs.iter().any(|a| is_image(a)) {
        return (None, Vec::new());
    }
    match graph.image_normalisation() {
        Some(n) => (Some(n.clone()), Vec::new()),
        None => (
            Some(Default::default()),
            vec![format!(
                "{} records no input normalisation: images are read as RGB in [0, 1]; state it with --mean, --std, --bgr, --pixel-range (cut import records it)",
                model.display()
            )],
        ),
    }
}

fn is_image(arg: &str) -> bool {
    let ext = Path::new(arg)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// The arrays of every input argument, by graph input name.
fn read_inputs(
    args: &[String],
    model: &crate::graph::Model,
    norm: &crate::graph::Normalisation,
) -> Result<BTreeMap<String, Tensor>> {
    let graph = &model.graph;
    let (images, args): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| is_image(a));
    let mut out = BTreeMap::new();
    if !images.is_empty() {
        let paths: Vec<&Path> = images.iter().map(|a| Path::new(a.as_str())).collect();
        let (name, batch) = image_input(graph, &paths, norm)?;
        out.insert(name, batch);
    }
    for arg in args {
        if arg.ends_with(".jsonl") {
            out.extend(text_inputs(Path::new(arg), model)?);
            continue;
        }
        let (name, path) = match arg.split_once('=') {
            Some((n, p)) => (Some(n.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(arg)),
        };
        let shown = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => {
                let name = match (name, graph.inputs.as_slice()) {
                    (Some(n), _) => n,
                    (None, [only]) => only.name.clone(),
                    (None, _) => {
                        crate::usage_bail!("{shown}: the model reads several inputs; name this one as NAME={shown}")
                    }
                };
                out.insert(name, read_npy(&path).with_context(|| shown.clone())?);
            }
            Some("npz") => out.extend(read_npz(&path)?),
            Some("safetensors") => out.extend(read_safetensors(&path)?),
            _ => crate::usage_bail!(
                "{shown}: give inputs as .npy, .npz, .safetensors, images (.png, .jpg) or a .jsonl of texts"
            ),
        }
    }
    Ok(out)
}

/// The tensors of a `.safetensors` file (f32 or i64), by name.
fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let shown = path.display();
    let mut out = BTreeMap::new();
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{shown}: cannot read ({e})"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{shown}: {e}"))?;
    for (key, view) in st.tensors() {
        let t = match view.dtype() {
            safetensors::Dtype::F32 => tensor_of(
                view.shape(),
                view.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect::<Vec<f32>>(),
            ),
            safetensors::Dtype::I64 => tensor_of(
                view.shape(),
                view.data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect::<Vec<i64>>(),
            ),
            other => bail!("{shown}: tensor '{key}' is {other:?}; give f32 or i64"),
        };
        out.insert(key, t);
    }
    Ok(out)
}

/// Image files as one batch for the graph's image input, at its size.
fn image_input(
    graph: &crate::graph::Graph,
    paths: &[&Path],
    norm: &crate::graph::Normalisation,
) -> Result<(String, Tensor)> {
    use crate::graph::inputs::InputRole;
    let Some(name) = graph.input_named_by(InputRole::Image) else {
        crate::usage_bail!("{}: the model reads no image", paths[0].display());
    };
    let [channels, height, width] = graph.image_input()?;
    if channels != 3 {
        crate::usage_bail!(
            "{}: the model's image has {channels} channels; image files give 3",
            paths[0].display()
        );
    }
    let batch = crate::data::images::image_batch(paths, height, width, norm)?;
    Ok((name.to_string(), batch))
}

/// A jsonl of texts as token ids and an attention mask, padded to the longest line (or to the
/// length the graph is fixed at).
fn text_inputs(path: &Path, model: &crate::graph::Model) -> Result<BTreeMap<String, Tensor>> {
    use crate::graph::inputs::InputRole;
    let shown = path.display();
    let graph = &model.graph;
    let Some(ids_name) = graph.input_named_by(InputRole::TokenIds) else {
        crate::usage_bail!("{shown}: the model reads no token ids");
    };
    let Some(tokenizer) = &model.tokenizer else {
        crate::usage_bail!(
            "{shown}: the model carries no tokenizer to read text with (give token ids as .npy or .npz)"
        );
    };
    let default = graph.sizes.get("seq").copied().unwrap_or(128);
    let longer = BTreeMap::from([("seq".to_string(), default + 1)]);
    let fixed = crate::graph::shapes::infer_sizes(graph, &longer).is_err();
    let (lines, pad) = crate::data::text::encode_unlabelled(path, tokenizer, if fixed { default } else { 512 })?;
    let length = if fixed {
        default
    } else {
        lines.iter().map(Vec::len).max().unwrap_or(1)
    };
    let mut ids = Vec::with_capacity(lines.len() * length);
    let mut mask = Vec::with_capacity(lines.len() * length);
    for line in &lines {
        ids.extend(line.iter().copied().chain(std::iter::repeat(pad)).take(length));
        mask.extend((0..length).map(|i| i64::from(i < line.len())));
    }
    let shape = [lines.len(), length];
    let mut out = BTreeMap::from([(ids_name.to_string(), tensor_of(&shape, ids))]);
    if let Some(mask_name) = graph.input_named_by(InputRole::AttentionMask) {
        out.insert(mask_name.to_string(), tensor_of(&shape, mask));
    }
    Ok(out)
}

/// Every graph input is given, with one batch size, its dtype and its fixed sizes; returns the
/// batch.
fn check_inputs(given: &BTreeMap<String, Tensor>, graph: &crate::graph::Graph) -> Result<usize> {
    if let Some(extra) = given.keys().find(|k| !graph.inputs.iter().any(|i| &i.name == *k)) {
        let names: Vec<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
        crate::usage_bail!("input '{extra}' is not one the model reads ({})", names.join(", "));
    }
    let mut batch = None;
    for decl in &graph.inputs {
        let Some(t) = given.get(&decl.name) else {
            crate::usage_bail!("no array for input '{}'", decl.name);
        };
        let size = t.size();
        if size.len() != decl.dims.len() + 1 {
            crate::usage_bail!(
                "input '{}' is {:?}: expected a batch then {} dimensions",
                decl.name,
                size,
                decl.dims.len()
            );
        }
        for (d, dim) in decl.dims.iter().enumerate() {
            if let crate::graph::inputs::Dim::Fixed(n) = dim {
                if size[d + 1] != *n as i64 {
                    crate::usage_bail!("input '{}' is {:?}: dimension {} must be {n}", decl.name, size, d + 1);
                }
            }
        }
        let float = matches!(decl.dtype, crate::graph::inputs::InputDType::F32);
        if float != t.is_floating_point() {
            crate::usage_bail!("input '{}' must be {}", decl.name, if float { "f32" } else { "i64" });
        }
        if *batch.get_or_insert(size[0]) != size[0] {
            crate::usage_bail!("the inputs have different batch sizes");
        }
    }
    Ok(batch.unwrap_or(0) as usize)
}
