//! Shape inference without running anything: activation shapes per node for an input size,
//! channel consistency checks, and multiply-accumulates. Each op says its own rule (see
//! [`super::ops`]); this module walks the graph.

pub use super::arith::conv_out;
pub use super::ops::Shape;
use super::ops::ShapeCx;
use super::Graph;
use anyhow::Result;
use std::collections::HashMap;

/// Per-node output shapes for an input of `input` = [C, H, W].
pub fn infer(graph: &Graph, input: [usize; 3]) -> Result<HashMap<String, Shape>> {
    let mut shapes: HashMap<String, Shape> = HashMap::new();
    for node in &graph.nodes {
        let args: Vec<&Shape> = node.inputs.iter().map(|i| &shapes[i]).collect();
        let cx = ShapeCx {
            node: &node.name,
            input_names: &node.inputs,
            input: &input,
            declared_channels: graph.input.channels,
        };
        let shape = node.op.def().infer(&cx, &args)?;
        shapes.insert(node.name.clone(), shape);
    }
    Ok(shapes)
}

/// Multiply-accumulates per node for one sample (only the ops that count them: convolutions and
/// linear layers).
pub fn macs(graph: &Graph, shapes: &HashMap<String, Shape>) -> HashMap<String, u64> {
    graph
        .nodes
        .iter()
        .filter_map(|node| {
            let args: Vec<&Shape> = node.inputs.iter().map(|i| &shapes[i]).collect();
            let m = node.op.def().macs(&args, &shapes[&node.name])?;
            Some((node.name.clone(), m))
        })
        .collect()
}
