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

/// Selection by hand: two groups, heads of 100 MACs (scores 5, 1, 3, 2) and neurons of 10 MACs
/// (taken two at a time). Units go cheapest importance per MAC first until 150 MACs are removed.
#[test]
fn selection_by_hand() {
    use cut::prune::encoder::{select, EncoderGroup, UnitRules};
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
    let groups = [heads, ffn];
    let scores = vec![vec![5.0, 1.0, 3.0, 2.0], vec![0.1, 0.3, 0.1, 0.1, 0.2, 0.1]];
    let macs = [100, 10];
    let rules = UnitRules {
        min_heads: 1,
        round_to: 2,
        max_layer_ratio: 1.0,
    };
    // Per MAC: head 1 costs 1/100 = 0.01, neurons 0 and 2 together 0.2/20 = 0.01 (a tie goes to
    // the first group), then neurons 3 and 5 (0.01), then head 3 (0.02) before neurons 4 and 1
    // (0.025): 100 + 20 + 20 + 100 = 240 MACs >= 150.
    let keep = select(&groups, &scores, &macs, 150, rules).unwrap();
    assert_eq!(keep, vec![vec![0, 2], vec![1, 4]]);
    // At most 3 heads (min 1) and all 6 neurons: 360 MACs.
    let err = select(&groups, &scores, &macs, 361, rules).unwrap_err().to_string();
    assert!(err.contains("at most 360"), "{err}");
    let all = select(&groups, &scores, &macs, 360, rules).unwrap();
    assert_eq!(all, vec![vec![0], vec![]]);
}

/// A unit's score is its weights' scores summed over the tasks: with every score 1 and two tasks,
/// a head of width 2 in a model 8 wide holds 3 x (2 x 8) producer and 8 x 2 consumer entries: 128;
/// a neuron 8 + 8, twice: 32.
#[test]
fn unit_scores_by_hand() {
    use cut::prune::encoder::unit_scores;
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
    assert_eq!(s[0], vec![128.0; 4]);
    assert_eq!(s[1], vec![32.0; 6]);
}
