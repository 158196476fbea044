//! Heads and FFN neurons of a BERT-family encoder: found from the graph, removed physically with
//! their constants folded, equal to the model with those units' input weights zeroed; uneven and
//! empty layers run, save and load.

use cut::checkpoint::{writer, Checkpoint, DType, LoadOptions};
use cut::families::bert::BertConfig;
use cut::graph::interpreter::{forward_inputs, Inputs, Mode, Params};
use cut::graph::{Model, TaskKind};
use cut::prune::encoder::{encoder_groups, shrink, zero_removed, GroupKind};
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

#[test]
fn groups_found_by_hand() {
    let (model, _) = tiny();
    let groups = encoder_groups(&model.graph);
    let summary: Vec<(GroupKind, &str, &str, usize, usize)> = groups
        .iter()
        .map(|g| (g.kind, g.producer.as_str(), g.consumer.as_str(), g.units, g.unit_width))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                GroupKind::Heads,
                "bert.encoder.layer.0.attention.self",
                "bert.encoder.layer.0.attention.output.dense",
                4,
                2
            ),
            (
                GroupKind::Neurons,
                "bert.encoder.layer.0.intermediate.dense",
                "bert.encoder.layer.0.output.dense",
                6,
                1
            ),
            (
                GroupKind::Heads,
                "bert.encoder.layer.1.attention.self",
                "bert.encoder.layer.1.attention.output.dense",
                4,
                2
            ),
            (
                GroupKind::Neurons,
                "bert.encoder.layer.1.intermediate.dense",
                "bert.encoder.layer.1.output.dense",
                6,
                1
            ),
        ]
    );
    // The task heads are not groups: their outputs are task outputs.
    assert!(groups.iter().all(|g| !g.producer.starts_with("heads.")));
}

/// Uneven heads (2 of 4, then none) and neurons (3 of 6, then none): the smaller model equals the
/// model with the removed units' input weights zeroed, within 1e-4, also after a save and a load.
#[test]
fn pruned_equals_zeroed_and_round_trips() {
    let (model, params) = tiny();
    let groups = encoder_groups(&model.graph);
    let keep = vec![vec![1, 3], vec![0, 2, 5], vec![], vec![]];
    let zeroed = zero_removed(&model, &params, &groups, &keep).unwrap();
    let (small, small_params) = shrink(&model, &params, &groups, &keep).unwrap();
    let heads: Vec<usize> = encoder_groups(&small.graph).iter().map(|g| g.units).collect();
    assert_eq!(heads, vec![2, 3, 0, 0]);
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

#[test]
fn bad_keep_lists_are_refused() {
    let (model, params) = tiny();
    let groups = encoder_groups(&model.graph);
    let err = shrink(&model, &params, &groups, &[vec![0, 0], vec![], vec![], vec![]]).unwrap_err();
    assert!(err.to_string().contains("repeats a unit"), "{err}");
    let err = shrink(&model, &params, &groups, &[vec![4], vec![], vec![], vec![]]).unwrap_err();
    assert!(err.to_string().contains("past 4"), "{err}");
    assert!(shrink(&model, &params, &groups, &[vec![]]).is_err());
}

fn groups_by_hand() -> [cut::prune::encoder::EncoderGroup; 2] {
    use cut::prune::encoder::EncoderGroup;
    let heads = EncoderGroup {
        kind: GroupKind::Heads,
        producer: "att".into(),
        activation: None,
        consumer: "out".into(),
        units: 4,
        unit_width: 2,
    };
    let ffn = EncoderGroup {
        kind: GroupKind::Neurons,
        producer: "in".into(),
        activation: Some("act".into()),
        consumer: "out2".into(),
        units: 6,
        unit_width: 1,
    };
    [heads, ffn]
}

/// Selection by hand, one task: heads of 100 MACs (scores 5, 1, 3, 2) and neurons of 10 MACs
/// (scores .1 .3 .1 .1 .2 .1, kept two at a time). Per MAC the task ranks h0 (.05), h2 (.03), n1
/// (.03, after h2 by position), h3 (.02), n4 (.02), then h1 and the other neurons (.01). Keeping its
/// best 3 keeps heads 0 and 2 and neuron 1, widened to 2 neurons with n4: 200 + 40 = 240 MACs go.
/// Its best 4 would add h3, and only 140 would go, under the 150 asked.
#[test]
fn selection_by_hand() {
    use cut::prune::mask::Fusion;
    use cut::prune::unit_select::{UnitRules, UnitScores, UnitSearch};
    let groups = groups_by_hand();
    let scores = UnitScores::from([(
        "a".to_string(),
        vec![vec![5.0, 1.0, 3.0, 2.0], vec![0.1, 0.3, 0.1, 0.1, 0.2, 0.1]],
    )]);
    let macs = [100, 10];
    let rules = UnitRules {
        min_heads: 1,
        round_to: 2,
        max_layer_ratio: 1.0,
    };
    let search = UnitSearch::new(&groups, &scores, &macs, Fusion::Vote, None).unwrap();
    let plan = search.search(150, rules).unwrap();
    assert_eq!(plan.keep, vec![vec![0, 2], vec![1, 4]]);
    assert_eq!(plan.removed, 240);
    // At most 3 heads (min 1) and all 6 neurons: 360 MACs.
    let err = search.search(361, rules).unwrap_err().to_string();
    assert!(err.contains("at most 360 go"), "{err}");
    assert!(cut::error::is_usage(&search.search(361, rules).unwrap_err()));
    let all = search.search(360, rules).unwrap();
    assert_eq!(all.keep, vec![vec![0], Vec::<usize>::new()]);
    // min_heads 0 lets the layer lose its attention; a cap of 0.5 keeps half of each layer.
    let none = search.search(460, UnitRules { min_heads: 0, ..rules }).unwrap();
    assert!(none.keep.iter().all(Vec::is_empty), "{:?}", none.keep);
    let capped = UnitRules {
        max_layer_ratio: 0.5,
        ..rules
    };
    // Half of 4 heads (200) and, of 6 neurons, 3 rounded down to 2 (20).
    assert!(search
        .search(221, capped)
        .unwrap_err()
        .to_string()
        .contains("at most 220 go"));
    // Caps tried in turn: 0.5 cannot remove 300, 1.0 can.
    let widened = search.search_with_caps(300, capped, &[0.5, 1.0]).unwrap();
    assert_eq!(widened.rules.max_layer_ratio, 1.0);
}

/// Two tasks that rank four heads (100 MACs each) in opposite orders, a at 4 3 2 1 and b at 1 2 3
/// 4, with one head to go. Union keeps a head either task votes for: with each task's best one
/// (heads 0 and 3) two heads go; with the best two all four stay. Intersection keeps a head both
/// vote for: with the best three, heads 1 and 2.
#[test]
fn fusion_by_hand() {
    use cut::prune::mask::Fusion;
    use cut::prune::unit_select::{UnitRules, UnitScores, UnitSearch};
    let groups = [groups_by_hand()[0].clone()];
    let scores = UnitScores::from([
        ("a".to_string(), vec![vec![4.0, 3.0, 2.0, 1.0]]),
        ("b".to_string(), vec![vec![1.0, 2.0, 3.0, 4.0]]),
    ]);
    let rules = UnitRules {
        min_heads: 1,
        round_to: 1,
        max_layer_ratio: 1.0,
    };
    let keep = |fusion| {
        UnitSearch::new(&groups, &scores, &[100], fusion, None)
            .unwrap()
            .search(100, rules)
            .unwrap()
            .keep
    };
    assert_eq!(keep(Fusion::Union), vec![vec![0, 3]]);
    assert_eq!(keep(Fusion::Intersection), vec![vec![1, 2]]);
    // Vote needs min(2, tasks) votes: intersection here.
    assert_eq!(keep(Fusion::Vote), vec![vec![1, 2]]);
    let err = UnitSearch::new(&groups, &scores, &[100], Fusion::Vote, Some(3))
        .err()
        .unwrap();
    assert!(err.to_string().contains("--min-votes 3"), "{err}");
}

/// A unit's score for a task is its weights' scores summed: with every score 1, a head of width 2
/// in a model 8 wide holds 3 x (2 x 8) producer and 8 x 2 consumer entries: 64; a neuron 8 + 8: 16.
#[test]
fn unit_scores_by_hand() {
    use cut::prune::unit_select::unit_scores;
    let (model, params) = tiny();
    let groups = encoder_groups(&model.graph);
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
    let s = unit_scores(&model.graph, &groups, &scores).unwrap();
    for task in ["tag", "topic"] {
        assert_eq!(s[task][0], vec![64.0; 4]);
        assert_eq!(s[task][1], vec![16.0; 6]);
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

/// A task's loss on each sentence (batches of one, in order) with unit `u` of group `g` scaled
/// by the mask `m` between its output and its removed output: the consumer's columns of the unit
/// times m, and (1 - m) times their product with the removed output added to its bias.
fn masked_losses(model: &Model, params: &Params, task: &str, g: usize, u: usize, m: f64) -> Vec<f64> {
    use cut::prune::encoder::removed_outputs;
    let group = &encoder_groups(&model.graph)[g];
    let graph_node = model.graph.node(&group.consumer).unwrap();
    let cut::graph::Op::Linear(consumer) = &graph_node.op else {
        panic!()
    };
    let mut p: Params = params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_kind(Kind::Double)))
        .collect();
    let c = removed_outputs(&model.graph, &p, group).unwrap();
    let cols = Tensor::arange_start(
        (u * group.unit_width) as i64,
        ((u + 1) * group.unit_width) as i64,
        (Kind::Int64, Device::Cpu),
    );
    let mut w = p[&consumer.weight].copy();
    let w_unit = w.index_select(1, &cols);
    let bias = &p[consumer.bias.as_ref().unwrap()] + w_unit.mv(&c.index_select(0, &cols)) * (1.0 - m);
    let _ = w.index_copy_(1, &cols, &(w_unit * m));
    p.insert(consumer.weight.clone(), w);
    p.insert(consumer.bias.clone().unwrap(), bias);
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
    use cut::prune::score::Calibration;
    use cut::prune::unit_taylor::unit_taylor;
    let (model, params) = tiny();
    let groups = encoder_groups(&model.graph);
    let calibration = Calibration {
        items: sentences(),
        batches: 3,
        batch_size: 1,
        seed: 0,
        device: Device::Cpu,
    };
    let scores = unit_taylor(&model, &params, &model.tasks, &groups, calibration, |_| {}).unwrap();
    // Losses come back in f32 (about 1e-7 of rounding each, 3e-5 over three sentences at this
    // step); a central difference's own error is O(eps^2).
    let eps = 1e-2;
    for task in ["tag", "topic"] {
        for g in [0, 1] {
            for (u, &got) in scores[task][g].iter().enumerate() {
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
