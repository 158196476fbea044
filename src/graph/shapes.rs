//! Shape inference without running anything: activation shapes per node for an input size,
//! channel consistency checks, and multiply-accumulate counts.

use super::{Graph, Op};
use anyhow::{bail, Result};
use std::collections::HashMap;

/// Activation shape of one sample (batch dimension left out): [C, H, W] or [F].
pub type Shape = Vec<usize>;

/// Output length along one dimension, as libtorch computes it: with `ceil`, a last window that
/// would start in the right padding is dropped.
pub(crate) fn conv_out(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil: bool,
) -> Result<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + 2 * padding;
    if padded < span {
        bail!("input of size {size} is smaller than the kernel span {span}");
    }
    let numer = padded - span;
    let mut out = if ceil { numer.div_ceil(stride) } else { numer / stride } + 1;
    // PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * stride >= size + padding {
        out -= 1;
    }
    Ok(out)
}

/// Per-node output shapes for an input of `input` = [C, H, W].
pub fn infer(graph: &Graph, input: [usize; 3]) -> Result<HashMap<String, Shape>> {
    let mut shapes: HashMap<String, Shape> = HashMap::new();
    for node in &graph.nodes {
        let arg = |i: usize| -> &Shape { &shapes[&node.inputs[i]] };
        let spatial = |s: &Shape| -> Result<(usize, usize, usize)> {
            if s.len() != 3 {
                bail!("node '{}' needs a [C, H, W] input, gets {:?}", node.name, s);
            }
            Ok((s[0], s[1], s[2]))
        };
        let shape = match &node.op {
            Op::Input => {
                if input[0] != graph.input.channels {
                    bail!(
                        "the graph takes {} input channels, not {}",
                        graph.input.channels,
                        input[0]
                    );
                }
                input.to_vec()
            }
            Op::Conv2d(c) => {
                let (ch, h, w) = spatial(arg(0))?;
                if ch != c.in_channels {
                    bail!(
                        "node '{}' expects {} input channels, gets {ch}",
                        node.name,
                        c.in_channels
                    );
                }
                let oh = conv_out(h, c.kernel[0], c.stride[0], c.padding[0], c.dilation[0], false)
                    .map_err(|e| anyhow::anyhow!("node '{}': {e}", node.name))?;
                let ow = conv_out(w, c.kernel[1], c.stride[1], c.padding[1], c.dilation[1], false)
                    .map_err(|e| anyhow::anyhow!("node '{}': {e}", node.name))?;
                vec![c.out_channels, oh, ow]
            }
            Op::BatchNorm(bn) => {
                let (ch, _, _) = spatial(arg(0))?;
                if ch != bn.channels {
                    bail!("node '{}' expects {} channels, gets {ch}", node.name, bn.channels);
                }
                arg(0).clone()
            }
            Op::Relu | Op::Dropout { .. } => arg(0).clone(),
            Op::MaxPool(p) => {
                let (ch, h, w) = spatial(arg(0))?;
                let oh = conv_out(h, p.kernel[0], p.stride[0], p.padding[0], 1, p.ceil_mode)?;
                let ow = conv_out(w, p.kernel[1], p.stride[1], p.padding[1], 1, p.ceil_mode)?;
                vec![ch, oh, ow]
            }
            Op::Add => {
                let first = arg(0).clone();
                for i in 1..node.inputs.len() {
                    if arg(i) != &first {
                        bail!(
                            "node '{}' adds shapes {:?} ('{}') and {:?} ('{}')",
                            node.name,
                            first,
                            node.inputs[0],
                            arg(i),
                            node.inputs[i]
                        );
                    }
                }
                first
            }
            Op::Upsample(u) => {
                let (ch, h, w) = spatial(arg(0))?;
                vec![ch, h * u.scale, w * u.scale]
            }
            Op::Linear(l) => {
                let s = arg(0);
                if s.len() != 1 || s[0] != l.in_features {
                    bail!(
                        "node '{}' expects {} input features, gets {:?}",
                        node.name,
                        l.in_features,
                        s
                    );
                }
                vec![l.out_features]
            }
            Op::GlobalAvgPool => {
                let (ch, _, _) = spatial(arg(0))?;
                vec![ch]
            }
            Op::Flatten => vec![arg(0).iter().product()],
        };
        shapes.insert(node.name.clone(), shape);
    }
    Ok(shapes)
}

/// Multiply-accumulates per node for one sample (conv and linear layers only).
pub fn macs(graph: &Graph, shapes: &HashMap<String, Shape>) -> HashMap<String, u64> {
    graph
        .nodes
        .iter()
        .filter_map(|node| {
            let out = &shapes[&node.name];
            let m = match &node.op {
                Op::Conv2d(c) => {
                    let per_output = (c.in_channels / c.groups * c.kernel[0] * c.kernel[1]) as u64;
                    (out[0] * out[1] * out[2]) as u64 * per_output
                }
                Op::Linear(l) => (l.in_features * l.out_features) as u64,
                _ => return None,
            };
            Some((node.name.clone(), m))
        })
        .collect()
}
