//! Channel groups: which channels must be removed together, derived from the graph alone.
//!
//! Every node output lives in a channel space. Convolutions and linear layers start a new space
//! (their output channels); channel-preserving ops (batch norm, ReLU, dropout, pooling, upsampling)
//! pass their input's space on; an `add` makes all its inputs' spaces one, because channel k of
//! every summand lands in channel k of the sum (residual streams, summed head branches). Removing
//! channel k of a space means removing output channel k of every producer, entry k of every batch
//! norm, and input channel k of every consumer. Channels go in units: one at a time, or a whole
//! attention head (`heads.rs` follows heads through reshapes, transposes and products) or a whole
//! group of a grouped convolution.

mod heads;

use crate::graph::ops::{ChannelRule, Unit};
use crate::graph::{Dim, Graph, Node, Op};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelGroup {
    pub channels: usize,
    /// Transforms (convolutions, linear layers, attentions) whose output channels form the group.
    pub producers: Vec<String>,
    /// Batch norms and depthwise or grouped filters over the group's channels.
    pub norms: Vec<String>,
    /// Transforms whose input channels are the group's.
    pub consumers: Vec<String>,
    /// Where a norm or consumer that reads a concatenation holds the group's channels (its
    /// channel `offset + k` is the group's k); members not listed hold them at 0.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub offsets: BTreeMap<String, usize>,
    /// Producers that write the group's channels from an offset on (a convolution whose output a
    /// split takes apart): their output row `offset + k` is the group's k. A fused projection of
    /// queries, keys and values writes one group of heads three times, at three offsets.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub producer_offsets: BTreeMap<String, Vec<usize>>,
    /// Slices of channels whose bounds follow the group's width: true where the slice takes the
    /// group, false where the group lies before the slice's range.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub slicers: BTreeMap<String, bool>,
    /// Why the group must keep every channel, if it must: the image input, a task output, a
    /// flatten that mixes channels with positions, a layer norm, a grouped convolution with more
    /// outputs than inputs.
    pub fixed: Option<String>,
    /// What its units are (channels, neurons, heads, convolution groups): channels go a unit at a
    /// time.
    pub unit: Unit,
    /// Reshapes whose target shape follows the group's width: per node, the axis (counted from
    /// the end) and how many of the group's channels one entry of that axis holds (a head's
    /// width where the reshape splits heads out, 1 where it merges them back).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reshapes: BTreeMap<String, (usize, usize)>,
    /// Constant tensors with one entry per unit (Swin's relative position bias per head): per
    /// node, the axis (counted from the end) and the channels one entry stands for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub constants: BTreeMap<String, (usize, usize)>,
}

impl ChannelGroup {
    pub fn prunable(&self) -> bool {
        self.fixed.is_none()
    }

    /// Where member `node` holds the group's channels.
    pub fn offset(&self, node: &str) -> usize {
        self.offsets.get(node).copied().unwrap_or(0)
    }

    /// Where producer `node` writes the group's channels (once, or once per part it writes).
    pub fn producer_offsets_of(&self, node: &str) -> Vec<usize> {
        self.producer_offsets.get(node).cloned().unwrap_or_else(|| vec![0])
    }

    /// How many units (channels, neurons or heads) the group has.
    pub fn units(&self) -> usize {
        self.channels / self.unit.width()
    }

    /// Every tensor whose rows (axis 0) hold the group's channels, with the row the group starts
    /// at: each producer's weights at each offset it writes the group, and the depthwise or
    /// grouped filters the channels pass (what a removed channel's zeroing and scores read).
    pub fn output_rows(&self, graph: &Graph) -> Result<Vec<(String, usize)>> {
        let mut rows = Vec::new();
        for p in &self.producers {
            let weights = transform_params(graph, p)?.weights;
            for offset in self.producer_offsets_of(p) {
                rows.extend(weights.iter().map(|(w, _)| (w.clone(), offset)));
            }
        }
        for n in &self.norms {
            if let Some(ChannelRule::PerChannel { zeroed: Some(w), .. }) = graph.node(n).map(|x| x.op.def().channels())
            {
                rows.push((w.to_string(), self.offset(n)));
            }
        }
        Ok(rows)
    }

    /// The channels of the units `units`, in order.
    pub fn channels_of(&self, units: &[usize]) -> Vec<i64> {
        let w = self.unit.width();
        units
            .iter()
            .flat_map(|&u| (u * w..(u + 1) * w).map(|c| c as i64))
            .collect()
    }
}

#[derive(Default)]
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
    let shapes = crate::graph::shapes::infer_sizes(graph, &graph.sizes)?;
    let facts = record_spaces(graph, &shapes);
    let mut groups = resolve_groups(facts);
    check_widths(graph, &groups)?;
    for g in groups.values_mut() {
        assign_unit(graph, g);
    }
    Ok(groups.into_values().collect())
}

/// A group's unit is its producers' (channels, neurons, heads), or the group width of a grouped
/// convolution among its members. A group whose members' units differ in width, or that a split
/// or concatenation cuts inside a unit, stays whole.
fn assign_unit(graph: &Graph, g: &mut ChannelGroup) {
    let rule = |n: &str| graph.node(n).map(|node| node.op.def().channels());
    let mut units: Vec<Unit> = g
        .producers
        .iter()
        .filter_map(|p| match rule(p)? {
            ChannelRule::Transform { unit, .. } => Some(unit),
            _ => None,
        })
        .collect();
    units.extend(g.norms.iter().filter_map(|n| match rule(n)? {
        ChannelRule::PerChannel { block, .. } if block > 1 => Some(Unit::Group { width: block }),
        _ => None,
    }));
    if g.unit != Unit::Channel {
        units.push(g.unit);
    }
    let Some(&widest) = units.iter().max_by_key(|u| u.width()) else {
        return;
    };
    let w = widest.width();
    g.unit = if w > 1 || units.iter().all(|&u| u == widest) {
        widest
    } else {
        Unit::Channel
    };
    let uneven = units.iter().any(|u| u.width() != 1 && u.width() != w)
        || !g.channels.is_multiple_of(w)
        || g.producer_offsets
            .values()
            .flatten()
            .chain(g.offsets.values())
            .any(|o| !o.is_multiple_of(w));
    if uneven {
        g.unit = Unit::Channel;
        g.fixed
            .get_or_insert_with(|| format!("its members cut {} of {w} channels apart", widest.plural()));
    }
}

/// What the walk over the graph records: channel spaces joined by union-find, their widths, and
/// per space the nodes that produce, normalise, consume or fix its channels.
#[derive(Default)]
struct SpaceFacts<'g> {
    width: Vec<usize>,
    uf: UnionFind,
    /// Space, node and the offset at which the node holds the space's channels.
    producers: Vec<(usize, &'g str, usize)>,
    consumers: Vec<(usize, &'g str, usize)>,
    norms: Vec<(usize, &'g str, usize)>,
    /// Space, slice node, and whether the slice takes the space (else the space lies before it).
    slicers: Vec<(usize, &'g str, bool)>,
    fixed: Vec<(usize, String)>,
    /// Spaces a reshape split into units (attention heads).
    blocks: Vec<(usize, Unit)>,
    /// Space, reshape node, axis from the end, channels per entry (see `ChannelGroup::reshapes`).
    reshapes: Vec<(usize, &'g str, usize, usize)>,
    /// The same for constants with one entry per head (see `ChannelGroup::constants`).
    head_constants: Vec<(usize, &'g str, usize, usize)>,
}

/// The walk's state: each node's space, and where its channels lie, counted from the last axis
/// of its per-sample shape (3 for [C, H, W], 1 for [tokens, C]; 0 where it has none), so that
/// broadcasting, which aligns trailing axes, lines channels up.
struct Walk<'g> {
    graph: &'g Graph,
    shapes: &'g HashMap<String, Vec<usize>>,
    facts: SpaceFacts<'g>,
    space: HashMap<&'g str, usize>,
    axis: HashMap<&'g str, usize>,
    /// Spaces of scalars, which broadcast over any channels.
    scalars: std::collections::HashSet<usize>,
    /// The spaces a concatenation's channels come from, in order (its own space is a
    /// placeholder, fixed).
    parts: HashMap<&'g str, Vec<usize>>,
    /// Spaces a slice of channels cut in two, with the two halves.
    refined: HashMap<usize, [usize; 2]>,
    /// Values that hold channels split into attention heads, and fused projections split into
    /// parts of heads (see `heads.rs`).
    heads: HashMap<&'g str, heads::Heads>,
    head_parts: HashMap<&'g str, heads::Parts>,
}

/// The size of `shape` at `axis` counted from its end (1 is the last).
fn along(shape: &[usize], axis: usize) -> Option<usize> {
    (axis >= 1 && axis <= shape.len()).then(|| shape[shape.len() - axis])
}

impl<'g> Walk<'g> {
    fn new_space(&mut self, channels: usize) -> usize {
        self.facts.width.push(channels);
        let uf = &mut self.facts.uf.0;
        uf.push(uf.len());
        uf.len() - 1
    }
    fn fix(&mut self, s: usize, why: String) {
        self.facts.fixed.push((s, why));
    }
    fn shape(&self, node: &str) -> &'g [usize] {
        self.shapes.get(node).map_or(&[], Vec::as_slice)
    }
    /// Where `node`'s channels lie and its space.
    fn at(&self, node: &str) -> (usize, usize) {
        (self.space[node], self.axis.get(node).copied().unwrap_or(0))
    }
    /// The spaces `s` stands for: itself, or the halves it was cut into, recursively.
    fn leaves(&self, s: usize) -> Vec<usize> {
        match self.refined.get(&s) {
            Some(halves) => halves.iter().flat_map(|&h| self.leaves(h)).collect(),
            None => vec![s],
        }
    }
    /// The spaces `node`'s channels come from, each with its offset.
    fn parts_of(&self, node: &str) -> Vec<(usize, usize)> {
        let spaces: Vec<usize> = match self.parts.get(node) {
            Some(parts) => parts.iter().flat_map(|&s| self.leaves(s)).collect(),
            None => self.leaves(self.space[node]),
        };
        let mut offset = 0;
        spaces
            .into_iter()
            .map(|s| {
                let at = offset;
                offset += self.facts.width[s];
                (s, at)
            })
            .collect()
    }
    fn composite(&self, node: &str) -> bool {
        self.parts_of(node).len() > 1
    }
    /// Fixes `node`'s channels, every part of a concatenation's.
    fn fix_node(&mut self, node: &str, why: String) {
        let (s, _) = self.at(node);
        for (part, _) in self.parts_of(node) {
            self.fix(part, why.clone());
        }
        self.fix(s, why);
    }

    /// One node: its output's space and channel axis, from how its op treats channels.
    fn node(&mut self, node: &'g Node) -> (usize, usize) {
        // A constant reads its input for the batch size only.
        let constant = matches!(node.op.def().channels(), ChannelRule::Constant { .. });
        if !constant && node.inputs.iter().any(|i| self.headed(i)) {
            return self.follow_heads(node);
        }
        // The first input's space and axis (none for a graph input).
        let (s0, a0) = node.inputs.first().map_or((usize::MAX, 0), |i| self.at(i));
        let name = node.name.as_str();
        match node.op.def().channels() {
            ChannelRule::Source => {
                // An input's channels are its first dimension (none for, say, token ids).
                let channels = match self.graph.input_decl(name).and_then(|d| d.dims.first()) {
                    Some(Dim::Fixed(c)) => *c,
                    _ => 0,
                };
                let s = self.new_space(channels);
                self.fix(s, "image input channels".into());
                (s, self.shape(name).len())
            }
            ChannelRule::Transform {
                outputs, fixes, axis, ..
            } => {
                for (part, offset) in self.parts_of(&node.inputs[0]) {
                    self.facts.consumers.push((part, name, offset));
                }
                let s = self.new_space(outputs);
                self.facts.producers.push((s, name, 0));
                if let Some(why) = fixes {
                    self.fix_node(&node.inputs[0], format!("{why} '{name}'"));
                    self.fix(s, format!("{why} '{name}'"));
                }
                (s, axis)
            }
            ChannelRule::PerChannel { .. } => {
                for (part, offset) in self.parts_of(&node.inputs[0]) {
                    self.facts.norms.push((part, name, offset));
                }
                self.pass_parts(node);
                (s0, a0)
            }
            ChannelRule::Range { axis: 0, start, end } => self.range(node, start, end),
            // A range of another axis passes channels on where they stay whole.
            ChannelRule::Preserve | ChannelRule::Range { .. } => match self.preserved_axis(node, a0) {
                Some(a) => {
                    self.pass_parts(node);
                    (s0, a)
                }
                None => self.mix(node, "changes the channel axis of"),
            },
            ChannelRule::Tie if node.inputs.iter().any(|i| self.composite(i)) => self.tie_parts(node),
            ChannelRule::Tie => self.tie(node),
            ChannelRule::Join => self.join(node),
            ChannelRule::Reshape => self.reshape(node),
            ChannelRule::Permute { perm } => self.permute(node, perm),
            ChannelRule::Product => self.mix(node, "a product of two computed values"),
            ChannelRule::Constant { scalar } => {
                let s = self.new_space(0);
                if scalar {
                    self.scalars.insert(s);
                }
                self.fix(s, format!("a constant tensor '{name}' (its width is fixed)"));
                (s, 0)
            }
            ChannelRule::Mix { why } => self.mix(node, why),
        }
    }

    /// A channel-passing op's output holds its input's concatenated channels as they are.
    fn pass_parts(&mut self, node: &'g Node) {
        if let Some(parts) = self.parts.get(node.inputs[0].as_str()).cloned() {
            self.parts.insert(&node.name, parts);
        }
    }

    /// A concatenation along channels: its output's channels are its inputs' in order, where each
    /// input holds its channels on its first per-sample axis.
    fn join(&mut self, node: &'g Node) -> (usize, usize) {
        let mut parts = Vec::new();
        let mut axis = None;
        for i in &node.inputs {
            let (s, a) = self.at(i);
            let shape = self.shape(i);
            if a == 0 || a != shape.len() || self.scalars.contains(&s) || axis.is_some_and(|x| x != a) {
                return self.mix(node, "concatenates values with channels elsewhere in");
            }
            axis = Some(a);
            let inner = self.parts_of(i);
            let width: usize = inner.iter().map(|&(p, _)| self.facts.width[p]).sum();
            if width != shape[0] {
                return self.mix(node, "concatenates values of unknown width in");
            }
            parts.extend(inner.into_iter().map(|(p, _)| p));
        }
        let s = self.new_space(0);
        self.fix(s, format!("the concatenation '{}' (its parts are followed)", node.name));
        self.parts.insert(&node.name, parts);
        (s, axis.unwrap_or(0))
    }

    /// A tie of values made of parts: one value's parts met by itself (x * sigmoid(x) after a
    /// concatenation or a split) pass on; anything else mixes.
    fn tie_parts(&mut self, node: &'g Node) -> (usize, usize) {
        let members: Vec<&String> = node
            .inputs
            .iter()
            .filter(|i| !self.scalars.contains(&self.space[i.as_str()]))
            .collect();
        let first = self.parts_of(members[0]);
        if members.iter().all(|i| self.parts_of(i) == first) {
            let (s, a) = self.at(members[0]);
            if let Some(parts) = self.parts.get(members[0].as_str()).cloned() {
                self.parts.insert(&node.name, parts);
            }
            return (s, a);
        }
        self.mix(node, "adds values made of different parts in")
    }

    /// A slice of channels `start..end`: the spaces it takes are cut at its bounds, so the slice
    /// takes whole spaces and what follows it reads them.
    fn range(&mut self, node: &'g Node, start: usize, end: usize) -> (usize, usize) {
        let input = node.inputs[0].as_str();
        let (_, a) = self.at(input);
        if a == 0 || a != self.shape(input).len() {
            return self.mix(node, "takes a range of channels in");
        }
        for cut in [start, end] {
            let inside = self
                .parts_of(input)
                .into_iter()
                .find(|&(p, at)| at < cut && cut < at + self.facts.width[p]);
            if let Some((p, at)) = inside {
                if !self.cut(p, cut - at) {
                    return self.mix(node, "takes a range of channels tied elsewhere in");
                }
            }
        }
        let mut taken = Vec::new();
        for (p, at) in self.parts_of(input) {
            let width = self.facts.width[p];
            if at >= start && at + width <= end {
                taken.push(p);
                self.facts.slicers.push((p, &node.name, true));
            } else if at + width <= start {
                self.facts.slicers.push((p, &node.name, false));
            }
        }
        match taken.as_slice() {
            [one] => (*one, a),
            _ => {
                let s = self.new_space(0);
                self.fix(s, format!("the slice '{}' (its parts are followed)", node.name));
                self.parts.insert(&node.name, taken);
                (s, a)
            }
        }
    }

    /// Cuts space `s` in two at channel `at`: every fact about it holds for each half at the
    /// half's offset. Only a space tied to no other is cut (a tie would have to be cut too).
    fn cut(&mut self, s: usize, at: usize) -> bool {
        let root = self.facts.uf.find(s);
        let alone = (0..self.facts.width.len()).all(|x| x == s || self.facts.uf.find(x) != root);
        if !alone || self.scalars.contains(&s) {
            return false;
        }
        let width = self.facts.width[s];
        let halves = [self.new_space(at), self.new_space(width - at)];
        let offsets = [0, at];
        let f = &mut self.facts;
        let split = |list: &mut Vec<(usize, &'g str, usize)>| {
            let moved: Vec<_> = list.iter().filter(|e| e.0 == s).copied().collect();
            list.retain(|e| e.0 != s);
            for (h, o) in halves.iter().zip(offsets) {
                list.extend(moved.iter().map(|&(_, n, off)| (*h, n, off + o)));
            }
        };
        split(&mut f.producers);
        split(&mut f.norms);
        split(&mut f.consumers);
        let slicers: Vec<_> = f.slicers.iter().filter(|e| e.0 == s).copied().collect();
        f.slicers.retain(|e| e.0 != s);
        let fixed: Vec<_> = f.fixed.iter().filter(|e| e.0 == s).cloned().collect();
        for h in halves {
            f.slicers.extend(slicers.iter().map(|&(_, n, t)| (h, n, t)));
            f.fixed.extend(fixed.iter().map(|(_, why)| (h, why.clone())));
        }
        f.fixed.push((s, "cut in two by a slice".into()));
        self.refined.insert(s, halves);
        true
    }

    /// Fixes every input's channels and starts a fixed space.
    fn mix(&mut self, node: &'g Node, why: &str) -> (usize, usize) {
        for i in &node.inputs {
            self.fix_node(i, format!("{why} '{}'", node.name));
        }
        let s = self.new_space(0);
        self.fix(s, format!("{why} '{}'", node.name));
        (s, 0)
    }

    /// Where a channel-preserving op's output keeps its input's channels: the same axis, or the
    /// same less the axes a reduction removed after it; `None` when neither holds the width.
    fn preserved_axis(&self, node: &Node, axis: usize) -> Option<usize> {
        let (input, output) = (self.shape(&node.inputs[0]), self.shape(&node.name));
        let channels = along(input, axis);
        if axis == 0 || channels.is_none() {
            return Some(axis);
        }
        let dropped = input.len().saturating_sub(output.len());
        [axis, axis.saturating_sub(dropped)]
            .into_iter()
            .find(|&a| along(output, a) == channels)
    }

    /// Channel k of every input (scalars aside) lands in channel k of the output: one space, when
    /// every input holds its channels on the output's channel axis at the output's width.
    fn tie(&mut self, node: &'g Node) -> (usize, usize) {
        let members: Vec<(usize, usize, &str)> = node
            .inputs
            .iter()
            .map(|i| {
                let (s, a) = self.at(i);
                (s, a, i.as_str())
            })
            .filter(|(s, _, _)| !self.scalars.contains(s))
            .collect();
        let Some(&(first, axis, _)) = members.first() else {
            return self.at(&node.inputs[0]);
        };
        let width = along(self.shape(&node.name), axis);
        let aligned = members
            .iter()
            .all(|&(_, a, i)| axis == 0 || (a == axis && along(self.shape(i), a) == width));
        if !aligned {
            return self.mix(node, "broadcasts channels against another axis in");
        }
        for &(s, _, _) in &members[1..] {
            self.facts.uf.union(first, s);
        }
        (first, axis)
    }
}

/// One walk in graph order, asking each op how it treats channels.
fn record_spaces<'g>(graph: &'g Graph, shapes: &'g HashMap<String, Vec<usize>>) -> SpaceFacts<'g> {
    let mut walk = Walk {
        graph,
        shapes,
        facts: SpaceFacts::default(),
        space: HashMap::new(),
        axis: HashMap::new(),
        scalars: Default::default(),
        parts: HashMap::new(),
        refined: HashMap::new(),
        heads: HashMap::new(),
        head_parts: HashMap::new(),
    };
    for node in &graph.nodes {
        let (s, a) = walk.node(node);
        walk.space.insert(&node.name, s);
        walk.axis.insert(&node.name, a);
    }
    for out in &graph.outputs {
        walk.fix_node(&out.node, format!("output of task '{}'", out.task));
    }
    walk.facts
}

/// The facts resolved to one group per union-find root, after every union is known.
fn resolve_groups(facts: SpaceFacts) -> BTreeMap<usize, ChannelGroup> {
    let SpaceFacts {
        width,
        uf,
        producers,
        consumers,
        norms,
        slicers,
        fixed,
        blocks,
        reshapes,
        head_constants,
    } = facts;
    let mut b = Builder {
        groups: BTreeMap::new(),
        uf,
        width: &width,
    };
    for s in 0..width.len() {
        b.of(s);
    }
    b.add_producers(producers);
    for (s, n, takes) in slicers {
        b.of(s).slicers.insert(n.to_string(), takes);
    }
    b.add_members(norms, consumers);
    for (s, unit) in blocks {
        b.of(s).unit = unit;
    }
    for (s, n, axis, per_entry) in reshapes {
        b.of(s).reshapes.insert(n.to_string(), (axis, per_entry));
    }
    for (s, n, axis, per_entry) in head_constants {
        b.of(s).constants.insert(n.to_string(), (axis, per_entry));
    }
    fix_shared_reshapes(&mut b.groups);
    for (s, why) in fixed {
        b.of(s).fixed.get_or_insert(why);
    }
    b.groups
}

/// One group per union-find root, made as the facts name their spaces.
struct Builder<'w> {
    groups: BTreeMap<usize, ChannelGroup>,
    uf: UnionFind,
    width: &'w [usize],
}

impl Builder<'_> {
    /// The group of space `s`.
    fn of(&mut self, s: usize) -> &mut ChannelGroup {
        let root = self.uf.find(s);
        let group = self.groups.entry(root).or_insert_with(|| ChannelGroup {
            channels: 0,
            producers: vec![],
            norms: vec![],
            consumers: vec![],
            offsets: BTreeMap::new(),
            producer_offsets: BTreeMap::new(),
            slicers: BTreeMap::new(),
            fixed: None,
            unit: Unit::Channel,
            reshapes: BTreeMap::new(),
            constants: BTreeMap::new(),
        });
        // A mixing op's output space has no width of its own (0); a space it is tied to has one.
        group.channels = group.channels.max(self.width[s]);
        group
    }

    /// Producers, once each with every offset they write the group at (offsets kept only where
    /// they are not just 0).
    fn add_producers(&mut self, producers: Vec<(usize, &str, usize)>) {
        for (s, n, offset) in producers {
            let g = self.of(s);
            if !g.producers.iter().any(|p| p == n) {
                g.producers.push(n.to_string());
            }
            g.producer_offsets.entry(n.to_string()).or_default().push(offset);
        }
        for g in self.groups.values_mut() {
            g.producer_offsets.retain(|_, at| at.as_slice() != [0]);
        }
    }

    /// Norms and consumers at their offsets. A member that holds one group's channels at two
    /// offsets (a concatenation of a value with itself, or of two tied values) would lose a
    /// channel twice: such a group stays whole.
    fn add_members(&mut self, norms: Vec<(usize, &str, usize)>, consumers: Vec<(usize, &str, usize)>) {
        let mut twice = Vec::new();
        let members = norms.into_iter().map(|m| (m, true));
        for ((s, n, offset), norm) in members.chain(consumers.into_iter().map(|m| (m, false))) {
            let g = self.of(s);
            let list = if norm { &mut g.norms } else { &mut g.consumers };
            if list.iter().any(|m| m == n) {
                twice.push((s, n));
            }
            list.push(n.to_string());
            if offset > 0 {
                g.offsets.insert(n.to_string(), offset);
            }
        }
        for (s, n) in twice {
            self.of(s)
                .fixed
                .get_or_insert(format!("'{n}' reads its channels twice"));
        }
    }
}

/// A reshape whose target follows two groups could not follow both: those groups stay whole.
fn fix_shared_reshapes(groups: &mut BTreeMap<usize, ChannelGroup>) {
    let mut readers: BTreeMap<String, usize> = BTreeMap::new();
    for g in groups.values() {
        for n in g.reshapes.keys() {
            *readers.entry(n.clone()).or_default() += 1;
        }
    }
    for g in groups.values_mut() {
        if let Some(n) = g.reshapes.keys().find(|n| readers[*n] > 1) {
            g.fixed
                .get_or_insert(format!("the reshape '{n}' follows several groups"));
        }
    }
}

/// Every producer of a group makes the group's width (the shape checker enforces it too).
fn check_widths(graph: &Graph, groups: &BTreeMap<usize, ChannelGroup>) -> Result<()> {
    let by_name: HashMap<&str, &Op> = graph.nodes.iter().map(|n| (n.name.as_str(), &n.op)).collect();
    // A producer a slice cut writes several groups, side by side.
    let mut written: BTreeMap<&str, usize> = BTreeMap::new();
    for g in groups.values() {
        for p in &g.producers {
            *written.entry(p).or_default() += g.channels * g.producer_offsets_of(p).len();
        }
    }
    for (p, channels) in written {
        let ChannelRule::Transform { outputs: out, .. } = by_name[p].def().channels() else {
            bail!("node '{p}' is listed as a channel producer but does not make new channels");
        };
        if out != channels {
            bail!("node '{p}' produces {out} channels into groups of {channels}");
        }
    }
    Ok(())
}

/// The parameters of a transform (a convolution, linear layer or attention): its weight and bias
/// pairs, and what a removed output channel carries (see [`ChannelRule::Transform`]).
pub struct TransformParams {
    pub weights: Vec<(String, Option<String>)>,
    pub constant: Option<String>,
    /// Where its channels lie, counted from the last axis (3 for [C, H, W], 1 for [..., C]).
    pub axis: usize,
}

impl TransformParams {
    /// The first weight: the one whose scores say whether a task scores the transform.
    pub fn weight(&self) -> &str {
        &self.weights[0].0
    }
}

/// The weight and bias names of a transform node.
pub fn transform_params(graph: &Graph, node: &str) -> Result<TransformParams> {
    match graph
        .node(node)
        .ok_or_else(|| anyhow!("no node '{node}'"))?
        .op
        .def()
        .channels()
    {
        ChannelRule::Transform {
            weights,
            constant,
            axis,
            ..
        } => Ok(TransformParams {
            weights: weights
                .into_iter()
                .map(|(w, b)| (w.to_string(), b.map(str::to_string)))
                .collect(),
            constant: constant.map(str::to_string),
            axis,
        }),
        _ => bail!("node '{node}' is not a convolution, linear layer or attention"),
    }
}

/// Whether a task scores group `g`: the group is prunable and every producer's weight is one the
/// task scores (`scored`), i.e. the group lies in the backbone or in the task's own head.
pub fn task_scores_group(graph: &Graph, g: &ChannelGroup, scored: impl Fn(&str) -> bool) -> bool {
    g.prunable()
        && !g.producers.is_empty()
        && g.producers
            .iter()
            .all(|p| transform_params(graph, p).is_ok_and(|t| scored(t.weight())))
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

    /// input -> a (3 -> 8) -> depthwise 3x3 -> * scalar -> b (8 -> 4); c1, c2 (4 -> 2 each) ->
    /// concat over channels -> e (4 -> 2) = output.
    fn depthwise_scalar_concat() -> Graph {
        use crate::graph::ops::{Concat, Constant};
        let depthwise = match conv("dw", 8, 8) {
            Op::Conv2d(c) => Op::Conv2d(crate::graph::Conv2d {
                groups: 8,
                kernel: [3, 3],
                padding: [1, 1],
                ..c
            }),
            _ => unreachable!(),
        };
        let scalar = Op::Constant(Constant {
            tensor: "half".into(),
            shape: vec![1, 1, 1],
            trained: false,
        });
        Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(8, 8),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("a", &["input"], conv("a", 3, 8)),
                Node::new("dw", &["a"], depthwise),
                Node::new("half", &["dw"], scalar),
                Node::new("scaled", &["dw", "half"], Op::Mul),
                Node::new("b", &["scaled"], conv("b", 8, 4)),
                Node::new("c1", &["b"], conv("c1", 4, 2)),
                Node::new("c2", &["b"], conv("c2", 4, 2)),
                Node::new("cat", &["c1", "c2"], Op::Concat(Concat { axis: 0 })),
                Node::new("e", &["cat"], conv("e", 4, 2)),
            ],
            outputs: vec![GraphOutput {
                task: "t".into(),
                node: "e".into(),
            }],
        }
    }

    /// A grouped 3x3 convolution (8 -> 8 in 2 groups of 4) after a passes a's channels a group at
    /// a time; one with more outputs than inputs (8 -> 16) fixes both sides.
    #[test]
    fn grouped_convolutions_pass_whole_groups() {
        let grouped = |name: &str, cout: usize| match conv(name, 8, cout) {
            Op::Conv2d(c) => Op::Conv2d(crate::graph::Conv2d {
                groups: 2,
                kernel: [3, 3],
                padding: [1, 1],
                ..c
            }),
            _ => unreachable!(),
        };
        let mut g = depthwise_scalar_concat();
        g.nodes[2] = Node::new("dw", &["a"], grouped("dw", 8));
        g.validate().unwrap();
        let groups = channel_groups(&g).unwrap();
        let a = groups.iter().find(|x| x.producers == ["a"]).unwrap();
        assert_eq!(
            (a.unit, a.units(), a.norms.clone()),
            (Unit::Group { width: 4 }, 2, vec!["dw".to_string()])
        );
        assert!(a.prunable());
        assert_eq!(a.channels_of(&[1]), [4, 5, 6, 7]);
        let widths: Vec<usize> = groups.iter().map(|x| if x == a { 4 } else { x.channels }).collect();
        let resized = crate::prune::structured::resize(&g, &groups, &widths);
        let Op::Conv2d(dw) = &resized.node("dw").unwrap().op else {
            panic!()
        };
        assert_eq!((dw.in_channels, dw.out_channels, dw.groups), (4, 4, 1));
        resized.validate().unwrap();

        let mut wide = depthwise_scalar_concat();
        wide.nodes[2] = Node::new("dw", &["a"], grouped("dw", 16));
        wide.nodes[5] = Node::new("b", &["scaled"], conv("b", 16, 4));
        wide.validate().unwrap();
        let groups = channel_groups(&wide).unwrap();
        let a = groups.iter().find(|x| x.producers == ["a"]).unwrap();
        assert_eq!(a.fixed.as_deref(), Some("grouped convolution 'dw'"));
    }

    #[test]
    fn depthwise_filters_and_scalars_pass_channels_concatenations_keep_offsets() {
        let g = depthwise_scalar_concat();
        g.validate().unwrap();
        let groups = channel_groups(&g).unwrap();
        let find = |p: &str| groups.iter().find(|g| g.producers.iter().any(|x| x == p)).unwrap();
        // The depthwise filter is a per-channel member of a's group; the scalar joins nothing.
        let a = find("a");
        assert_eq!((a.channels, a.prunable()), (8, true));
        assert_eq!(a.norms, ["dw"]);
        assert_eq!(a.consumers, ["b"]);
        assert!(find("b").prunable());
        // Each concatenated input is a group of its own, read by e at its offset.
        let (c1, c2) = (find("c1"), find("c2"));
        assert!(c1.prunable() && c2.prunable(), "{c1:?} {c2:?}");
        assert_eq!((c1.consumers.clone(), c1.offset("e")), (vec!["e".to_string()], 0));
        assert_eq!((c2.consumers.clone(), c2.offset("e")), (vec!["e".to_string()], 2));
        // Resized, the depthwise filter keeps one group per channel, and e reads both parts.
        let widths: Vec<usize> = groups
            .iter()
            .map(|x| {
                if x == a {
                    5
                } else if x == c2 {
                    1
                } else {
                    x.channels
                }
            })
            .collect();
        let resized = crate::prune::structured::resize(&g, &groups, &widths);
        let Op::Conv2d(dw) = &resized.node("dw").unwrap().op else {
            panic!()
        };
        assert_eq!((dw.in_channels, dw.out_channels, dw.groups), (5, 5, 5));
        let Op::Conv2d(e) = &resized.node("e").unwrap().op else {
            panic!()
        };
        assert_eq!(e.in_channels, 3);
        resized.validate().unwrap();
    }

    #[test]
    fn a_split_cuts_its_producer_into_groups_and_resizes_its_slices() {
        use crate::graph::ops::Slice;
        let slice = |start, end| Op::Slice(Slice { axis: 0, start, end });
        let g = Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(8, 8),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("a", &["input"], conv("a", 3, 8)),
                Node::new("relu", &["a"], Op::Relu),
                Node::new("low", &["relu"], slice(0, 4)),
                Node::new("high", &["relu"], slice(4, 8)),
                Node::new("b", &["low"], conv("b", 4, 2)),
                Node::new("c", &["high"], conv("c", 4, 2)),
                Node::new("sum", &["b", "c"], Op::Add),
            ],
            outputs: vec![GraphOutput {
                task: "t".into(),
                node: "sum".into(),
            }],
        };
        g.validate().unwrap();
        let groups = channel_groups(&g).unwrap();
        let halves: Vec<&ChannelGroup> = groups.iter().filter(|x| x.producers == ["a"]).collect();
        let [low, high] = halves.as_slice() else {
            panic!("{groups:?}")
        };
        assert!(low.prunable() && high.prunable());
        assert_eq!(
            (low.channels, low.producer_offsets_of("a"), &low.consumers),
            (4, vec![0], &vec!["b".to_string()])
        );
        assert_eq!(
            (high.channels, high.producer_offsets_of("a"), &high.consumers),
            (4, vec![4], &vec!["c".to_string()])
        );
        assert_eq!(
            low.slicers,
            BTreeMap::from([("low".into(), true), ("high".into(), false)])
        );
        assert_eq!(high.slicers, BTreeMap::from([("high".into(), true)]));
        // Three channels kept of the first half, two of the second: a writes 5, the slices move.
        let widths: Vec<usize> = groups
            .iter()
            .map(|x| {
                if x == *low {
                    3
                } else if x == *high {
                    2
                } else {
                    x.channels
                }
            })
            .collect();
        let resized = crate::prune::structured::resize(&g, &groups, &widths);
        resized.validate().unwrap();
        let range = |n: &str| match &resized.node(n).unwrap().op {
            Op::Slice(s) => (s.start, s.end),
            _ => panic!(),
        };
        assert_eq!((range("low"), range("high")), ((0, 3), (3, 5)));
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
