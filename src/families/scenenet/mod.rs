//! The SceneNet family of the reference code (DeepLab-ResNet backbone with BasicBlocks and one
//! four-branch ASPP head per task), emitted as a graph with the reference's tensor names.

mod recognise;

use super::{Family, LoadOptions, LoadedModel, TensorShapes};
use crate::graph::{
    image_sizes, BatchNorm, Conv2d, Graph, GraphInput, GraphOutput, MaxPool, Model, Node, Op, TaskSpec,
};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneNetConfig {
    pub in_channels: usize,
    /// BasicBlocks per stage: [3, 4, 6, 3] is ResNet-34, [2, 2, 2, 2] ResNet-18.
    pub blocks: Vec<usize>,
    pub widths: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Output channels of the 7x7 stem convolution (64 in the reference).
    pub stem_width: usize,
    /// Hidden width of each head branch (1024 in the reference).
    pub head_width: usize,
    /// Dilation rates of the summed head branches.
    pub rates: Vec<usize>,
    pub dropout: f64,
    pub tasks: Vec<TaskSpec>,
    /// Default input size for multiply-accumulate counts.
    pub input_hw: [usize; 2],
}

pub const BN_EPS: f64 = 1e-5;

impl SceneNetConfig {
    /// The reference's ResNet-34 SceneNet with the given tasks.
    pub fn reference(tasks: Vec<TaskSpec>) -> SceneNetConfig {
        SceneNetConfig {
            in_channels: 3,
            blocks: vec![3, 4, 6, 3],
            widths: vec![64, 128, 256, 512],
            strides: vec![1, 2, 1, 1],
            dilations: vec![1, 1, 2, 4],
            stem_width: 64,
            head_width: 1024,
            rates: vec![6, 12, 18, 24],
            dropout: 0.5,
            tasks,
            input_hw: [480, 640],
        }
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.blocks.len();
        if n == 0 || self.widths.len() != n || self.strides.len() != n || self.dilations.len() != n {
            bail!(
                "SceneNet needs as many widths, strides and dilations as stages: blocks {:?}, widths {:?}, strides {:?}, dilations {:?}",
                self.blocks, self.widths, self.strides, self.dilations
            );
        }
        if self.blocks.contains(&0) || self.widths.contains(&0) || self.stem_width == 0 || self.head_width == 0 {
            bail!("SceneNet block counts and widths must be positive");
        }
        if self.rates.is_empty() {
            bail!("SceneNet heads need at least one dilation rate");
        }
        if self.tasks.is_empty() {
            bail!("SceneNet needs at least one task");
        }
        crate::tasks::check_specs(&self.tasks)?;
        Ok(())
    }

    pub fn build(&self) -> Result<Model> {
        self.validate()?;
        let mut b = Builder {
            nodes: vec![Node::new("input", &[], Op::Input)],
        };
        let mut x = "input".to_string();
        x = b.conv(
            "backbone.conv1",
            &x,
            self.in_channels,
            self.stem_width,
            7,
            2,
            3,
            1,
            false,
        );
        x = b.bn("backbone.bn1", &x, self.stem_width);
        x = b.relu("backbone.relu", &x);
        b.nodes.push(Node::new(
            "backbone.maxpool",
            &[&x],
            Op::MaxPool(MaxPool {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                ceil_mode: true,
            }),
        ));
        x = "backbone.maxpool".into();

        let mut inplanes = self.stem_width;
        for (stage, &count) in self.blocks.iter().enumerate() {
            let (planes, stride, dil) = (self.widths[stage], self.strides[stage], self.dilations[stage]);
            for block in 0..count {
                let p = format!("backbone.blocks.{stage}.{block}");
                let s = if block == 0 { stride } else { 1 };
                let residual = if block == 0 && (stride != 1 || inplanes != planes || dil == 2 || dil == 4) {
                    let d = b.conv(
                        &format!("backbone.ds.{stage}.0"),
                        &x,
                        inplanes,
                        planes,
                        1,
                        stride,
                        0,
                        1,
                        false,
                    );
                    b.bn(&format!("backbone.ds.{stage}.1"), &d, planes)
                } else {
                    x.clone()
                };
                let mut y = b.conv(&format!("{p}.conv1"), &x, inplanes, planes, 3, s, dil, dil, false);
                y = b.bn(&format!("{p}.bn1"), &y, planes);
                y = b.relu(&format!("{p}.relu1"), &y);
                y = b.conv(&format!("{p}.conv2"), &y, planes, planes, 3, 1, dil, dil, false);
                y = b.bn(&format!("{p}.bn2"), &y, planes);
                b.nodes.push(Node::new(format!("{p}.add"), &[&residual, &y], Op::Add));
                x = b.relu(&format!("{p}.relu2"), &format!("{p}.add"));
                inplanes = planes;
            }
        }

        let mut outputs = Vec::new();
        for (t, task) in self.tasks.iter().enumerate() {
            let first = b.nodes.len();
            let mut branches = Vec::new();
            for (k, &rate) in self.rates.iter().enumerate() {
                let p = format!("task{}_fc1_c{k}", t + 1);
                let mut y = b.conv(
                    &format!("{p}.conv1"),
                    &x,
                    inplanes,
                    self.head_width,
                    3,
                    1,
                    rate,
                    rate,
                    true,
                );
                y = b.relu(&format!("{p}.relu1"), &y);
                y = b.dropout(&format!("{p}.dropout1"), &y, self.dropout);
                y = b.conv(
                    &format!("{p}.conv2"),
                    &y,
                    self.head_width,
                    self.head_width,
                    1,
                    1,
                    0,
                    1,
                    true,
                );
                y = b.relu(&format!("{p}.relu2"), &y);
                y = b.dropout(&format!("{p}.dropout2"), &y, self.dropout);
                y = b.conv(
                    &format!("{p}.conv3"),
                    &y,
                    self.head_width,
                    task.outputs,
                    1,
                    1,
                    0,
                    1,
                    true,
                );
                branches.push(y);
            }
            let out = if branches.len() == 1 {
                branches.pop().unwrap()
            } else {
                let name = format!("task{}_fc1.sum", t + 1);
                let refs: Vec<&str> = branches.iter().map(String::as_str).collect();
                b.nodes.push(Node::new(name.clone(), &refs, Op::Add));
                name
            };
            for node in &mut b.nodes[first..] {
                node.head = Some(task.name.clone());
            }
            outputs.push(GraphOutput {
                task: task.name.clone(),
                node: out,
            });
        }

        let model = Model {
            tokenizer: None,
            graph: Graph {
                family: Some("scenenet".into()),
                inputs: vec![GraphInput {
                    // What the reference trains on, so image files need no flags.
                    normalise: (self.in_channels == 3).then(crate::data::layout::reference_normalisation),
                    ..GraphInput::image(self.in_channels)
                }],
                sizes: image_sizes(self.input_hw[0], self.input_hw[1]),
                nodes: b.nodes,
                outputs,
            },
            tasks: self.tasks.clone(),
        };
        model.validate()?;
        Ok(model)
    }
}

struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        prefix: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        bias: bool,
    ) -> String {
        self.nodes.push(Node::new(
            prefix,
            &[x],
            Op::Conv2d(Conv2d {
                weight: format!("{prefix}.weight"),
                bias: bias.then(|| format!("{prefix}.bias")),
                in_channels: cin,
                out_channels: cout,
                kernel: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [dil, dil],
                groups: 1,
                relu: false,
                live_taps: None,
            }),
        ));
        prefix.to_string()
    }

    fn bn(&mut self, prefix: &str, x: &str, channels: usize) -> String {
        self.nodes.push(Node::new(
            prefix,
            &[x],
            Op::BatchNorm(BatchNorm {
                channels,
                weight: Some(format!("{prefix}.weight")),
                bias: Some(format!("{prefix}.bias")),
                running_mean: format!("{prefix}.running_mean"),
                running_var: format!("{prefix}.running_var"),
                num_batches_tracked: Some(format!("{prefix}.num_batches_tracked")),
                eps: BN_EPS,
            }),
        ));
        prefix.to_string()
    }

    fn relu(&mut self, name: &str, x: &str) -> String {
        self.nodes.push(Node::new(name, &[x], Op::Relu));
        name.to_string()
    }

    fn dropout(&mut self, name: &str, x: &str, p: f64) -> String {
        self.nodes
            .push(Node::new(name, &[x], Op::Dropout(crate::graph::ops::Dropout { p })));
        name.to_string()
    }
}

/// The three dense tasks of the NYUv2 setting the reference uses: `seg` with `seg_classes`
/// classes, `normal` and `depth`.
pub fn scene_tasks(seg_classes: usize) -> Vec<TaskSpec> {
    vec![
        TaskSpec {
            name: "seg".into(),
            kind: super::TaskKind::Segmentation,
            outputs: seg_classes,
            labels: None,
            distill: false,
        },
        TaskSpec {
            name: "normal".into(),
            kind: super::TaskKind::Normal,
            outputs: 3,
            labels: None,
            distill: false,
        },
        TaskSpec {
            name: "depth".into(),
            kind: super::TaskKind::Depth,
            outputs: 1,
            labels: None,
            distill: false,
        },
    ]
}

/// The SceneNet family: built from a [`SceneNetConfig`], recognised by the reference's tensor names
/// (`backbone.conv1.weight`, `backbone.blocks.S.B.*`, `taskT_fc1_cK.*`).
pub struct SceneNet;

impl Family for SceneNet {
    fn name(&self) -> &'static str {
        "scenenet"
    }
    fn build(&self, config: &serde_json::Value) -> Result<Model> {
        let config: SceneNetConfig =
            serde_json::from_value(config.clone()).map_err(|e| anyhow::anyhow!("not a SceneNet configuration: {e}"))?;
        config.build()
    }
    fn recognises(&self, shapes: &TensorShapes) -> bool {
        shapes.contains_key("backbone.conv1.weight")
    }
    fn image_normalisation(&self) -> Option<crate::graph::Normalisation> {
        Some(crate::data::layout::reference_normalisation())
    }
    fn signature(&self) -> &'static str {
        "no 'backbone.conv1.weight'"
    }
    fn infer(&self, shapes: &TensorShapes, opts: &LoadOptions) -> Result<LoadedModel> {
        recognise::infer(shapes, opts)
    }
}
