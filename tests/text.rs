//! BERT-family encoders read from Hugging Face folders: the logits equal those of Hugging Face's
//! PyTorch implementation (tests/fixtures/text/*/expected.json, written by
//! scripts/make-text-fixtures.py), through cut's own tokenization of the same words.

use cut::checkpoint::{Checkpoint, LoadOptions};
use cut::data::text::load_tokenizer;
use cut::graph::interpreter::{forward_inputs, Inputs, Mode};
use cut::graph::TaskKind;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn opts() -> LoadOptions {
    LoadOptions {
        task_names: Some(vec!["pos".into(), "mood".into(), "topic".into()]),
        task_kinds: Some(vec![TaskKind::Token, TaskKind::Sequence, TaskKind::SequenceMean]),
        ..Default::default()
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| out.extend(floats(i))),
        n => out.push(n.as_f64().unwrap() as f32),
    }
    out
}

/// Runs one fixture: tokenization equals the Python tokenizer's ids, and every head's logits equal
/// Hugging Face's within 1e-4, for sentences batched with padding.
fn matches_hugging_face(name: &str) {
    let folder = Path::new("tests/fixtures/text").join(name);
    let ckpt = Checkpoint::open(&folder).unwrap();
    let loaded = ckpt.model(&opts()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let model = loaded.model;
    assert_eq!(model.graph.family.as_deref(), Some("bert"));
    let params = ckpt.load_params(&model, Device::Cpu).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("expected.json")).unwrap()).unwrap();
    let sentences = expected["sentences"].as_array().unwrap();
    let tokenizer = load_tokenizer(&folder.join("tokenizer.json")).unwrap();
    let pad = tokenizer
        .token_to_id("[PAD]")
        .or(tokenizer.token_to_id("<pad>"))
        .unwrap() as i64;
    let mut ids = Vec::new();
    for s in sentences {
        let words: Vec<&str> = s["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let enc = tokenizer.encode(words, true).unwrap();
        let want: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.get_ids(), want.as_slice(), "{name}: token ids of {:?}", s["tokens"]);
        ids.push(enc.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>());
    }
    let len = ids.iter().map(Vec::len).max().unwrap();
    let n = ids.len() as i64;
    let padded: Vec<i64> = ids
        .iter()
        .flat_map(|v| v.iter().copied().chain(std::iter::repeat_n(pad, len - v.len())))
        .collect();
    let mask: Vec<i64> = ids
        .iter()
        .flat_map(|v| (0..len).map(move |i| i64::from(i < v.len())))
        .collect();
    let inputs = Inputs::from([
        (
            "input_ids".to_string(),
            Tensor::from_slice(&padded).view([n, len as i64]),
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_slice(&mask).view([n, len as i64]),
        ),
    ]);
    let out =
        tch::no_grad(|| forward_inputs(&model.graph, &params, &inputs, &["pos", "mood", "topic"], Mode::Eval)).unwrap();
    let mut worst: f32 = 0.0;
    for (i, (s, real)) in sentences.iter().zip(&ids).enumerate() {
        let got = |task: &str| {
            let t = out[task].get(i as i64);
            let t = if task == "pos" {
                t.narrow(0, 0, real.len() as i64)
            } else {
                t
            };
            Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
        };
        for task in ["pos", "mood", "topic"] {
            let (a, b) = (got(task), floats(&s[task]));
            assert_eq!(a.len(), b.len(), "{name} {task}");
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    assert!(
        worst < 1e-4,
        "{name}: logits differ from Hugging Face's by up to {worst}"
    );
}

#[test]
fn bert_logits_equal_hugging_face() {
    matches_hugging_face("bert");
}

#[test]
fn roberta_logits_equal_hugging_face() {
    matches_hugging_face("roberta");
}
