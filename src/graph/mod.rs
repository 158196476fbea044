//! The typed model graph stored in a checkpoint's metadata, its validation and its analyses
//! (parameter specs, shape inference, multiply-accumulates, task membership of nodes).

pub(crate) mod arith;
pub mod inference;
pub mod init;
pub mod inputs;
pub mod interpreter;
pub mod kernels;
pub mod memory;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod shapes;

pub use inputs::{image_sizes, Dim, GraphInput, InputDType, InputRole, InputSpec, Normalisation};
pub use ops::{BatchNorm, Conv2d, Linear, MaxPool, Mode, Op, OpDef, Upsample, UpsampleMode};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The newest graph JSON version this build reads and writes. A graph is written with the oldest
/// version that can hold it (1 for a single image input, 2 for declared inputs; see [`inputs`]).
pub const GRAPH_FORMAT: u32 = inputs::DECLARED_INPUTS_FORMAT;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "inputs::GraphJson", into = "inputs::GraphJson")]
pub struct Graph {
    /// Model family that emitted the graph ("scenenet"), for display only.
    pub family: Option<String>,
    /// What the graph reads, one `input` node per entry, by name.
    pub inputs: Vec<GraphInput>,
    /// Default values of the named sizes in `inputs` (for compute counts and probes).
    pub sizes: BTreeMap<String, usize>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<GraphOutput>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphOutput {
    pub task: String,
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// The task head this node belongs to, when the builder knows it. Without it, membership is
    /// derived from which task outputs the node reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

/// Parameter tensors by name, on one device.
pub type Params = BTreeMap<String, tch::Tensor>;

/// What a parameter tensor is to its node; initialisation and pruning depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    ConvWeight,
    ConvBias,
    LinearWeight,
    LinearBias,
    BnWeight,
    BnBias,
    BnRunningMean,
    BnRunningVar,
    BnBatchesTracked,
    /// A lookup table [rows, H] (token, position, token type).
    Embedding,
    NormWeight,
    NormBias,
    /// A tensor an element-wise op reads, trained (an imported model's position embedding, class
    /// token or layer scale).
    Tensor,
    /// A tensor an element-wise op reads, fixed (an imported model's literal constants).
    Constant,
}

impl ParamRole {
    /// Conv and linear weights: what unstructured pruning masks.
    pub fn is_prunable_weight(self) -> bool {
        matches!(self, ParamRole::ConvWeight | ParamRole::LinearWeight)
    }
    /// Buffers are not trained.
    pub fn is_buffer(self) -> bool {
        matches!(
            self,
            ParamRole::BnRunningMean | ParamRole::BnRunningVar | ParamRole::BnBatchesTracked | ParamRole::Constant
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub node: String,
    pub role: ParamRole,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Segmentation,
    Normal,
    Depth,
    Classification,
    Regression,
    /// A class per word of a text, predicted from the word's first sub-word token.
    Token,
    /// A class per text, from the first token (through the pooler when the encoder has one).
    Sequence,
    /// A class per text, from the attention-masked mean of the last hidden states.
    #[serde(rename = "sequence-mean")]
    SequenceMean,
    /// What a split model's device part sends on (no labels; see `crate::split`).
    Features,
    /// An imported model's output with no labelled kind given (`cut import --task-kinds`).
    Output,
}

impl TaskKind {
    pub fn parse(text: &str) -> Result<TaskKind> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "segmentation" | "seg" => TaskKind::Segmentation,
            "normal" | "sn" | "normals" => TaskKind::Normal,
            "depth" => TaskKind::Depth,
            "classification" | "cls" => TaskKind::Classification,
            "regression" | "reg" => TaskKind::Regression,
            "token" => TaskKind::Token,
            "sequence" => TaskKind::Sequence,
            "sequence-mean" => TaskKind::SequenceMean,
            "features" => TaskKind::Features,
            "output" => TaskKind::Output,
            other => bail!(
                "unknown task kind '{other}' (expected segmentation, normal, depth, classification, regression, token, sequence, sequence-mean, features or output)"
            ),
        })
    }
    /// Whether a dataset can label tasks of this kind (a split's features and an imported
    /// output nobody named have no labels).
    pub fn has_labels(self) -> bool {
        !matches!(self, TaskKind::Features | TaskKind::Output)
    }
    /// Whether tasks of this kind read text.
    pub fn is_text(self) -> bool {
        matches!(self, TaskKind::Token | TaskKind::Sequence | TaskKind::SequenceMean)
    }

    /// What the samples of tasks of these kinds are called in reports: "texts" or "images".
    pub fn samples_noun(kinds: impl IntoIterator<Item = TaskKind>) -> &'static str {
        if kinds.into_iter().any(TaskKind::is_text) {
            "texts"
        } else {
            "images"
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Segmentation => "segmentation",
            TaskKind::Normal => "normal",
            TaskKind::Depth => "depth",
            TaskKind::Classification => "classification",
            TaskKind::Regression => "regression",
            TaskKind::Token => "token",
            TaskKind::Sequence => "sequence",
            TaskKind::SequenceMean => "sequence-mean",
            TaskKind::Features => "features",
            TaskKind::Output => "output",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// Width of the task's output (classes for segmentation, 3 for normals, 1 for depth).
    pub outputs: usize,
    /// The class names, one per output row, where the model has them (text models: the labels
    /// the data spells out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// This run trains and scores the task by matching the unpruned model's outputs
    /// (`crate::tasks::distill`) rather than labels. A property of a run, never of a checkpoint.
    #[serde(skip)]
    pub distill: bool,
}

/// A graph with its task list: everything needed to run a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub graph: Graph,
    pub tasks: Vec<TaskSpec>,
    /// A text model's tokenizer (the text of a Hugging Face `tokenizer.json`), which travels with
    /// the model into every checkpoint cut writes.
    pub tokenizer: Option<std::sync::Arc<String>>,
}

/// Where a node or parameter sits: the shared backbone or one task's head.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "group", content = "task")]
pub enum Group {
    Backbone,
    Head(String),
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::Backbone => write!(f, "backbone"),
            Group::Head(task) => write!(f, "head {task}"),
        }
    }
}

impl Node {
    pub fn new(name: impl Into<String>, inputs: &[&str], op: Op) -> Node {
        Node {
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            head: None,
            op,
        }
    }

    /// The parameter tensors this node references, with their roles and expected shapes.
    pub fn params(&self) -> Vec<ops::ParamSlot> {
        self.op.def().params()
    }

    fn arity(&self) -> (usize, usize) {
        self.op.def().arity()
    }
}

impl Graph {
    /// The most tokens the position table holds (RoBERTa's numbering starts after its padding id).
    pub fn max_tokens(&self) -> Option<usize> {
        self.nodes.iter().find_map(|n| match &n.op {
            Op::Embeddings(e) => Some(e.positions.saturating_sub(e.padding_idx.map_or(0, |p| p as usize + 1))),
            _ => None,
        })
    }

    /// Rows of the token embedding table, for a graph that reads token ids.
    pub fn vocab_rows(&self) -> Option<usize> {
        self.nodes.iter().find_map(|n| match &n.op {
            Op::Embeddings(e) => Some(e.vocab),
            Op::Embedding(e) => Some(e.rows),
            _ => None,
        })
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The first input node.
    pub fn input_node(&self) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| matches!(n.op, Op::Input))
            .ok_or_else(|| anyhow::anyhow!("graph has no input node"))
    }

    pub fn tasks(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.task.as_str()).collect()
    }

    /// Structural checks: unique names, inputs defined before use, arities, one input, outputs.
    pub fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        let mut inputs = 0;
        for node in &self.nodes {
            if !seen.insert(node.name.as_str()) {
                bail!("graph node '{}' is defined twice", node.name);
            }
            if matches!(node.op, Op::Input) {
                inputs += 1;
                if self.input_decl(&node.name).is_none() {
                    bail!("graph input node '{}' has no entry in the graph's inputs", node.name);
                }
            }
            let (lo, hi) = node.arity();
            if node.inputs.len() < lo || node.inputs.len() > hi {
                bail!(
                    "graph node '{}' has {} inputs, its op takes {lo}{}",
                    node.name,
                    node.inputs.len(),
                    if hi == usize::MAX {
                        " or more".to_string()
                    } else if hi == lo {
                        String::new()
                    } else {
                        format!("..{hi}")
                    }
                );
            }
            for input in &node.inputs {
                if !seen.contains(input.as_str()) || input == &node.name {
                    bail!(
                        "graph node '{}' reads '{}', which is not defined before it",
                        node.name,
                        input
                    );
                }
            }
            node.op.def().validate(&node.name)?;
            if let Some(task) = &node.head {
                if !self.outputs.iter().any(|o| &o.task == task) {
                    bail!(
                        "graph node '{}' is in the head of task '{task}', which the graph has no output for",
                        node.name
                    );
                }
            }
        }
        if inputs != self.inputs.len() || inputs == 0 {
            bail!(
                "graph has {inputs} input nodes, expected one per declared input ({})",
                self.inputs.len()
            );
        }
        for input in &self.inputs {
            input
                .shape(&self.sizes)
                .map_err(|e| anyhow::anyhow!("graph {e} (no default in 'sizes')"))?;
        }
        if self.outputs.is_empty() {
            bail!("graph has no task outputs");
        }
        let mut tasks = BTreeSet::new();
        for out in &self.outputs {
            if !tasks.insert(out.task.as_str()) {
                bail!("graph output for task '{}' is defined twice", out.task);
            }
            if !seen.contains(out.node.as_str()) {
                bail!(
                    "graph output for task '{}' names node '{}', which does not exist",
                    out.task,
                    out.node
                );
            }
        }
        let mut params = BTreeSet::new();
        for node in &self.nodes {
            for (name, _, _) in node.params() {
                if !params.insert(name.clone()) {
                    bail!("tensor '{name}' is used by more than one graph node");
                }
            }
        }
        Ok(())
    }

    /// Every parameter tensor the graph references, in node order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.params().into_iter().map(move |(name, role, shape)| ParamSpec {
                    name,
                    node: node.name.clone(),
                    role,
                    shape,
                })
            })
            .collect()
    }

    /// For each node, the tasks whose outputs depend on it.
    pub fn task_reach(&self) -> HashMap<String, BTreeSet<String>> {
        let mut reach: HashMap<String, BTreeSet<String>> =
            self.nodes.iter().map(|n| (n.name.clone(), BTreeSet::new())).collect();
        for out in &self.outputs {
            if let Some(set) = reach.get_mut(&out.node) {
                set.insert(out.task.clone());
            }
        }
        for node in self.nodes.iter().rev() {
            let tasks = reach[&node.name].clone();
            for input in &node.inputs {
                if let Some(set) = reach.get_mut(input) {
                    set.extend(tasks.iter().cloned());
                }
            }
        }
        reach
    }

    /// Backbone or head of each node: the `head` annotation where present, otherwise a node that
    /// only one task's output depends on (in a graph with several tasks) belongs to that task's head.
    pub fn node_groups(&self) -> HashMap<String, Group> {
        let reach = self.task_reach();
        let several = self.outputs.len() > 1;
        self.nodes
            .iter()
            .map(|node| {
                let group = match &node.head {
                    Some(task) => Group::Head(task.clone()),
                    None => {
                        let tasks = &reach[&node.name];
                        if several && tasks.len() == 1 {
                            Group::Head(tasks.iter().next().unwrap().clone())
                        } else {
                            Group::Backbone
                        }
                    }
                };
                (node.name.clone(), group)
            })
            .collect()
    }

    /// Group of every parameter tensor.
    pub fn param_groups(&self) -> BTreeMap<String, Group> {
        let groups = self.node_groups();
        self.param_specs()
            .into_iter()
            .map(|spec| {
                let group = groups[&spec.node].clone();
                (spec.name, group)
            })
            .collect()
    }

    /// Nodes needed to compute the given tasks' outputs.
    pub fn needed_nodes(&self, tasks: &[&str]) -> BTreeSet<String> {
        let mut needed: BTreeSet<String> = self
            .outputs
            .iter()
            .filter(|o| tasks.contains(&o.task.as_str()))
            .map(|o| o.node.clone())
            .collect();
        for node in self.nodes.iter().rev() {
            if needed.contains(&node.name) {
                for input in &node.inputs {
                    needed.insert(input.clone());
                }
            }
        }
        needed
    }

    /// The graph restricted to the given tasks: other outputs and the nodes only they used are gone.
    pub fn keep_tasks(&self, tasks: &[&str]) -> Graph {
        let needed = self.needed_nodes(tasks);
        let groups = self.node_groups();
        let mut graph = self.clone();
        graph.nodes.retain(|n| needed.contains(&n.name));
        // Pin head membership so a single-task graph still knows its head from its backbone.
        for node in &mut graph.nodes {
            if let Group::Head(task) = &groups[&node.name] {
                node.head = Some(task.clone());
            }
        }
        graph.outputs.retain(|o| tasks.contains(&o.task.as_str()));
        graph
    }
}

impl Model {
    /// Checks that graph and task list agree.
    pub fn validate(&self) -> Result<()> {
        self.graph.validate()?;
        let graph_tasks: BTreeSet<&str> = self.graph.tasks().into_iter().collect();
        let listed: BTreeSet<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
        if listed.len() != self.tasks.len() {
            bail!("task list names a task twice");
        }
        if graph_tasks != listed {
            bail!(
                "task list ({}) does not match the graph's outputs ({})",
                listed.into_iter().collect::<Vec<_>>().join(","),
                graph_tasks.into_iter().collect::<Vec<_>>().join(",")
            );
        }
        for task in &self.tasks {
            if task.name.is_empty() || task.name.contains(',') {
                bail!("task name '{}' is empty or contains a comma", task.name);
            }
            if task.outputs == 0 {
                bail!("task '{}' has 0 outputs", task.name);
            }
        }
        // An image graph's task outputs are [C, H, W]: C must be what the task list says.
        if let Ok(input) = self.graph.image_input() {
            let shapes = shapes::infer(&self.graph, input)?;
            for out in &self.graph.outputs {
                let width = shapes[&out.node].first().copied().unwrap_or(0);
                let task = self.task(&out.task).expect("task lists match (checked above)");
                if width != task.outputs {
                    bail!(
                        "task '{}' is listed with {} outputs, but its head '{}' produces {width}",
                        task.name,
                        task.outputs,
                        out.node
                    );
                }
            }
        }
        Ok(())
    }

    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    /// Resolves a user's task selection: every name must exist, none twice, at least one.
    pub fn select_tasks(&self, names: &[String]) -> Result<Vec<TaskSpec>> {
        if names.is_empty() {
            bail!("no tasks given (the model has: {})", self.task_names().join(", "));
        }
        let mut out: Vec<TaskSpec> = Vec::new();
        for name in names {
            let Some(task) = self.task(name) else {
                bail!(
                    "unknown task '{name}' (the model has: {})",
                    self.task_names().join(", ")
                );
            };
            if out.iter().any(|t| &t.name == name) {
                bail!("task '{name}' is given twice");
            }
            out.push(task.clone());
        }
        Ok(out)
    }

    /// The model restricted to the given tasks.
    pub fn keep_tasks(&self, tasks: &[&str]) -> Model {
        Model {
            tokenizer: self.tokenizer.clone(),
            graph: self.graph.keep_tasks(tasks),
            tasks: self
                .tasks
                .iter()
                .filter(|t| tasks.contains(&t.name.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// Parses a comma-separated task list such as "seg,depth".
pub fn parse_task_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Small graphs shared by unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A SceneNet small enough to run in milliseconds, with tasks seg (5 classes), normal, depth.
    pub fn small_scenenet() -> crate::families::scenenet::SceneNetConfig {
        let mut c = crate::families::scenenet::SceneNetConfig::reference(crate::families::scenenet::scene_tasks(5));
        c.blocks = vec![1, 1, 1, 1];
        c.widths = vec![8, 8, 16, 16];
        c.stem_width = 8;
        c.head_width = 16;
        c.input_hw = [64, 64];
        c
    }

    /// A 1x1 convolution reading `{name}.weight`, and `{name}.bias` when `bias`.
    pub fn pointwise(name: &str, cin: usize, cout: usize, bias: bool) -> Op {
        Op::Conv2d(Conv2d {
            weight: format!("{name}.weight"),
            bias: bias.then(|| format!("{name}.bias")),
            in_channels: cin,
            out_channels: cout,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            relu: false,
            live_taps: None,
        })
    }

    /// input -> stem conv -> two heads (a: conv, b: conv -> relu); b's relu is only b's.
    pub fn two_head_graph() -> Graph {
        let conv = |name: &str, cin: usize, cout: usize| pointwise(name, cin, cout, true);
        Graph {
            family: None,
            inputs: vec![GraphInput::image(2)],
            sizes: image_sizes(4, 4),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("stem", &["input"], conv("stem", 2, 3)),
                Node::new("a", &["stem"], conv("a", 3, 1)),
                Node::new("b", &["stem"], conv("b", 3, 2)),
                Node::new("b_relu", &["b"], Op::Relu),
            ],
            outputs: vec![
                GraphOutput {
                    task: "ta".into(),
                    node: "a".into(),
                },
                GraphOutput {
                    task: "tb".into(),
                    node: "b_relu".into(),
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn groups_follow_task_reach() {
        let g = two_head_graph();
        g.validate().unwrap();
        let groups = g.node_groups();
        assert_eq!(groups["stem"], Group::Backbone);
        assert_eq!(groups["a"], Group::Head("ta".into()));
        assert_eq!(groups["b_relu"], Group::Head("tb".into()));
        let pg = g.param_groups();
        assert_eq!(pg["stem.weight"], Group::Backbone);
        assert_eq!(pg["b.bias"], Group::Head("tb".into()));
    }

    #[test]
    fn keep_tasks_drops_other_heads_and_pins_membership() {
        let g = two_head_graph().keep_tasks(&["tb"]);
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "stem", "b", "b_relu"]);
        assert_eq!(g.outputs.len(), 1);
        // With one task left, membership comes from the pinned annotation, not from reach.
        let groups = g.node_groups();
        assert_eq!(groups["stem"], Group::Backbone);
        assert_eq!(groups["b"], Group::Head("tb".into()));
    }

    #[test]
    fn validate_rejects_bad_graphs() {
        let mut g = two_head_graph();
        g.nodes[2].inputs = vec!["b".into()];
        assert!(g
            .validate()
            .unwrap_err()
            .to_string()
            .contains("'a' reads 'b', which is not defined before it"));
        let mut g = two_head_graph();
        g.nodes.push(Node::new("a", &["stem"], Op::Relu));
        assert!(g.validate().unwrap_err().to_string().contains("defined twice"));
        let mut g = two_head_graph();
        g.nodes.push(Node::new("sum", &["a"], Op::Add));
        assert!(g.validate().unwrap_err().to_string().contains("has 1 inputs"));
        let mut g = two_head_graph();
        if let Op::Conv2d(c) = &mut g.nodes[1].op {
            c.stride = [1, 0];
        }
        let err = g.validate().unwrap_err().to_string();
        assert_eq!(err, "graph node 'stem' has a zero kernel size, stride or dilation");
        let mut g = two_head_graph();
        g.nodes[2].head = Some("nope".into());
        let err = g.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "graph node 'a' is in the head of task 'nope', which the graph has no output for"
        );
        // Counts from hostile sizes saturate instead of wrapping round to a small number.
        let huge = vec![1usize << 40, 1 << 30, 1];
        assert_eq!(
            tests_support::pointwise("w", 1 << 20, 1 << 40, false)
                .def()
                .macs(&[&huge], &huge),
            Some(u64::MAX)
        );
        let newer = serde_json::to_string(&two_head_graph())
            .unwrap()
            .replacen(r#""format":1"#, r#""format":3"#, 1);
        let err = serde_json::from_str::<Graph>(&newer).unwrap_err().to_string();
        assert!(
            err.starts_with("graph format 3 is newer than this cut understands (2); upgrade cut"),
            "{err}"
        );
    }

    #[test]
    fn graph_json_round_trips() {
        let g = two_head_graph();
        let text = serde_json::to_string(&g).unwrap();
        assert!(text.contains(r#""op":"conv2d""#), "{text}");
        let back: Graph = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn select_tasks_checks_names() {
        let model = Model {
            tokenizer: None,
            graph: two_head_graph(),
            tasks: vec![
                TaskSpec {
                    name: "ta".into(),
                    kind: TaskKind::Depth,
                    outputs: 1,
                    labels: None,
                    distill: false,
                },
                TaskSpec {
                    name: "tb".into(),
                    kind: TaskKind::Segmentation,
                    outputs: 2,
                    labels: None,
                    distill: false,
                },
            ],
        };
        model.validate().unwrap();
        assert_eq!(model.select_tasks(&["tb".into()]).unwrap()[0].name, "tb");
        let err = model.select_tasks(&["tc".into()]).unwrap_err().to_string();
        assert_eq!(err, "unknown task 'tc' (the model has: ta, tb)");
        assert!(model
            .select_tasks(&["ta".into(), "ta".into()])
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(model.select_tasks(&[]).unwrap_err().to_string().contains("no tasks"));
    }

    #[test]
    fn shapes_and_macs_by_hand() {
        let g = two_head_graph();
        let shapes = shapes::infer(&g, [2, 4, 4]).unwrap();
        assert_eq!(shapes["b_relu"], vec![2, 4, 4]);
        let macs = shapes::macs(&g, &shapes);
        // 1x1 convs: H*W*Cout*Cin.
        assert_eq!(macs["stem"], 16 * 3 * 2);
        assert_eq!(macs["a"], 16 * 3); // one output channel
        assert_eq!(macs["b"], 16 * 2 * 3);
        assert!(shapes::infer(&g, [3, 4, 4]).is_err());
    }

    #[test]
    fn scenenet_reference_sizes_and_names() {
        let tasks = crate::families::scenenet::scene_tasks(40);
        let model = crate::families::scenenet::SceneNetConfig::reference(tasks)
            .build()
            .unwrap();
        let specs = model.graph.param_specs();
        let groups = model.graph.param_groups();
        let conv: usize = specs
            .iter()
            .filter(|s| s.role.is_prunable_weight())
            .map(|s| s.numel())
            .sum();
        let backbone: usize = specs
            .iter()
            .filter(|s| s.role.is_prunable_weight() && groups[&s.name] == Group::Backbone)
            .map(|s| s.numel())
            .sum();
        // The note's figures: backbone conv weights 21.27 M, about 90.6 M in all with three heads.
        assert_eq!(backbone, 21_267_648);
        assert!((90_500_000..90_700_000).contains(&conv), "{conv}");
        for name in [
            "backbone.conv1.weight",
            "backbone.bn1.num_batches_tracked",
            "backbone.blocks.3.2.conv2.weight",
            "backbone.ds.1.0.weight",
            "backbone.ds.3.1.running_var",
            "task3_fc1_c3.conv3.bias",
        ] {
            assert!(specs.iter().any(|s| s.name == name), "{name}");
        }
        // Stage 0 keeps width and stride: no downsample.
        assert!(!specs.iter().any(|s| s.name.starts_with("backbone.ds.0.")));
        let shapes = shapes::infer(&model.graph, [3, 321, 321]).unwrap();
        assert_eq!(shapes[&model.graph.outputs[0].node], vec![40, 41, 41]);
    }
}
