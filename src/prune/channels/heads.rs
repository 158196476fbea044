//! Channels through reshapes, transposes and attention: a value may hold a space's channels on
//! one axis, or split into attention heads (`heads x width`, channel `h * width + d`) by a
//! reshape. Queries times keys tie their heads and widths, scores times values tie the scores'
//! heads with the values', and a reshape merges heads back into channels for the output
//! projection. Every space an attention touches becomes one group whose units are heads: the
//! rows of the query, key and value projections and the output projection's columns (Torch
//! Pruning's DepGraph follows the same coupling from a trace).
//!
//! Axes are counted from the end, so leading axes (windows, a squeezed part axis) may come and
//! go. Anything the rules below do not cover fixes the heads' spaces.

use super::Walk;
use crate::graph::ops::{ChannelRule, Unit};
use crate::graph::Node;

/// Where a value holds a space's channels split into heads: the head axis, the head-width axis
/// (none for attention scores, which keep the heads only) and the head width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Heads {
    head: usize,
    width_axis: Option<usize>,
    width: usize,
}

/// A fused projection's output split into parts (queries, keys, values) and heads: the part axis,
/// each part's space, and how each part holds its heads.
#[derive(Clone, Debug)]
pub(super) struct Parts {
    axis: usize,
    spaces: Vec<usize>,
    heads: Heads,
}

/// `shape` read from the end: `from_end(s, 1)` is the last axis.
fn from_end(shape: &[usize], axis: usize) -> Option<usize> {
    (axis >= 1 && axis <= shape.len()).then(|| shape[shape.len() - axis])
}

/// Whether `a` and `b` agree on their last `k` axes.
fn same_tail(a: &[usize], b: &[usize], k: usize) -> bool {
    a.len() >= k && b.len() >= k && a[a.len() - k..] == b[b.len() - k..]
}

/// Where axis `axis` (from the end) of an `n`-axis value goes under `perm`.
fn permuted(perm: &[usize], n: usize, axis: usize) -> Option<usize> {
    let index = n.checked_sub(axis)?;
    perm.iter().position(|&p| p == index).map(|j| n - j)
}

impl<'g> Walk<'g> {
    /// Whether `node`'s value holds heads (or parts of heads).
    pub(super) fn headed(&self, node: &str) -> bool {
        self.heads.contains_key(node) || self.head_parts.contains_key(node)
    }

    /// A reshape of a value that holds channels on one axis: the axis kept (with what follows
    /// it, or with what precedes it), or the last axis split into heads, or into parts of heads.
    pub(super) fn reshape(&mut self, node: &'g Node) -> (usize, usize) {
        let input = node.inputs[0].as_str();
        let (s, a) = self.at(input);
        let (shape_in, shape_out) = (self.shape(input), self.shape(&node.name));
        let (n, m) = (shape_in.len(), shape_out.len());
        if a == 0 || a > n {
            return self.mix(node, "reshapes the channel axis");
        }
        // Channels kept on one axis: the target shape's entry there follows the group's width.
        let i = n - a;
        let kept = if same_tail(shape_in, shape_out, a) {
            Some(a)
        } else {
            (m > i && shape_in[..=i] == shape_out[..=i]).then_some(m - i)
        };
        if let Some(axis) = kept.filter(|_| !self.composite(input)) {
            self.facts.reshapes.push((s, &node.name, axis, 1));
            return (s, axis);
        }
        let channels = shape_in[n - 1];
        let prefix_kept = |extra: usize| m == n + extra && shape_in[..n - 1] == shape_out[..n - 1];
        if a == 1 && !self.composite(input) && prefix_kept(1) {
            let (heads, width) = (shape_out[m - 2], shape_out[m - 1]);
            if heads > 1 && width > 1 && heads * width == channels {
                return self.split_heads(node, s, width);
            }
        }
        if a == 1 && !self.composite(input) && prefix_kept(2) {
            let (parts, width) = (shape_out[m - 3], shape_out[m - 1]);
            if parts > 1 && shape_out[m - 2] > 1 && width > 1 {
                return self.split_parts(node, s, parts, width);
            }
        }
        self.mix(node, "reshapes the channel axis")
    }

    /// [.., C] -> [.., heads, width]: the space's units are heads.
    fn split_heads(&mut self, node: &'g Node, s: usize, width: usize) -> (usize, usize) {
        let heads = Heads {
            head: 2,
            width_axis: Some(1),
            width,
        };
        self.facts.blocks.push((s, Unit::Head { width }));
        self.facts.reshapes.push((s, &node.name, 2, width));
        self.heads.insert(&node.name, heads);
        (s, 2)
    }

    /// [.., P x C] -> [.., P, heads, width] (a fused query, key and value projection): the space
    /// is cut into P parts, each a space of heads.
    fn split_parts(&mut self, node: &'g Node, s: usize, parts: usize, width: usize) -> (usize, usize) {
        let part = self.facts.width[s] / parts;
        let mut last = s;
        for _ in 1..parts {
            if !self.cut(last, part) {
                return self.mix(node, "splits channels tied elsewhere in");
            }
            last = self.refined[&last][1];
        }
        let spaces: Vec<usize> = self.leaves(s);
        for &p in &spaces {
            self.facts.blocks.push((p, Unit::Head { width }));
            self.facts.reshapes.push((p, &node.name, 2, width));
        }
        let heads = Heads {
            head: 2,
            width_axis: Some(1),
            width,
        };
        self.head_parts.insert(&node.name, Parts { axis: 3, spaces, heads });
        let placeholder = self.new_space(0);
        self.fix(
            placeholder,
            format!("the fused projection '{}' (its parts are followed)", node.name),
        );
        (placeholder, 0)
    }

    /// A transpose of a value that holds channels on one axis: the axis moves.
    pub(super) fn permute(&mut self, node: &'g Node, perm: &[usize]) -> (usize, usize) {
        let input = node.inputs[0].as_str();
        let (s, a) = self.at(input);
        match permuted(perm, self.shape(input).len(), a) {
            Some(moved) if a > 0 => {
                self.pass_parts(node);
                (s, moved)
            }
            _ => self.mix(node, "moves the channel axis"),
        }
    }

    /// A node that reads heads: follows them where the rules allow, fixes them otherwise.
    pub(super) fn follow_heads(&mut self, node: &'g Node) -> (usize, usize) {
        let followed = match node.op.def().channels() {
            ChannelRule::Range { axis, start, end } => self.take_part(node, axis, start, end),
            ChannelRule::Reshape => self.reshape_heads(node),
            ChannelRule::Permute { perm } => self.permute_heads(node, perm),
            ChannelRule::Tie => self.tie_heads(node),
            ChannelRule::Preserve if self.shape(&node.name) == self.shape(&node.inputs[0]) => self.keep_heads(node, 0),
            ChannelRule::Product => self.product(node),
            _ => None,
        };
        followed.unwrap_or_else(|| {
            for i in &node.inputs {
                self.fix_heads(i, &node.name);
            }
            self.mix(node, "mixes attention heads in")
        })
    }

    /// Fixes the heads `node` holds (every part of a fused projection's).
    fn fix_heads(&mut self, node: &str, by: &str) {
        let why = format!("mixes attention heads in '{by}'");
        if let Some(parts) = self.head_parts.get(node).cloned() {
            for s in parts.spaces {
                self.fix(s, why.clone());
            }
        }
        if self.heads.contains_key(node) {
            self.fix_node(node, why);
        }
    }

    /// The output holds input `from`'s heads as they are.
    fn keep_heads(&mut self, node: &'g Node, from: usize) -> Option<(usize, usize)> {
        let input = node.inputs[from].as_str();
        let heads = *self.heads.get(input)?;
        self.heads.insert(&node.name, heads);
        Some((self.space[input], heads.head))
    }

    /// One part of a fused projection, sliced along the part axis.
    fn take_part(&mut self, node: &'g Node, axis: usize, start: usize, end: usize) -> Option<(usize, usize)> {
        let parts = self.head_parts.get(node.inputs[0].as_str())?.clone();
        let n = self.shape(&node.inputs[0]).len();
        if n.checked_sub(parts.axis) != Some(axis) || end != start + 1 {
            return None;
        }
        let s = *parts.spaces.get(start)?;
        self.heads.insert(&node.name, parts.heads);
        Some((s, parts.heads.head))
    }

    /// A reshape of heads: leading axes change (the same heads, recorded so that the target
    /// shape follows the head count), or heads merge back into channels on the last axis.
    fn reshape_heads(&mut self, node: &'g Node) -> Option<(usize, usize)> {
        let input = node.inputs[0].as_str();
        let heads = *self.heads.get(input)?;
        let (s, shape_in, shape_out) = (self.space[input], self.shape(input), self.shape(&node.name));
        let kept = heads.head.max(heads.width_axis.unwrap_or(0));
        if same_tail(shape_in, shape_out, kept) {
            self.facts.reshapes.push((s, &node.name, heads.head, heads.width));
            self.heads.insert(&node.name, heads);
            return Some((s, heads.head));
        }
        let (n, m) = (shape_in.len(), shape_out.len());
        let merges =
            heads.head == 2 && heads.width_axis == Some(1) && m + 1 == n && shape_in[..n - 2] == shape_out[..m - 1];
        if merges {
            self.facts.reshapes.push((s, &node.name, 1, 1));
            return Some((s, 1));
        }
        None
    }

    fn permute_heads(&mut self, node: &'g Node, perm: &[usize]) -> Option<(usize, usize)> {
        let input = node.inputs[0].as_str();
        let heads = *self.heads.get(input)?;
        let n = self.shape(input).len();
        let moved = Heads {
            head: permuted(perm, n, heads.head)?,
            width_axis: match heads.width_axis {
                Some(w) => Some(permuted(perm, n, w)?),
                None => None,
            },
            width: heads.width,
        };
        self.heads.insert(&node.name, moved);
        Some((self.space[input], moved.head))
    }

    /// An element-wise op on heads: inputs with the same layout tie; scalars join nothing. On
    /// scores (heads only), a value that broadcasts over the heads (a padding mask's bias) joins
    /// nothing either, and a constant with one entry per head (Swin's relative position bias)
    /// loses a removed head's entry: a removed head's values are constant, so whatever weights
    /// its softmax gives them, it outputs its value bias.
    fn tie_heads(&mut self, node: &'g Node) -> Option<(usize, usize)> {
        let first = node.inputs.iter().position(|i| self.heads.contains_key(i.as_str()))?;
        let heads = self.heads[node.inputs[first].as_str()];
        let s0 = self.space[node.inputs[first].as_str()];
        let count = from_end(self.shape(&node.inputs[first]), heads.head);
        let mut tied = Vec::new();
        let mut per_head = Vec::new();
        for i in &node.inputs {
            let s = self.space[i.as_str()];
            let along = from_end(self.shape(i), heads.head);
            match self.heads.get(i.as_str()) {
                Some(h) if *h == heads => tied.push(s),
                Some(_) => return None,
                None if self.scalars.contains(&s) => {}
                None if heads.width_axis.is_some() => return None,
                None if along.is_none_or(|h| h == 1) => {}
                None if along == count && self.is_constant(i) => per_head.push(i.as_str()),
                None => return None,
            }
        }
        for &s in &tied[1..] {
            self.facts.uf.union(tied[0], s);
        }
        for c in per_head {
            self.facts.reshapes.push((s0, c, heads.head, heads.width));
            self.facts.head_constants.push((s0, c, heads.head, heads.width));
        }
        self.keep_heads(node, first)
    }

    /// Whether `node` is a constant tensor of the model's.
    fn is_constant(&self, node: &str) -> bool {
        self.graph
            .node(node)
            .is_some_and(|n| matches!(n.op.def().channels(), ChannelRule::Constant { scalar: false }))
    }

    /// Queries [.., heads, L, width] times keys [.., heads, width, L] give scores with their heads;
    /// scores [.., heads, L, L] times values [.., heads, L, width] give contexts with theirs.
    fn product(&mut self, node: &'g Node) -> Option<(usize, usize)> {
        let (a, b) = (node.inputs[0].as_str(), node.inputs[1].as_str());
        let (ha, hb) = (*self.heads.get(a)?, *self.heads.get(b)?);
        if ha.head != hb.head || ha.head < 3 {
            return None;
        }
        let out = match (ha.width_axis, hb.width_axis) {
            (Some(1), Some(2)) if ha.width == hb.width => Heads { width_axis: None, ..ha },
            (None, Some(1)) if ha.width == hb.width => hb,
            _ => return None,
        };
        let (sa, sb) = (self.space[a], self.space[b]);
        self.facts.uf.union(sa, sb);
        self.heads.insert(&node.name, out);
        Some((sa, out.head))
    }
}
