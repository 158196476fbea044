//! Dead-tap slicing: a convolution whose dilation is as large as its input (DeepLab's ASPP branches
//! on small images) has kernel taps that only ever read the zero padding. For one input size, this
//! pass records on each such convolution which taps read anything else (`Conv2d::live_taps`);
//! the convolution then runs on that slice of its weight (a view, so training still updates the
//! whole weight), often a 1x1. Values are unchanged up to float rounding.
//!
//! The record holds the input size it was made for, and a convolution that meets another size runs
//! its whole kernel, so a sliced graph stays correct at any size. An exporter for a fixed size reads
//! the same record.

use crate::graph::arith::output_len;
use crate::graph::interpreter::Inputs;
use crate::graph::ops::LiveTaps;
use crate::graph::{shapes, Dim, Graph, Op};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// The graph with every convolution's live taps recorded for inputs at `sizes` (the named sizes,
/// such as `height` and `width`; the graph's defaults fill the rest), and how many were sliced.
pub fn slice_dead_taps(graph: &Graph, sizes: &BTreeMap<String, usize>) -> Result<(Graph, usize)> {
    let shapes = shapes::infer_sizes(graph, sizes)?;
    let mut g = graph.clone();
    let mut sliced = 0;
    for node in &mut g.nodes {
        let Op::Conv2d(c) = &mut node.op else {
            continue;
        };
        let input = &shapes[&node.inputs[0]];
        let [_, h, w] = input.as_slice() else {
            continue;
        };
        c.live_taps = None;
        let at = [*h as i64, *w as i64];
        let mut first = [0; 2];
        let mut count = [c.kernel[0] as i64, c.kernel[1] as i64];
        for dim in 0..2 {
            let (k, s, p, d) = (
                c.kernel[dim] as i64,
                c.stride[dim] as i64,
                c.padding[dim] as i64,
                c.dilation[dim] as i64,
            );
            let output = output_len(at[dim], k, s, p, d);
            if let Some((f, n)) = live_taps(at[dim], output, k, s, p, d) {
                let sliced_padding = p - f * d;
                if n < k && sliced_padding >= 0 && output_len(at[dim], n, s, sliced_padding, d) == output {
                    (first[dim], count[dim]) = (f, n);
                }
            }
        }
        if count != [c.kernel[0] as i64, c.kernel[1] as i64] {
            c.live_taps = Some(LiveTaps { at, first, count });
            sliced += 1;
        }
    }
    Ok((g, sliced))
}

/// [`slice_dead_taps`] at the sizes of a batch (each named size read off its input's tensor).
pub fn slice_dead_taps_for(graph: &Graph, inputs: &Inputs) -> Result<Graph> {
    let mut sizes = BTreeMap::new();
    for decl in &graph.inputs {
        let t = inputs
            .get(&decl.name)
            .with_context(|| format!("no batch was given for input '{}'", decl.name))?;
        decl.check(t)?;
        let size = t.size();
        for (dim, &n) in decl.dims.iter().zip(&size[1..]) {
            if let Dim::Named(name) = dim {
                sizes.insert(name.clone(), n.max(0) as usize);
            }
        }
    }
    Ok(slice_dead_taps(graph, &sizes)?.0)
}

/// The first kernel tap along one dimension that reads the input (not only padding) for some
/// output position, and how many taps from there on do; `None` when the output is empty.
fn live_taps(input: i64, output: i64, kernel: i64, stride: i64, padding: i64, dilation: i64) -> Option<(i64, i64)> {
    if output <= 0 {
        return None;
    }
    // Tap t reads rows t*dilation - padding + y*stride for y in 0..output.
    let live = |t: i64| {
        let first = t * dilation - padding;
        let last = first + (output - 1) * stride;
        last >= 0 && first < input
    };
    let first = (0..kernel).find(|&t| live(t))?;
    let last = (0..kernel).rev().find(|&t| live(t))?;
    Some((first, last - first + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::inputs::image_sizes;
    use crate::graph::interpreter::{forward, Mode, Params};
    use crate::graph::{Conv2d, GraphInput, GraphOutput, Node};
    use tch::{Device, Kind, Tensor};

    #[test]
    fn live_taps_by_hand() {
        // 13 rows, 3 taps, dilation = padding = 18: taps 0 and 2 read rows -18..-6 and 18..30 only.
        assert_eq!(live_taps(13, 13, 3, 1, 18, 18), Some((1, 1)));
        // Dilation 12: tap 0 reads -12..0 (row 0), tap 2 reads 12..24 (row 12): all live.
        assert_eq!(live_taps(13, 13, 3, 1, 12, 12), Some((0, 3)));
        // Stride 2 over 8 rows, padding 1: tap 0 reads -1, 1, 3, 5.
        assert_eq!(live_taps(8, 4, 3, 2, 1, 1), Some((0, 3)));
        // Dilation 9, padding 9 on 5 rows: tap t reads 9t-9 .. 9t-5: tap 0 -9..-5 dead, tap 1 0..4 live, tap 2 9..13 dead.
        assert_eq!(live_taps(5, 5, 3, 1, 9, 9), Some((1, 1)));
        assert_eq!(live_taps(5, 0, 3, 1, 0, 1), None);
    }

    /// One 3x3 convolution, dilation and padding 6, on a 2-channel image.
    fn aspp_like() -> (Graph, Params) {
        let conv = Conv2d {
            weight: "w".into(),
            bias: Some("b".into()),
            in_channels: 2,
            out_channels: 3,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [6, 6],
            dilation: [6, 6],
            groups: 1,
            relu: false,
            live_taps: None,
        };
        let graph = Graph {
            family: None,
            inputs: vec![GraphInput::image(2)],
            sizes: image_sizes(5, 8),
            nodes: vec![
                Node {
                    name: "input".into(),
                    inputs: vec![],
                    head: None,
                    op: Op::Input,
                },
                Node {
                    name: "conv".into(),
                    inputs: vec!["input".into()],
                    head: None,
                    op: Op::Conv2d(conv),
                },
            ],
            outputs: vec![GraphOutput {
                task: "t".into(),
                node: "conv".into(),
            }],
        };
        tch::manual_seed(3);
        let params = Params::from([
            ("w".to_string(), Tensor::randn([3, 2, 3, 3], (Kind::Float, Device::Cpu))),
            ("b".to_string(), Tensor::randn([3], (Kind::Float, Device::Cpu))),
        ]);
        (graph, params)
    }

    fn taps(g: &Graph) -> Option<LiveTaps> {
        match &g.nodes[1].op {
            Op::Conv2d(c) => c.live_taps.clone(),
            _ => unreachable!(),
        }
    }

    /// On 5 rows (under the dilation of 6) only the middle row of taps reads the image; on 8
    /// columns all three do. At 5x8 the record says so, the forward equals the whole kernel's,
    /// and at another size the sliced graph still runs its whole kernel, with the same values.
    #[test]
    fn records_live_taps_and_keeps_values() {
        let (graph, params) = aspp_like();
        let (sliced, n) = slice_dead_taps(&graph, &image_sizes(5, 8)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            taps(&sliced),
            Some(LiveTaps {
                at: [5, 8],
                first: [1, 0],
                count: [1, 3]
            })
        );
        // The file form never holds the record.
        assert!(!serde_json::to_string(&sliced).unwrap().contains("live_taps"));
        for (h, w) in [(5, 8), (9, 9)] {
            let x = Tensor::randn([2, 2, h, w], (Kind::Float, Device::Cpu));
            let whole = forward(&graph, &params, &x, &["t"], Mode::Eval).unwrap();
            let cut = forward(&sliced, &params, &x, &["t"], Mode::Eval).unwrap();
            let diff = (&whole["t"] - &cut["t"]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{h}x{w}: sliced and whole differ by {diff}");
        }
        // At 13x13 every tap reads the image: nothing to record.
        let (_, none) = slice_dead_taps(&graph, &image_sizes(13, 13)).unwrap();
        assert_eq!(none, 0);
    }

    /// The slice is a view of the weight: a gradient through the sliced graph reaches the whole
    /// weight, zero on the dead taps, equal to the unsliced gradient.
    #[test]
    fn gradient_reaches_the_whole_weight() {
        let (graph, params) = aspp_like();
        let x = Tensor::randn([1, 2, 5, 8], (Kind::Float, Device::Cpu));
        let sliced = slice_dead_taps_for(&graph, &Inputs::from([("input".to_string(), x.shallow_clone())])).unwrap();
        let grad_of = |g: &Graph| {
            let w = params["w"].detach().set_requires_grad(true);
            let p = Params::from([
                ("w".to_string(), w.shallow_clone()),
                ("b".to_string(), params["b"].shallow_clone()),
            ]);
            forward(g, &p, &x, &["t"], Mode::Eval).unwrap()["t"]
                .sum(Kind::Float)
                .backward();
            w.grad()
        };
        let (whole, cut) = (grad_of(&graph), grad_of(&sliced));
        assert_eq!(cut.size(), vec![3, 2, 3, 3]);
        assert!((&whole - &cut).abs().max().double_value(&[]) < 1e-5);
        assert_eq!(cut.narrow(2, 0, 1).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
