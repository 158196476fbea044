//! What an inference forward holds in memory, planned from the graph without running it: the
//! weights its nodes read, and the most activation bytes alive at once in the order the
//! interpreter runs the nodes and drops their values. Operator workspaces (im2col columns, cuDNN
//! scratch) and the runtime itself are not counted; `cut bench` measures the whole process beside it.

use super::interpreter::Schedule;
use super::{shapes, Graph, Op, ParamRole};
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;

/// Planned memory of one forward (see the module notes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardMemory {
    /// Parameters and batch-norm statistics the needed nodes read.
    pub weight_bytes: u64,
    /// The most activation bytes alive at once, the input batch included.
    pub activation_peak_bytes: u64,
    /// The node whose output, once allocated, reached that peak.
    pub activation_peak_node: String,
}

/// Plans a forward of `tasks` on a batch of `batch` inputs of `input` = [C, H, W], with every
/// tensor `elem_bytes` wide, as [`super::interpreter::forward`] runs it in inference.
pub fn plan(
    graph: &Graph,
    sizes: &std::collections::BTreeMap<String, usize>,
    batch: usize,
    tasks: &[&str],
    elem_bytes: usize,
) -> Result<ForwardMemory> {
    let schedule = Schedule::new(graph, tasks)?;
    let shapes = shapes::infer_sizes(graph, sizes)?;
    let bytes_of = |node: &str| -> u64 { (shapes[node].iter().product::<usize>() * batch * elem_bytes) as u64 };

    let mut weight_bytes = 0;
    for node in &schedule.nodes {
        for (_, role, shape) in node.params() {
            if role != ParamRole::BnBatchesTracked {
                weight_bytes += (shape.iter().product::<usize>() * elem_bytes) as u64;
            }
        }
    }

    // Buffers by id: their size and how many live values (or held outputs) view them.
    let mut size: Vec<u64> = Vec::new();
    let mut refs: Vec<usize> = Vec::new();
    let mut buffer_of: HashMap<&str, usize> = HashMap::new();
    let mut uses = schedule.uses.clone();
    let (mut live, mut peak, mut peak_node) = (0u64, 0u64, String::new());
    for node in &schedule.nodes {
        let name = node.name.as_str();
        // Ops whose value is a view of their input's storage (dropout at inference, flatten). A
        // fused ReLU is part of its convolution (see `passes::fuse_conv_relu`).
        let aliases = node.op.def().aliases_input();
        let buffer = if aliases {
            buffer_of[node.inputs[0].as_str()]
        } else {
            let bytes = bytes_of(name);
            live += bytes;
            size.push(bytes);
            // The caller holds the input batch for the whole forward.
            refs.push(usize::from(matches!(node.op, Op::Input)));
            size.len() - 1
        };
        if live > peak {
            (peak, peak_node) = (live, node.name.clone());
        }
        refs[buffer] += 1;
        // A task output stays held until the forward returns.
        if schedule.out_nodes.contains_key(name) {
            refs[buffer] += 1;
        }
        buffer_of.insert(name, buffer);
        for input in &node.inputs {
            let left = uses.get_mut(input.as_str()).expect("counted by the schedule");
            *left -= 1;
            if *left == 0 {
                let b = buffer_of[input.as_str()];
                refs[b] -= 1;
                if refs[b] == 0 {
                    live -= size[b];
                }
            }
        }
    }
    Ok(ForwardMemory {
        weight_bytes,
        activation_peak_bytes: peak,
        activation_peak_node: peak_node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests_support::pointwise;
    use crate::graph::{image_sizes, GraphInput, GraphOutput, Node};

    /// input 3x4x4 -> a (8 ch) -> relu r (in place) -> b (8 ch); s = b + r is task "t"; a dropout
    /// and flatten on r feed task "u".
    fn residual() -> Graph {
        Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(4, 4),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("a", &["input"], pointwise("a", 3, 8, true)),
                Node::new("r", &["a"], Op::Relu),
                Node::new("b", &["r"], pointwise("b", 8, 8, true)),
                Node::new("s", &["b", "r"], Op::Add),
                Node::new("d", &["r"], Op::Dropout(crate::graph::ops::Dropout { p: 0.1 })),
                Node::new("f", &["d"], Op::Flatten),
            ],
            outputs: vec![
                GraphOutput {
                    task: "t".into(),
                    node: "s".into(),
                },
                GraphOutput {
                    task: "u".into(),
                    node: "f".into(),
                },
            ],
        }
    }

    /// The plan of `g` as inference runs it: with the fusion pass applied for `tasks`.
    fn plan_fused(g: &Graph, batch: usize, tasks: &[&str], elem_bytes: usize) -> Result<ForwardMemory> {
        plan(
            &crate::graph::passes::fuse_conv_relu(g, tasks).0,
            &crate::graph::image_sizes(4, 4),
            batch,
            tasks,
            elem_bytes,
        )
    }

    #[test]
    fn peak_by_hand() {
        let g = residual();
        g.validate().unwrap();
        // Floats per image: input 48, a/r 128, b 128, s 128; weights a 3*8+8 = 32, b 8*8+8 = 72.
        // Task t: input 48 + r 128 + b 128 + s 128 = 432 while s is computed.
        let t = plan_fused(&g, 2, &["t"], 4).unwrap();
        assert_eq!(t.weight_bytes, (32 + 72) * 4);
        assert_eq!(t.activation_peak_bytes, 432 * 2 * 4);
        assert_eq!(t.activation_peak_node, "s");
        // Task u alone: a, r, d and f share one buffer; b and s are not run.
        let u = plan_fused(&g, 1, &["u"], 4).unwrap();
        assert_eq!(u.weight_bytes, 32 * 4);
        assert_eq!(u.activation_peak_bytes, (48 + 128) * 4);
        assert_eq!(u.activation_peak_node, "a");
        // Both: r's buffer stays alive for d and f, so s still peaks at 432.
        let both = plan_fused(&g, 1, &["t", "u"], 2).unwrap();
        assert_eq!(both.activation_peak_bytes, 432 * 2);
        assert!(plan(&g, &crate::graph::image_sizes(4, 4), 1, &["v"], 4).is_err());
        // Without the pass the ReLU has a buffer of its own: task u peaks at r, with a still alive.
        let unfused = plan(&g, &crate::graph::image_sizes(4, 4), 1, &["u"], 4).unwrap();
        assert_eq!(unfused.activation_peak_bytes, (48 + 128 + 128) * 4);
        assert_eq!(unfused.activation_peak_node, "r");
    }

    #[test]
    fn an_unfused_relu_gets_its_own_buffer() {
        // With a second reader of a, the ReLU cannot run in place: a and r are both alive.
        let mut g = residual();
        g.nodes.push(Node::new("a2", &["a"], Op::Relu));
        g.outputs.push(GraphOutput {
            task: "w".into(),
            node: "a2".into(),
        });
        let w = plan_fused(&g, 1, &["t", "w"], 4).unwrap();
        // At s: input 48 + a 128 (a2 still to come) + r 128 + b 128 + s 128.
        assert_eq!(w.activation_peak_bytes, (48 + 4 * 128) * 4);
    }
}
