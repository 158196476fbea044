//! Shape inference without running anything: activation shapes per node for an input size,
//! channel consistency checks, and multiply-accumulates. Each op says its own rule (see
//! [`super::ops`]); this module walks the graph.

pub use super::arith::conv_out;
pub use super::ops::Shape;
use super::ops::ShapeCx;
use super::{image_sizes, Graph, Op};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashMap};

/// Per-node output shapes of one sample, with the inputs' named sizes set by `sizes` (the
/// graph's defaults fill any not given).
pub fn infer_sizes(graph: &Graph, sizes: &BTreeMap<String, usize>) -> Result<HashMap<String, Shape>> {
    let mut all = graph.sizes.clone();
    all.extend(sizes.iter().map(|(k, v)| (k.clone(), *v)));
    let mut shapes: HashMap<String, Shape> = HashMap::new();
    for node in &graph.nodes {
        let input_shape = match graph.input_decl(&node.name) {
            Some(decl) if matches!(node.op, Op::Input) => decl.shape(&all)?,
            _ => Vec::new(),
        };
        let args: Vec<&Shape> = node.inputs.iter().map(|i| &shapes[i]).collect();
        let cx = ShapeCx {
            node: &node.name,
            input_names: &node.inputs,
            input: &input_shape,
        };
        let shape = node.op.def().infer(&cx, &args)?;
        shapes.insert(node.name.clone(), shape);
    }
    Ok(shapes)
}

/// Per-node output shapes of an image graph for an input of `input` = [C, H, W].
pub fn infer(graph: &Graph, input: [usize; 3]) -> Result<HashMap<String, Shape>> {
    let [channels, _, _] = graph.image_input()?;
    if input[0] != channels {
        bail!("the graph takes {channels} input channels, not {}", input[0]);
    }
    infer_sizes(graph, &image_sizes(input[1], input[2]))
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
