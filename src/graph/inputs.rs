//! A graph's inputs: each one named (an `input` node of that name reads it), with a dtype and its
//! per-sample dimensions, fixed or named (`height`, `width`, `seq`): a named size is given at run
//! time, and the graph records a default for compute counts.
//!
//! The graph JSON keeps its first form for the one case that existed before: a single f32 image
//! input `[C, height, width]` is written as `"input": {"channels", "height", "width"}` with format 1,
//! so files written before read the same and image models are written byte for byte as before.
//! Any other inputs are written as `"inputs"` and `"sizes"`, with format 2.

use super::{Graph, GraphOutput, Node, Op};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The graph JSON version that declared inputs need; image graphs stay at 1.
pub const DECLARED_INPUTS_FORMAT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputDType {
    /// Floating point (images, features); the interpreter computes in f32 or the model's dtype.
    F32,
    /// Integers (token ids, attention masks).
    I64,
}

/// What an input holds, as the graph says it by how it is read (never by a family's names), so
/// that data readers, benchmarks and splits treat any model's inputs alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// f32 `[C, height, width]`.
    Image,
    /// Integer ids an embedding table looks up.
    TokenIds,
    /// 1 for a real token, 0 for padding: what attention or masked pooling reads beside the tokens.
    AttentionMask,
    /// Any other float input (a split's cloud part reads its features).
    Features,
    /// Any other integer input.
    Integers,
}

/// One per-sample dimension: a fixed size, or a size named in [`Graph::sizes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphInput {
    /// The name of the `input` node that reads it.
    pub name: String,
    pub dtype: InputDType,
    /// Per sample (the batch dimension comes first and is not listed).
    pub dims: Vec<Dim>,
    /// How image files become this input's values, where the model states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalise: Option<Normalisation>,
}

/// How 8-bit pixels become an image input's values: `(pixel / (255 / range) - mean) / std` per
/// channel, in the channel order the model reads. torchvision's ImageNet models take range 1 with
/// mean 0.485,0.456,0.406 and std 0.229,0.224,0.225; Caffe-style models (the SceneNet family's)
/// range 255, a BGR mean and std 1, which computes `pixel - mean` exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// The value a pixel of 255 becomes before the mean is subtracted: 1 or 255.
    pub range: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// Channels in blue, green, red order (OpenCV's), as the mean and std are given.
    pub bgr: bool,
}

impl Default for Normalisation {
    /// Pixels in [0, 1], RGB.
    fn default() -> Self {
        Normalisation {
            range: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            bgr: false,
        }
    }
}

impl Normalisation {
    /// Checks the numbers: a range of 1 or 255, finite means, positive standard deviations.
    pub fn check(&self) -> Result<()> {
        if self.range != 1.0 && self.range != 255.0 {
            crate::usage_bail!("--pixel-range must be 1 or 255 (got {})", self.range);
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            crate::usage_bail!(
                "--std must be positive and --mean finite (got mean {:?}, std {:?})",
                self.mean,
                self.std
            );
        }
        Ok(())
    }

    /// The normalisation `--mean`, `--std`, `--bgr` and `--pixel-range` state (defaults fill
    /// what is not given), or `None` when none is given.
    pub fn from_flags(mean: Option<&str>, std: Option<&str>, bgr: bool, range: Option<f64>) -> Result<Option<Self>> {
        if mean.is_none() && std.is_none() && !bgr && range.is_none() {
            return Ok(None);
        }
        let three = |flag: &str, text: &str| -> Result<[f64; 3]> {
            let values: Vec<f64> = text
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<std::result::Result<Vec<f64>, _>>()
                .unwrap_or_default();
            match values.as_slice() {
                &[a, b, c] => Ok([a, b, c]),
                _ => crate::usage_bail!("{flag} '{text}': expected three numbers such as 0.485,0.456,0.406"),
            }
        };
        let defaults = Normalisation::default();
        let norm = Normalisation {
            range: range.unwrap_or(1.0),
            mean: mean.map_or(Ok(defaults.mean), |t| three("--mean", t))?,
            std: std.map_or(Ok(defaults.std), |t| three("--std", t))?,
            bgr,
        };
        norm.check()?;
        Ok(Some(norm))
    }

    /// The input value of 8-bit `pixel` in the model's channel `channel`, computed in f32.
    pub fn value(&self, pixel: u8, channel: usize) -> f32 {
        let (mean, std) = (self.mean[channel] as f32, self.std[channel] as f32);
        (pixel as f32 / self.divisor() - mean) / std
    }

    /// What pixels are divided by first: 255 for a range of 1, 1 for 255.
    pub fn divisor(&self) -> f32 {
        (255.0 / self.range) as f32
    }

    /// The 8-bit pixel (rounded, clamped) of input value `value` in channel `channel`.
    pub fn pixel(&self, value: f32, channel: usize) -> u8 {
        let (mean, std) = (self.mean[channel] as f32, self.std[channel] as f32);
        ((value * std + mean) * self.divisor()).round().clamp(0.0, 255.0) as u8
    }
}

impl GraphInput {
    /// An image input `[channels, height, width]` named `input`.
    pub fn image(channels: usize) -> GraphInput {
        GraphInput {
            name: "input".into(),
            dtype: InputDType::F32,
            dims: vec![
                Dim::Fixed(channels),
                Dim::Named("height".into()),
                Dim::Named("width".into()),
            ],
            normalise: None,
        }
    }

    /// The per-sample shape at the given sizes; an error names the input and the missing size.
    pub fn shape(&self, sizes: &BTreeMap<String, usize>) -> Result<Vec<usize>> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n),
                Dim::Named(s) => match sizes.get(s) {
                    Some(&n) => Ok(n),
                    None => bail!("input '{}' needs a size for '{s}'", self.name),
                },
            })
            .collect()
    }

    /// Checks a batch given for this input: rank, fixed sizes and dtype.
    pub fn check(&self, t: &Tensor) -> Result<()> {
        let size = t.size();
        let fixed_ok = size.len() == self.dims.len() + 1
            && self
                .dims
                .iter()
                .zip(&size[1..])
                .all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f as i64 != n));
        let kind_ok = match self.dtype {
            InputDType::F32 => t.is_floating_point(),
            InputDType::I64 => t.kind() == Kind::Int64,
        };
        if !fixed_ok || !kind_ok {
            let dims: Vec<String> = self
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Named(s) => s.clone(),
                })
                .collect();
            bail!(
                "input '{}' takes {:?} [N, {}], not {:?} {:?}",
                self.name,
                self.dtype,
                dims.join(", "),
                t.kind(),
                size
            );
        }
        Ok(())
    }
}

/// The sizes of an image input at `[h, w]`.
pub fn image_sizes(height: usize, width: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([("height".to_string(), height), ("width".to_string(), width)])
}

/// The first JSON form of an image graph's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub channels: usize,
    /// Default spatial size used for multiply-accumulate counts.
    pub height: usize,
    pub width: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalise: Option<Normalisation>,
}

/// The graph as its JSON spells it.
#[derive(Serialize, Deserialize)]
pub(super) struct GraphJson {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<InputSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<GraphInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sizes: BTreeMap<String, usize>,
    nodes: Vec<Node>,
    outputs: Vec<GraphOutput>,
}

impl TryFrom<GraphJson> for Graph {
    type Error = String;
    fn try_from(j: GraphJson) -> std::result::Result<Graph, String> {
        if j.format > super::GRAPH_FORMAT {
            return Err(format!(
                "graph format {} is newer than this cut understands ({}); upgrade cut",
                j.format,
                super::GRAPH_FORMAT
            ));
        }
        // Each version has one form: 1 the single image `input`, 2 the declared `inputs`.
        match (j.format, j.input.is_some() && j.inputs.is_empty()) {
            (1, _) | (DECLARED_INPUTS_FORMAT, false) => {}
            (DECLARED_INPUTS_FORMAT, true) => {
                return Err(format!(
                    "graph format {DECLARED_INPUTS_FORMAT} declares 'inputs'; 'input' is format 1's form"
                ))
            }
            (v, _) => return Err(format!("graph format {v} is not a version cut knows (1 or 2)")),
        }
        let (inputs, sizes) = match (j.input, j.inputs.is_empty()) {
            (Some(_), false) => return Err("a graph gives either 'input' or 'inputs', not both".into()),
            (None, true) => return Err("a graph needs 'input' or 'inputs'".into()),
            (None, false) => (j.inputs, j.sizes),
            (Some(spec), true) => {
                let name = j
                    .nodes
                    .iter()
                    .find(|n| matches!(n.op, Op::Input))
                    .map_or("input".to_string(), |n| n.name.clone());
                let input = GraphInput {
                    name,
                    normalise: spec.normalise,
                    ..GraphInput::image(spec.channels)
                };
                (vec![input], image_sizes(spec.height, spec.width))
            }
        };
        Ok(Graph {
            family: j.family,
            inputs,
            sizes,
            nodes: j.nodes,
            outputs: j.outputs,
        })
    }
}

impl From<Graph> for GraphJson {
    fn from(g: Graph) -> GraphJson {
        let (format, input, inputs, sizes) = match g.image_spec() {
            Some(spec) => (1, Some(spec), Vec::new(), BTreeMap::new()),
            None => (DECLARED_INPUTS_FORMAT, None, g.inputs, g.sizes),
        };
        GraphJson {
            format,
            family: g.family,
            input,
            inputs,
            sizes,
            nodes: g.nodes,
            outputs: g.outputs,
        }
    }
}

impl Graph {
    /// The first JSON form, when the graph has exactly one f32 `[C, height, width]` input and
    /// defaults for just those two sizes.
    fn image_spec(&self) -> Option<InputSpec> {
        let [input] = self.inputs.as_slice() else { return None };
        let channels = match input.dims.as_slice() {
            [Dim::Fixed(c), Dim::Named(h), Dim::Named(w)] if h == "height" && w == "width" => *c,
            _ => return None,
        };
        let only_hw = self.sizes.len() == 2;
        match (input.dtype, self.sizes.get("height"), self.sizes.get("width")) {
            (InputDType::F32, Some(&height), Some(&width)) if only_hw => Some(InputSpec {
                channels,
                height,
                width,
                normalise: input.normalise.clone(),
            }),
            _ => None,
        }
    }

    /// `[C, H, W]` at the default sizes, for a graph whose one input is an image; an error otherwise.
    pub fn image_input(&self) -> Result<[usize; 3]> {
        match self.image_spec() {
            Some(s) => Ok([s.channels, s.height, s.width]),
            None => bail!("this graph's inputs are not one [C, height, width] image"),
        }
    }

    /// How image files become the image input, where the graph states it.
    pub fn image_normalisation(&self) -> Option<&Normalisation> {
        self.inputs
            .iter()
            .find(|d| self.input_role(d) == InputRole::Image)
            .and_then(|d| d.normalise.as_ref())
    }

    /// Records `norm` on the graph's three-channel image inputs; an error where it has none.
    pub fn set_image_normalisation(&mut self, norm: &Normalisation) -> Result<()> {
        norm.check()?;
        let images: Vec<usize> = (0..self.inputs.len())
            .filter(|&i| {
                self.input_role(&self.inputs[i]) == InputRole::Image && self.inputs[i].dims[0] == Dim::Fixed(3)
            })
            .collect();
        if images.is_empty() {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            crate::usage_bail!(
                "--mean, --std, --bgr and --pixel-range describe a [3, height, width] image input; this model's inputs ({}) hold none",
                names.join(", ")
            );
        }
        for i in images {
            self.inputs[i].normalise = Some(norm.clone());
        }
        Ok(())
    }

    /// The declaration of the input read by node `name`.
    pub fn input_decl(&self, name: &str) -> Option<&GraphInput> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// What input `decl` holds, from the ops that read it.
    pub fn input_role(&self, decl: &GraphInput) -> InputRole {
        let read_as = |slot: usize, op: fn(&Op) -> bool| {
            self.nodes
                .iter()
                .any(|n| op(&n.op) && n.inputs.get(slot).is_some_and(|i| *i == decl.name))
        };
        if read_as(0, |op| matches!(op, Op::Embeddings(_) | Op::Embedding(_))) {
            return InputRole::TokenIds;
        }
        if read_as(1, |op| matches!(op, Op::SelfAttention(_) | Op::MaskedMean))
            || read_as(0, |op| matches!(op, Op::MaskPool(_) | Op::MaskBias(_)))
        {
            return InputRole::AttentionMask;
        }
        match (decl.dtype, decl.dims.as_slice()) {
            (InputDType::F32, [Dim::Fixed(_), Dim::Named(h), Dim::Named(w)]) if h == "height" && w == "width" => {
                InputRole::Image
            }
            (InputDType::F32, _) => InputRole::Features,
            (InputDType::I64, _) => InputRole::Integers,
        }
    }

    /// A random batch of `batch` samples for every input at `sizes` (for timing, not for values):
    /// floats from a normal distribution, token ids from the vocabulary past the first special
    /// tokens, full attention masks, other integers 1. Seed tch's generator first for repeatable
    /// values.
    pub fn random_inputs(
        &self,
        batch: usize,
        sizes: &BTreeMap<String, usize>,
        device: tch::Device,
    ) -> Result<BTreeMap<String, Tensor>> {
        let vocab = self.vocab_rows().map_or(4, |v| v as i64).max(2);
        self.inputs
            .iter()
            .map(|decl| {
                let mut shape = vec![batch as i64];
                shape.extend(decl.shape(sizes)?.iter().map(|&d| d as i64));
                let t = match self.input_role(decl) {
                    InputRole::Image | InputRole::Features => Tensor::randn(shape.as_slice(), (Kind::Float, device)),
                    InputRole::TokenIds => {
                        Tensor::randint_low(3.min(vocab - 1), vocab, shape.as_slice(), (Kind::Int64, device))
                    }
                    InputRole::AttentionMask | InputRole::Integers => {
                        Tensor::ones(shape.as_slice(), (Kind::Int64, device))
                    }
                };
                Ok((decl.name.clone(), t))
            })
            .collect()
    }

    /// The name of the first input that holds `role`.
    pub fn input_named_by(&self, role: InputRole) -> Option<&str> {
        self.inputs
            .iter()
            .find(|d| self.input_role(d) == role)
            .map(|d| d.name.as_str())
    }

    /// A zero batch of one sample for every input at the default sizes (for analyses that probe
    /// constants, such as the bias fold of removed channels); attention masks are full, so that
    /// every token is present.
    pub fn zero_inputs(&self, device: tch::Device) -> Result<BTreeMap<String, Tensor>> {
        self.inputs
            .iter()
            .map(|i| {
                let mut shape: Vec<i64> = vec![1];
                shape.extend(i.shape(&self.sizes)?.iter().map(|&d| d as i64));
                let kind = match i.dtype {
                    InputDType::F32 => Kind::Float,
                    InputDType::I64 => Kind::Int64,
                };
                let t = match self.input_role(i) {
                    InputRole::AttentionMask => Tensor::ones(shape.as_slice(), (kind, device)),
                    _ => Tensor::zeros(shape.as_slice(), (kind, device)),
                };
                Ok((i.name.clone(), t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::interpreter::{forward_inputs, Mode};
    use crate::graph::tests_support::two_head_graph;
    use crate::graph::{shapes, Linear, Params};
    use tch::Device;

    /// A sequence graph: a [seq, 4] float input and an i64 [seq] one (unused by the output but
    /// declared), a second float input added to the first, then a linear layer 4 -> 3 on [N, seq, 4].
    fn sequence_graph() -> Graph {
        let input = |name: &str, dtype, dims| GraphInput {
            name: name.into(),
            dtype,
            dims,
            normalise: None,
        };
        let seq = || Dim::Named("seq".into());
        Graph {
            family: None,
            inputs: vec![
                input("a", InputDType::F32, vec![seq(), Dim::Fixed(4)]),
                input("b", InputDType::F32, vec![seq(), Dim::Fixed(4)]),
                input("ids", InputDType::I64, vec![seq()]),
            ],
            sizes: BTreeMap::from([("seq".to_string(), 128)]),
            nodes: vec![
                Node::new("a", &[], Op::Input),
                Node::new("b", &[], Op::Input),
                Node::new("ids", &[], Op::Input),
                Node::new("sum", &["a", "b"], Op::Add),
                Node::new(
                    "proj",
                    &["sum"],
                    Op::Linear(Linear {
                        weight: "proj.weight".into(),
                        bias: Some("proj.bias".into()),
                        in_features: 4,
                        out_features: 3,
                    }),
                ),
            ],
            outputs: vec![GraphOutput {
                task: "t".into(),
                node: "proj".into(),
            }],
        }
    }

    #[test]
    fn image_graphs_keep_the_first_json_form_declared_inputs_take_format_2() {
        let image = two_head_graph();
        let text = serde_json::to_string(&image).unwrap();
        assert!(
            text.starts_with(r#"{"format":1,"input":{"channels":2,"height":4,"width":4},"nodes":"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Graph>(&text).unwrap(), image);

        let seq = sequence_graph();
        seq.validate().unwrap();
        let text = serde_json::to_string(&seq).unwrap();
        assert!(
            text.starts_with(r#"{"format":2,"inputs":[{"name":"a","dtype":"f32","dims":["seq",4]}"#),
            "{text}"
        );
        assert!(text.contains(r#""sizes":{"seq":128}"#), "{text}");
        assert_eq!(serde_json::from_str::<Graph>(&text).unwrap(), seq);

        // The first form names its input after the graph's input node.
        let legacy = r#"{"format":1,"input":{"channels":3,"height":5,"width":6},
            "nodes":[{"name":"image","op":"input"}],"outputs":[{"task":"t","node":"image"}]}"#;
        let g: Graph = serde_json::from_str(legacy).unwrap();
        assert_eq!(g.inputs[0].name, "image");
        assert_eq!(g.image_input().unwrap(), [3, 5, 6]);
        g.validate().unwrap();

        let both = text.replacen(
            r#""inputs""#,
            r#""input":{"channels":3,"height":5,"width":6},"inputs""#,
            1,
        );
        let err = serde_json::from_str::<Graph>(&both).unwrap_err().to_string();
        assert!(err.contains("either 'input' or 'inputs'"), "{err}");
        assert!(seq.image_input().is_err());
    }

    #[test]
    fn image_normalisation_is_recorded_in_both_json_forms() {
        let mut image = two_head_graph();
        assert_eq!(image.image_normalisation(), None);
        let caffe = crate::data::layout::reference_normalisation();
        // Two channels are not an RGB image.
        assert!(image.set_image_normalisation(&caffe).is_err());
        image.inputs[0].dims[0] = Dim::Fixed(3);
        image.set_image_normalisation(&caffe).unwrap();
        let text = serde_json::to_string(&image).unwrap();
        assert!(
            text.contains(r#""input":{"channels":3,"height":4,"width":4,"normalise":{"range":255.0,"mean":[104.00699,116.66877,122.67892],"std":[1.0,1.0,1.0],"bgr":true}}"#),
            "{text}"
        );
        let back: Graph = serde_json::from_str(&text).unwrap();
        assert_eq!(back.image_normalisation(), Some(&caffe));
        // Range 255, std 1: the stored pixel minus the mean, exactly; and back.
        let blue = crate::data::layout::BGR_MEAN[0] as f32;
        // The f64 mean rounds to the f32 the reference's code subtracts.
        assert_eq!(blue, 104.006_99f32);
        assert_eq!(caffe.value(200, 0), 200.0 - blue);
        assert_eq!(caffe.pixel(200.0 - blue, 0), 200);
        let torch = Normalisation {
            mean: [0.5; 3],
            std: [0.25; 3],
            ..Default::default()
        };
        assert_eq!(torch.value(255, 1), 2.0);
        assert_eq!(torch.pixel(2.0, 1), 255);

        let mut seq = sequence_graph();
        let err = seq.set_image_normalisation(&torch).unwrap_err().to_string();
        assert!(err.contains("this model's inputs (a, b, ids) hold none"), "{err}");
        let bad = Normalisation {
            range: 10.0,
            ..Default::default()
        };
        assert!(image.set_image_normalisation(&bad).is_err());
    }

    #[test]
    fn shapes_and_macs_follow_the_named_sizes() {
        let g = sequence_graph();
        for seq in [7usize, 13] {
            let sizes = BTreeMap::from([("seq".to_string(), seq)]);
            let shapes = shapes::infer_sizes(&g, &sizes).unwrap();
            assert_eq!(shapes["ids"], vec![seq]);
            assert_eq!(shapes["proj"], vec![seq, 3]);
            assert_eq!(shapes::macs(&g, &shapes)["proj"], (seq * 4 * 3) as u64);
        }
        // The default size fills in.
        assert_eq!(shapes::infer_sizes(&g, &BTreeMap::new()).unwrap()["proj"], vec![128, 3]);
        let mut no_default = g.clone();
        no_default.sizes.clear();
        let err = no_default.validate().unwrap_err().to_string();
        assert_eq!(err, "graph input 'a' needs a size for 'seq' (no default in 'sizes')");
        let mut undeclared = g.clone();
        undeclared.inputs.pop();
        let err = undeclared.validate().unwrap_err().to_string();
        assert_eq!(err, "graph input node 'ids' has no entry in the graph's inputs");
    }

    #[test]
    fn forward_takes_inputs_by_name_and_checks_them() {
        let g = sequence_graph();
        let mut params = Params::new();
        // proj: y = [x0 + x1, x2 - x3, 2 x0] + [1, 0, -1].
        let w = [1f32, 1., 0., 0., 0., 0., 1., -1., 2., 0., 0., 0.];
        params.insert("proj.weight".into(), Tensor::from_slice(&w).view([3, 4]));
        params.insert("proj.bias".into(), Tensor::from_slice(&[1f32, 0., -1.]));
        let a = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 7., 8.]).view([1, 2, 4]);
        let b = Tensor::ones([1, 2, 4], (Kind::Float, Device::Cpu));
        let ids = Tensor::from_slice(&[5i64, 9]).view([1, 2]);
        let inputs = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b), ("ids".to_string(), ids)]);
        let out = forward_inputs(&g, &params, &inputs, &["t"], Mode::Eval).unwrap();
        // sum = a + 1: rows [2, 3, 4, 5] and [6, 7, 8, 9].
        let want = Tensor::from_slice(&[6f32, -1., 3., 14., -1., 11.]).view([1, 2, 3]);
        assert!(out["t"].allclose(&want, 1e-6, 1e-6, false), "{:?}", out["t"]);

        let copy = |m: &BTreeMap<String, Tensor>| -> BTreeMap<String, Tensor> {
            m.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()
        };
        let mut wrong = copy(&inputs);
        wrong.insert("ids".into(), Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)));
        let err = forward_inputs(&g, &params, &wrong, &["t"], Mode::Eval)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "input 'ids' takes I64 [N, seq], not Float [1, 2]");
        let mut missing = copy(&inputs);
        missing.remove("b");
        let err = forward_inputs(&g, &params, &missing, &["t"], Mode::Eval)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "no batch was given for input 'b'");
        let err = crate::graph::interpreter::forward(&g, &params, &inputs["a"], &["t"], Mode::Eval)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the graph reads 3 inputs (a, b, ids); give each by name");
    }
}
