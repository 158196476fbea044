//! Channel groups: which channels must be removed together, derived from the graph alone.
//!
//! Every node output lives in a channel space. Convolutions and linear layers start a new space
//! (their output channels); channel-preserving ops (batch norm, ReLU, dropout, pooling, upsampling)
//! pass their input's space on; an `add` makes all its inputs' spaces one, because channel k of
//! every summand lands in channel k of the sum (residual streams, summed head branches). Removing
//! channel k of a space means removing output channel k of every producer, entry k of every batch
//! norm, and input channel k of every consumer.

use crate::graph::ops::ChannelRule;
use crate::graph::{Dim, Graph, Op};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelGroup {
    pub channels: usize,
    /// Conv or linear nodes whose output channels form the group.
    pub producers: Vec<String>,
    /// Batch norms over the group's channels.
    pub norms: Vec<String>,
    /// Conv or linear nodes whose input channels are the group's.
    pub consumers: Vec<String>,
    /// Why the group must keep every channel, if it must: the image input, a task output, a
    /// flatten that mixes channels with positions, or a grouped convolution.
    pub fixed: Option<String>,
}

impl ChannelGroup {
    pub fn prunable(&self) -> bool {
        self.fixed.is_none()
    }
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// The channel groups of a graph, in the order their spaces first appear.
pub fn channel_groups(graph: &Graph) -> Result<Vec<ChannelGroup>> {
    let facts = record_spaces(graph);
    let groups = resolve_groups(facts);
    check_widths(graph, &groups)?;
    Ok(groups.into_values().collect())
}

/// What the walk over the graph records: channel spaces joined by union-find, their widths, and
/// per space the nodes that produce, normalise, consume or fix its channels.
struct SpaceFacts<'g> {
    width: Vec<usize>,
    uf: UnionFind,
    producers: Vec<(usize, &'g str)>,
    consumers: Vec<(usize, &'g str)>,
    norms: Vec<(usize, &'g str)>,
    fixed: Vec<(usize, String)>,
}

/// One walk in graph order, asking each op how it treats channels.
fn record_spaces(graph: &Graph) -> SpaceFacts<'_> {
    let mut space: HashMap<&str, usize> = HashMap::new();
    let mut width: Vec<usize> = Vec::new();
    let mut uf = UnionFind(Vec::new());
    let new_space = |channels: usize, width: &mut Vec<usize>, uf: &mut UnionFind| {
        width.push(channels);
        uf.0.push(uf.0.len());
        uf.0.len() - 1
    };
    // Facts recorded per node, resolved to groups once all unions are known.
    let mut producers: Vec<(usize, &str)> = Vec::new();
    let mut consumers: Vec<(usize, &str)> = Vec::new();
    let mut norms: Vec<(usize, &str)> = Vec::new();
    let mut fixed: Vec<(usize, String)> = Vec::new();
    for node in &graph.nodes {
        let input = |i: usize| -> usize { space[node.inputs[i].as_str()] };
        let s = match node.op.def().channels() {
            ChannelRule::Source => {
                // An input's channels are its first dimension (none for, say, token ids).
                let channels = match graph.input_decl(&node.name).and_then(|d| d.dims.first()) {
                    Some(Dim::Fixed(c)) => *c,
                    _ => 0,
                };
                let s = new_space(channels, &mut width, &mut uf);
                fixed.push((s, "image input channels".into()));
                s
            }
            ChannelRule::Transform { outputs, fixes, .. } => {
                consumers.push((input(0), &node.name));
                let s = new_space(outputs, &mut width, &mut uf);
                producers.push((s, &node.name));
                if let Some(why) = fixes {
                    fixed.push((input(0), format!("{why} '{}'", node.name)));
                    fixed.push((s, format!("{why} '{}'", node.name)));
                }
                s
            }
            ChannelRule::PerChannel { .. } => {
                norms.push((input(0), &node.name));
                input(0)
            }
            ChannelRule::Preserve => input(0),
            ChannelRule::Tie => {
                let first = input(0);
                for i in 1..node.inputs.len() {
                    uf.union(first, input(i));
                }
                first
            }
            ChannelRule::Mix { why } => {
                fixed.push((input(0), format!("{why} '{}'", node.name)));
                let s = new_space(0, &mut width, &mut uf);
                fixed.push((s, format!("{why} '{}'", node.name)));
                s
            }
        };
        space.insert(&node.name, s);
    }
    for out in &graph.outputs {
        fixed.push((space[out.node.as_str()], format!("output of task '{}'", out.task)));
    }
    SpaceFacts {
        width,
        uf,
        producers,
        consumers,
        norms,
        fixed,
    }
}

/// The facts resolved to one group per union-find root, after every union is known.
fn resolve_groups(facts: SpaceFacts) -> BTreeMap<usize, ChannelGroup> {
    let SpaceFacts {
        width,
        mut uf,
        producers,
        consumers,
        norms,
        fixed,
    } = facts;
    let mut groups: BTreeMap<usize, ChannelGroup> = BTreeMap::new();
    fn group<'g>(
        groups: &'g mut BTreeMap<usize, ChannelGroup>,
        uf: &mut UnionFind,
        width: &[usize],
        s: usize,
    ) -> &'g mut ChannelGroup {
        let root = uf.find(s);
        groups.entry(root).or_insert_with(|| ChannelGroup {
            channels: width[root],
            producers: vec![],
            norms: vec![],
            consumers: vec![],
            fixed: None,
        })
    }
    for (s, n) in producers {
        group(&mut groups, &mut uf, &width, s).producers.push(n.to_string());
    }
    for (s, n) in norms {
        group(&mut groups, &mut uf, &width, s).norms.push(n.to_string());
    }
    for (s, n) in consumers {
        group(&mut groups, &mut uf, &width, s).consumers.push(n.to_string());
    }
    for (s, why) in fixed {
        group(&mut groups, &mut uf, &width, s).fixed.get_or_insert(why);
    }
    groups
}

/// Every producer of a group makes the group's width (the shape checker enforces it too).
fn check_widths(graph: &Graph, groups: &BTreeMap<usize, ChannelGroup>) -> Result<()> {
    let by_name: HashMap<&str, &Op> = graph.nodes.iter().map(|n| (n.name.as_str(), &n.op)).collect();
    for g in groups.values() {
        for p in &g.producers {
            let ChannelRule::Transform { outputs: out, .. } = by_name[p.as_str()].def().channels() else {
                bail!("node '{p}' is listed as a channel producer but does not make new channels");
            };
            if out != g.channels {
                bail!("node '{p}' produces {out} channels into a group of {}", g.channels);
            }
        }
    }
    Ok(())
}

/// The weight and bias names of a convolution or linear layer.
pub fn producer_weight(graph: &Graph, node: &str) -> Result<(String, Option<String>)> {
    match graph
        .node(node)
        .ok_or_else(|| anyhow!("no node '{node}'"))?
        .op
        .def()
        .channels()
    {
        ChannelRule::Transform { weight, bias, .. } => Ok((weight.to_string(), bias.map(str::to_string))),
        _ => bail!("node '{node}' is not a convolution or linear layer"),
    }
}

/// Whether a task scores group `g`: the group is prunable and every producer's weight is one the
/// task scores (`scored`), i.e. the group lies in the backbone or in the task's own head.
pub fn task_scores_group(graph: &Graph, g: &ChannelGroup, scored: impl Fn(&str) -> bool) -> bool {
    g.prunable()
        && !g.producers.is_empty()
        && g.producers
            .iter()
            .all(|p| producer_weight(graph, p).is_ok_and(|(w, _)| scored(&w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{image_sizes, GraphInput, GraphOutput, Node};

    fn conv(name: &str, cin: usize, cout: usize) -> Op {
        crate::graph::tests_support::pointwise(name, cin, cout, false)
    }

    /// input -> a -> relu -> b -> add(relu, b) -> {c1, c2} -> add = output; plus d (internal) in a side head.
    fn residual_and_branches() -> Graph {
        Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(8, 8),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("a", &["input"], conv("a", 3, 8)),
                Node::new("relu", &["a"], Op::Relu),
                Node::new("b", &["relu"], conv("b", 8, 8)),
                Node::new("res", &["relu", "b"], Op::Add),
                Node::new("c1", &["res"], conv("c1", 8, 4)),
                Node::new("c2", &["res"], conv("c2", 8, 4)),
                Node::new("sum", &["c1", "c2"], Op::Add),
                Node::new("d", &["res"], conv("d", 8, 6)),
                Node::new("e", &["d"], conv("e", 6, 2)),
            ],
            outputs: vec![
                GraphOutput {
                    task: "t".into(),
                    node: "sum".into(),
                },
                GraphOutput {
                    task: "u".into(),
                    node: "e".into(),
                },
            ],
        }
    }

    #[test]
    fn residual_adds_and_summed_branches_tie_channels() {
        let groups = channel_groups(&residual_and_branches()).unwrap();
        let find = |p: &str| groups.iter().find(|g| g.producers.iter().any(|x| x == p)).unwrap();
        // a and b feed one residual sum: their output channels go together, read by b, c1, c2 and d.
        let res = find("a");
        assert_eq!(res.producers, ["a", "b"]);
        assert_eq!(res.consumers, ["b", "c1", "c2", "d"]);
        assert_eq!((res.channels, res.prunable()), (8, true));
        // The summed branches form the task output: fixed.
        let out = find("c1");
        assert_eq!(out.producers, ["c1", "c2"]);
        assert_eq!(out.fixed.as_deref(), Some("output of task 't'"));
        // d's channels are internal to head u.
        let d = find("d");
        assert_eq!(
            (d.producers.clone(), d.consumers.clone(), d.prunable()),
            (vec!["d".to_string()], vec!["e".to_string()], true)
        );
        assert!(!find("e").prunable());
        // The image's channels are fixed, consumed by a.
        let input = groups.iter().find(|g| g.producers.is_empty()).unwrap();
        assert_eq!(input.consumers, ["a"]);
        assert_eq!(input.fixed.as_deref(), Some("image input channels"));
        assert_eq!(groups.len(), 5);
    }

    #[test]
    fn pooled_linear_heads_are_prunable_flattened_ones_are_not() {
        use crate::graph::Linear;
        let lin = |name: &str, i: usize, o: usize| {
            Op::Linear(Linear {
                weight: format!("{name}.w"),
                bias: None,
                in_features: i,
                out_features: o,
            })
        };
        let g = Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(4, 4),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("a", &["input"], conv("a", 3, 8)),
                Node::new("gap", &["a"], Op::GlobalAvgPool),
                Node::new("fc", &["gap"], lin("fc", 8, 5)),
                Node::new("b", &["input"], conv("b", 3, 2)),
                Node::new("flat", &["b"], Op::Flatten),
                Node::new("fc2", &["flat"], lin("fc2", 32, 5)),
            ],
            outputs: vec![
                GraphOutput {
                    task: "cls".into(),
                    node: "fc".into(),
                },
                GraphOutput {
                    task: "cls2".into(),
                    node: "fc2".into(),
                },
            ],
        };
        let groups = channel_groups(&g).unwrap();
        let by = |p: &str| {
            groups
                .iter()
                .find(|g| g.producers.iter().any(|x| x == p))
                .unwrap()
                .clone()
        };
        assert!(by("a").prunable());
        assert_eq!(by("a").consumers, ["fc"]);
        assert_eq!(by("b").fixed.as_deref(), Some("flattened by 'flat'"));
        assert!(groups.iter().filter(|g| g.prunable()).count() == 1, "{groups:?}");
    }

    #[test]
    fn scenenet_groups() {
        let tasks = crate::families::scenenet::scene_tasks(40);
        let model = crate::families::scenenet::SceneNetConfig::reference(tasks)
            .build()
            .unwrap();
        let groups = channel_groups(&model.graph).unwrap();
        let prunable: Vec<&ChannelGroup> = groups.iter().filter(|g| g.prunable()).collect();
        // 16 blocks' inner channels + 4 stage streams in the backbone; 3 heads x 4 branches x 2 hidden layers.
        assert_eq!(prunable.len(), 16 + 4 + 24);
        assert_eq!(groups.len() - prunable.len(), 1 + 3);
        let stream = |p: &str| groups.iter().find(|g| g.producers.iter().any(|x| x == p)).unwrap();
        // Stage 0 keeps the stem's width: the stem conv and the three conv2s share one stream.
        assert_eq!(
            stream("backbone.conv1").producers,
            [
                "backbone.conv1",
                "backbone.blocks.0.0.conv2",
                "backbone.blocks.0.1.conv2",
                "backbone.blocks.0.2.conv2"
            ]
        );
        assert_eq!(stream("backbone.conv1").norms.len(), 4);
        // Stage 3's stream starts at its downsample and is read by all twelve head branches.
        let s3 = stream("backbone.ds.3.0");
        assert_eq!(s3.producers.len(), 1 + 3);
        assert_eq!(s3.consumers.iter().filter(|c| c.starts_with("task")).count(), 12);
        // A head's hidden layer: one producer, one batch-norm-free consumer.
        let h = stream("task2_fc1_c1.conv1");
        assert_eq!(
            (h.channels, h.consumers.clone(), h.norms.len()),
            (1024, vec!["task2_fc1_c1.conv2".to_string()], 0)
        );
    }
}
