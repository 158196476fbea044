//! Conv+ReLU fusion: each convolution that only a ReLU reads (and that is no task's output) takes
//! the ReLU into itself (`relu: true`), and the ReLU node goes; whatever read the ReLU reads the
//! convolution. The convolution then runs as one call where the device has one (cuDNN's
//! convolution+ReLU on a GPU; on a CPU the ReLU runs in place on the fresh output), which matters
//! for GPU batch-1 latency, where a forward is mostly kernel launches. Values are unchanged.
//!
//! Fusion depends on which tasks run (a convolution's other readers may belong to a task that does
//! not), so the pass takes the tasks and returns the graph restricted to them.

use crate::graph::{Graph, Op};
use std::collections::HashMap;

/// The graph restricted to `tasks`, with every fusable convolution and ReLU fused, and how many.
pub fn fuse_conv_relu(graph: &Graph, tasks: &[&str]) -> (Graph, usize) {
    let mut g = graph.keep_tasks(tasks);
    let mut readers: HashMap<String, usize> = HashMap::new();
    for node in &g.nodes {
        for input in &node.inputs {
            *readers.entry(input.clone()).or_default() += 1;
        }
    }
    for out in &g.outputs {
        // A task output is held as it is: a convolution that is one keeps its negative values.
        *readers.entry(out.node.clone()).or_default() += 2;
    }
    let mut renamed: HashMap<String, String> = HashMap::new();
    for i in 0..g.nodes.len() {
        let (Op::Relu, [conv]) = (&g.nodes[i].op, g.nodes[i].inputs.as_slice()) else {
            continue;
        };
        let conv = conv.clone();
        let Some(j) = g.nodes.iter().position(|n| n.name == conv) else {
            continue;
        };
        let fusable = matches!(&g.nodes[j].op, Op::Conv2d(c) if !c.relu) && readers.get(&conv) == Some(&1);
        if fusable {
            if let Op::Conv2d(c) = &mut g.nodes[j].op {
                c.relu = true;
            }
            renamed.insert(g.nodes[i].name.clone(), conv);
        }
    }
    g.nodes.retain(|n| !renamed.contains_key(&n.name));
    for node in &mut g.nodes {
        for input in &mut node.inputs {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
    }
    for out in &mut g.outputs {
        if let Some(to) = renamed.get(&out.node) {
            out.node = to.clone();
        }
    }
    let count = renamed.len();
    (g, count)
}
