//! Heads and FFN neurons of a BERT-family encoder, as the general channel pruner sees them: groups
//! found from the graph (an attention is a transform whose units are heads), removed physically with
//! their constants folded, equal to the model with those units' input weights zeroed; uneven and
//! empty layers run, save and load; heads selected whole under their own rules.

use cut::checkpoint::{writer, Checkpoint, DType, LoadOptions};
use cut::families::bert::BertConfig;
use cut::graph::interpreter::{forward_inputs, Inputs, Mode, Params};
use cut::graph::ops::Unit;
use cut::graph::{Model, TaskKind};
use cut::prune::channel_select::{ChannelScores, ChannelSearch, WidthRules};
use cut::prune::channels::{channel_groups, ChannelGroup};
use cut::prune::mask::Fusion;
use cut::prune::structured::{shrink, zero_removed};
use tch::{Device, Kind, Tensor};

fn tiny() -> (Model, Params) {
    let config: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 6, "max_position_embeddings": 16, "hidden_act": "gelu",
        "prefix": "bert.",
        "heads": [
            {"task": "tag", "kind": "token", "classes": 3},
            {"task": "topic", "kind": "sequence-mean", "classes": 2}
        ]
    }))
    .unwrap();
    let model = config.build().unwrap();
    tch::manual_seed(7);
    // Random everything, biases included, so that the folded constants matter.
    let params: Params = model
        .graph
        .param_specs()
        .into_iter()
        .map(|s| {
            let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            (
                s.name,
                Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * 0.5,
            )
        })
        .collect();
    (model, params)
}

fn batch() -> Inputs {
    let ids = Tensor::from_slice(&[2i64, 5, 9, 11, 3, 2, 7, 4, 0, 0]).view([2, 5]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([2, 5]);
    Inputs::from([("input_ids".to_string(), ids), ("attention_mask".to_string(), mask)])
}

fn run(model: &Model, params: &Params) -> Vec<Tensor> {
    let out = tch::no_grad(|| forward_inputs(&model.graph, params, &batch(), &["tag", "topic"], Mode::Eval).unwrap());
    vec![out["tag"].narrow(1, 0, 3).copy(), out["topic"].copy()]
}

fn prunable(model: &Model) -> Vec<ChannelGroup> {
    channel_groups(&model.graph).unwrap()
}

/// Keep lists in channels from keep lists in units (None: the group stays whole).
fn keep_units(groups: &[ChannelGroup], units: &[Option<Vec<usize>>]) -> Vec<Option<Vec<i64>>> {
    groups
        .iter()
        .zip(units)
        .map(|(g, u)| u.as_ref().map(|u| g.channels_of(u)))
        .collect()
}

/// The prunable groups' (unit, first producer, first consumer, units).
fn summary(groups: &[ChannelGroup]) -> Vec<(Unit, &str, &str, usize)> {
    groups
        .iter()
        .filter(|g| g.prunable())
        .map(|g| (g.unit, g.producers[0].as_str(), g.consumers[0].as_str(), g.units()))
        .collect()
}

#[test]
fn groups_found_by_hand() {
    let (model, _) = tiny();
    let groups = prunable(&model);
    let heads = Unit::Head { width: 2 };
    assert_eq!(
        summary(&groups),
        vec![
            (
                heads,
                "bert.encoder.layer.0.attention.self",
                "bert.encoder.layer.0.attention.output.dense",
                4
            ),
            (
                Unit::Neuron,
                "bert.encoder.layer.0.intermediate.dense",
                "bert.encoder.layer.0.output.dense",
                6
            ),
            (
                heads,
                "bert.encoder.layer.1.attention.self",
                "bert.encoder.layer.1.attention.output.dense",
                4
            ),
            (
                Unit::Neuron,
                "bert.encoder.layer.1.intermediate.dense",
                "bert.encoder.layer.1.output.dense",
                6
            ),
        ]
    );
    // The hidden size is tied to the embeddings and layer norms, the task heads' outputs are task
    // outputs: neither is prunable.
    assert!(groups.iter().filter(|g| !g.prunable()).all(|g| g
        .producers
        .iter()
        .all(|p| !p.contains("intermediate") && !p.ends_with("self"))));
}

/// The prunable groups' indices in `channel_groups` order: heads 0, neurons 0, heads 1, neurons 1.
fn layer_groups(groups: &[ChannelGroup]) -> Vec<usize> {
    (0..groups.len()).filter(|&i| groups[i].prunable()).collect()
}

/// Keep lists with `units[k]` for the k-th prunable group.
fn keep_prunable(groups: &[ChannelGroup], units: [Option<Vec<usize>>; 4]) -> Vec<Option<Vec<i64>>> {
    let mut all: Vec<Option<Vec<usize>>> = vec![None; groups.len()];
    for (i, u) in layer_groups(groups).into_iter().zip(units) {
        all[i] = u;
    }
    keep_units(groups, &all)
}

/// Uneven heads (2 of 4, then none) and neurons (3 of 6, then 1): the smaller model equals the
/// model with the removed units' input weights zeroed, within 1e-4, also after a save and a load.
#[test]
fn pruned_equals_zeroed_and_round_trips() {
    let (model, params) = tiny();
    let groups = prunable(&model);
    let keep = keep_prunable(
        &groups,
        [Some(vec![1, 3]), Some(vec![0, 2, 5]), Some(vec![]), Some(vec![4])],
    );
    let zeroed = zero_removed(&model, &params, &groups, &keep).unwrap();
    let small = shrink(&model, &params, &groups, &keep).unwrap();
    let (small, small_params) = (small.model, small.params);
    let widths: Vec<usize> = summary(&prunable(&small)).iter().map(|s| s.3).collect();
    assert_eq!(widths, vec![2, 3, 0, 1]);
    let (want, got) = (run(&model, &zeroed), run(&small, &small_params));
    for (w, g) in want.iter().zip(&got) {
        let diff = (w - g).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "pruned and zeroed differ by {diff}");
    }
    // The full model differs: the test would notice a fold that did nothing.
    let full = run(&model, &params);
    assert!((&full[0] - &got[0]).abs().max().double_value(&[]) > 1e-3);
    assert!(
        small_params.values().map(|t| t.numel()).sum::<usize>() < params.values().map(|t| t.numel()).sum::<usize>()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    writer::save_model(&path, &small, &small_params, DType::F32, false, None).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let loaded = ckpt.model(&LoadOptions::default()).unwrap().model;
    assert_eq!(loaded.graph, small.graph);
    let loaded_params = ckpt.load_params(&loaded, Device::Cpu).unwrap();
    for (a, b) in run(&loaded, &loaded_params).iter().zip(&got) {
        assert!(a.equal(b));
    }
    assert_eq!(loaded.tasks[0].kind, TaskKind::Token);
}

/// A repeated channel, one past the end, half a head, or no neuron at all is refused.
#[test]
fn bad_keep_lists_are_refused() {
    let (model, params) = tiny();
    let groups = prunable(&model);
    let heads = layer_groups(&groups)[0];
    let neurons = layer_groups(&groups)[1];
    let with = |i: usize, k: Vec<i64>| {
        let mut keep: Vec<Option<Vec<i64>>> = vec![None; groups.len()];
        keep[i] = Some(k);
        shrink(&model, &params, &groups, &keep).err().map(|e| e.to_string())
    };
    for (i, k) in [
        (heads, vec![0, 1, 1]),
        (heads, vec![8, 9]),
        (heads, vec![0, 1, 2]),
        (heads, vec![1, 2]),
        (neurons, vec![]),
    ] {
        let err = with(i, k.clone()).unwrap_or_else(|| panic!("{k:?} was accepted"));
        assert!(err.contains("must be sorted, unique, in range, whole"), "{err}");
    }
    assert!(with(heads, vec![]).is_none(), "a layer may lose all its heads");
}

/// Rules with no cap, no rounding and one channel at least, unless a test says otherwise.
const RULES: WidthRules = WidthRules {
    min_channels: 1,
    round_to: 1,
    max_layer_ratio: 1.0,
    min_heads: 1,
};

/// One task's scores for the first layer's heads and neurons (the second layer unscored).
fn first_layer_scores(groups: &[ChannelGroup], heads: Vec<f64>, neurons: Vec<f64>) -> ChannelScores {
    let ids = layer_groups(groups);
    ChannelScores::from([("tag".to_string(), [(ids[0], heads), (ids[1], neurons)].into())])
}

/// The tiny model at 5 tokens: a head costs 3 x 5 x 8 x 2 (q, k, v) + 2 x 5 x 5 x 2 (scores and
/// context) + 5 x 2 x 8 (its output columns) = 420 MACs, a neuron 5 x 8 + 5 x 8 = 80.
fn at_five_tokens() -> Model {
    let (mut model, _) = tiny();
    model.graph.sizes.insert("seq".into(), 5);
    model
}

/// Selection by hand, one task: heads scored 5, 1, 3, 2 (per MAC .0119, .0024, .0071, .0048) and
/// neurons .4 1.2 .4 .4 .8 .4 (per MAC .005 .015 .005 .005 .01 .005). The task ranks n1, h0, n4,
/// h2, then n0 n2 n3 n5, h3, h1. Its best 3 keep head 0 and neurons 1 and 4; its best 4 add head 2.
/// Heads are whole (channels 2h, 2h + 1), never rounded, and at least `min_heads` stay, or none.
#[test]
fn heads_selected_whole_by_hand() {
    let model = at_five_tokens();
    let groups = prunable(&model);
    let [h, n] = [layer_groups(&groups)[0], layer_groups(&groups)[1]];
    let scores = first_layer_scores(&groups, vec![5.0, 1.0, 3.0, 2.0], vec![0.4, 1.2, 0.4, 0.4, 0.8, 0.4]);
    let search =
        |rules| ChannelSearch::from_channel_scores(&model, &groups, &scores, Fusion::Vote, None, rules).unwrap();
    let keep = search(RULES).keep(0.3);
    assert_eq!(keep[h], Some(vec![0, 1]));
    assert_eq!(keep[n], Some(vec![1, 4]));
    assert_eq!(search(RULES).keep(0.4)[h], Some(vec![0, 1, 4, 5]));
    // At least 3 heads: head 0, then the best scored, 2 and 3.
    let three = search(WidthRules { min_heads: 3, ..RULES }).keep(0.3);
    assert_eq!(three[h], Some(vec![0, 1, 4, 5, 6, 7]));
    // min_heads 0 lets the layer lose its attention; neurons keep min_channels.
    let none = search(WidthRules { min_heads: 0, ..RULES }).keep(0.0);
    assert_eq!((none[h].clone(), none[n].clone()), (Some(vec![]), Some(vec![1])));
    // Rounding to 8 widens the neurons to all 6 and leaves heads alone.
    let rounded = search(WidthRules { round_to: 8, ..RULES }).keep(0.3);
    assert_eq!((rounded[h].clone(), rounded[n].clone()), (Some(vec![0, 1]), None));
    // A cap of half a layer keeps 2 heads.
    let capped = search(WidthRules {
        max_layer_ratio: 0.5,
        ..RULES
    })
    .keep(0.0);
    assert_eq!(capped[h], Some(vec![0, 1, 4, 5]));
    // The search meets a MAC budget in whole heads.
    let plan = search(RULES)
        .search(cut::prune::channel_select::Budget::MacShare(0.2))
        .unwrap();
    assert!(plan.macs_removed >= 0.2, "{}", plan.macs_removed);
    assert!(plan.keep[h]
        .iter()
        .flatten()
        .collect::<Vec<_>>()
        .chunks(2)
        .all(|c| c[0] % 2 == 0 && *c[1] == c[0] + 1));
}

/// Two tasks that rank four heads in opposite orders, a at 4 3 2 1 and b at 1 2 3 4. Union keeps a
/// head either task votes for: with each task's best one, heads 0 and 3. Intersection keeps a head
/// both vote for: with the best three, heads 1 and 2; vote needs two of two tasks here.
#[test]
fn fusion_by_hand() {
    let model = at_five_tokens();
    let groups = prunable(&model);
    let h = layer_groups(&groups)[0];
    let scores = ChannelScores::from([
        ("a".to_string(), [(h, vec![4.0, 3.0, 2.0, 1.0])].into()),
        ("b".to_string(), [(h, vec![1.0, 2.0, 3.0, 4.0])].into()),
    ]);
    let keep = |fusion, ratio| {
        ChannelSearch::from_channel_scores(&model, &groups, &scores, fusion, None, RULES)
            .unwrap()
            .keep(ratio)[h]
            .clone()
    };
    assert_eq!(keep(Fusion::Union, 0.25), Some(vec![0, 1, 6, 7]));
    assert_eq!(keep(Fusion::Intersection, 0.75), Some(vec![2, 3, 4, 5]));
    assert_eq!(keep(Fusion::Vote, 0.75), Some(vec![2, 3, 4, 5]));
    let err = ChannelSearch::from_channel_scores(&model, &groups, &scores, Fusion::Vote, Some(3), RULES)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--min-votes 3"), "{err}");
}

/// A unit's score for a task is its weights' scores summed: with every score 1, a head of width 2
/// in a model 8 wide holds 3 x (2 x 8) producer and 8 x 2 consumer entries: 64; a neuron 8 + 8: 16.
#[test]
fn unit_scores_by_hand() {
    use cut::prune::channel_select::channel_scores_from_weights;
    let (model, params) = tiny();
    let groups = prunable(&model);
    let ones: std::collections::BTreeMap<String, Tensor> = params
        .iter()
        .filter(|(n, _)| n.contains("encoder.") && n.ends_with("weight") && !n.contains("LayerNorm"))
        .map(|(n, t)| (n.clone(), Tensor::ones_like(t)))
        .collect();
    let scores = std::collections::BTreeMap::from([
        (
            "tag".to_string(),
            ones.iter().map(|(k, v)| (k.clone(), v.copy())).collect(),
        ),
        ("topic".to_string(), ones),
    ]);
    let s = channel_scores_from_weights(&model.graph, &groups, &scores).unwrap();
    let ids = layer_groups(&groups);
    for task in ["tag", "topic"] {
        assert_eq!(s[task][&ids[0]], vec![64.0; 4]);
        assert_eq!(s[task][&ids[1]], vec![16.0; 6]);
    }
}

/// Examples held in memory.
struct Held(Vec<cut::data::example::Example>);

impl cut::data::example::Examples for Held {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn load(&self, index: usize) -> anyhow::Result<cut::data::example::Example> {
        Ok(self.0[index].clone())
    }
    fn describe(&self, index: usize) -> String {
        format!("example {index}")
    }
}

/// Three sentences of 5 tokens (the last padded after 3), token tags and a topic each.
fn sentences() -> cut::data::example::Samples {
    use cut::data::example::{Example, Field};
    let rows: [([i64; 5], usize, [i64; 5], i64); 3] = [
        ([1, 5, 7, 9, 2], 5, [0, 1, 2, 1, -100], 1),
        ([1, 4, 4, 8, 2], 5, [2, 2, 0, 1, 0], 0),
        ([1, 6, 2, 0, 0], 3, [1, 0, -100, -100, -100], 1),
    ];
    let examples = rows
        .iter()
        .map(|(ids, len, tags, topic)| Example {
            inputs: vec![
                Field::i64("input_ids", vec![5], ids.to_vec()),
                Field::i64("attention_mask", vec![5], (0..5).map(|i| i64::from(i < *len)).collect()),
            ],
            labels: vec![
                Field::i64("tag", vec![5], tags.to_vec()),
                Field::i64("topic", vec![], vec![*topic]),
            ],
        })
        .collect();
    std::sync::Arc::new(Held(examples))
}

/// A task's loss on each sentence (batches of one, in order) with unit `u` of group `g` scaled by
/// a mask m between the producer's output and what a removed unit outputs there: for a head, its
/// context and its value bias c (the consumer's columns of the head times m, and (1 - m) times their
/// product with c added to its bias); for a neuron, its pre-activation and its bias (its weight row
/// times m).
fn masked_losses(model: &Model, params: &Params, task: &str, g: usize, u: usize, m: f64) -> Vec<f64> {
    let group = &prunable(model)[g];
    let mut p: Params = params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_kind(Kind::Double)))
        .collect();
    let width = group.unit.width();
    let cols = Tensor::arange_start((u * width) as i64, ((u + 1) * width) as i64, (Kind::Int64, Device::Cpu));
    match &model.graph.node(&group.producers[0]).unwrap().op {
        cut::graph::Op::SelfAttention(a) => {
            let cut::graph::Op::Linear(consumer) = &model.graph.node(&group.consumers[0]).unwrap().op else {
                panic!()
            };
            let c = p[&a.value_bias].copy();
            let mut w = p[&consumer.weight].copy();
            let w_unit = w.index_select(1, &cols);
            let bias = &p[consumer.bias.as_ref().unwrap()] + w_unit.mv(&c.index_select(0, &cols)) * (1.0 - m);
            let _ = w.index_copy_(1, &cols, &(w_unit * m));
            p.insert(consumer.weight.clone(), w);
            p.insert(consumer.bias.clone().unwrap(), bias);
        }
        cut::graph::Op::Linear(l) => {
            let mut w = p[&l.weight].copy();
            let rows = w.index_select(0, &cols) * m;
            let _ = w.index_copy_(0, &cols, &rows);
            p.insert(l.weight.clone(), w);
        }
        op => panic!("{op:?}"),
    }
    let spec = model.tasks.iter().find(|t| t.name == task).unwrap().clone();
    let loader = cut::data::loader::Loader::sequential(sentences(), 1, Device::Cpu);
    let mut out = Vec::new();
    for batch in loader {
        let batch = batch.unwrap();
        let inputs = batch.graph_inputs(&model.graph).unwrap();
        let y = forward_inputs(&model.graph, &p, &inputs, &[task], Mode::Eval).unwrap();
        let loss = cut::train::loss::task_loss(&spec, &y[task], &batch).unwrap();
        out.push(loss.double_value(&[]));
    }
    out
}

/// Taylor unit scores equal |dL/dm| per sentence, summed, where m is a mask between each unit's
/// output and its removed output: checked against central differences in f64 for every head and
/// neuron of the first layer, for both tasks.
#[test]
fn taylor_is_the_mask_gradient() {
    use cut::prune::score::{taylor, Calibration};
    let (model, params) = tiny();
    let groups = prunable(&model);
    let calibration = Calibration {
        items: sentences(),
        batches: 3,
        batch_size: 1,
        seed: 0,
        device: Device::Cpu,
    };
    let scores = taylor(&model, &params, &model.tasks, &groups, calibration, |_| {}).unwrap();
    // Losses come back in f32 (about 1e-7 of rounding each, 3e-5 over three sentences at this
    // step); a central difference's own error is O(eps^2).
    let eps = 1e-2;
    for task in ["tag", "topic"] {
        for g in layer_groups(&groups).into_iter().take(2) {
            for (u, &got) in scores[task][&g].iter().enumerate() {
                let up = masked_losses(&model, &params, task, g, u, 1.0 + eps);
                let down = masked_losses(&model, &params, task, g, u, 1.0 - eps);
                let want: f64 = up.iter().zip(&down).map(|(a, b)| ((a - b) / (2.0 * eps)).abs()).sum();
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs() + 3e-5,
                    "{task} group {g} unit {u}: taylor {got}, finite difference {want}"
                );
            }
        }
    }
}

/// Real tokens per sentence: 5, 5 and 3, a mean of 4.33, rounded to 4.
#[test]
fn mean_tokens_by_hand() {
    assert_eq!(cut::data::mean_tokens(&sentences(), "attention_mask").unwrap(), 4);
}
