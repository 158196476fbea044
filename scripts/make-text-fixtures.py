#!/usr/bin/env python3
"""Writes the text-encoder test fixtures: a tiny random BERT and a tiny random RoBERTa with task
heads, saved as Hugging Face folders (model.safetensors, config.json, tokenizer.json,
labels.json), and the logits Hugging Face's PyTorch implementation computes for a few sentences
(expected.json), which tests/text.rs compares cut's against.

Needs torch, transformers and tokenizers (pip install torch transformers); run from the repository
root: python3 scripts/make-text-fixtures.py. The outputs are small (under 300 KB) and committed.
"""
import json, os, shutil
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers, decoders
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

OUT = "tests/fixtures/text"
SENTENCES = [
    "The jury said the election was conducted fairly .".split(),
    "Did the committee approve the new budget ?".split(),
    "Rain fell on the quiet town all night .".split(),
    "She reads".split(),
    "Why would anyone build a bridge across that river ?".split(),
    "The old bridge was closed for repairs last week .".split(),
]
# Labels (fixtures: made up here, only their counts matter to the parity test).
POS = ["DET", "NOUN", "VERB", "ADJ", "ADP", "ADV", "PRON", "PUNCT", "OTHER"]
MOOD = ["statement", "question"]
TOPIC = ["civic", "weather", "people", "building"]


def bert_tokenizer(path):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([" ".join(s) for s in SENTENCES], trainers.WordPieceTrainer(vocab_size=90, special_tokens=special))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    tok.save(path)
    return tok


def roberta_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(s) for s in SENTENCES], trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.save(path)
    return tok


def write(name, prefix, model, config, tok, two_layer_sequence):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    torch.manual_seed(1)
    hidden = config.hidden_size
    heads = {
        "pos": torch.nn.Linear(hidden, len(POS)),
        "topic": torch.nn.Linear(hidden, len(TOPIC)),
    }
    if two_layer_sequence:
        heads["mood"] = torch.nn.ModuleDict({"dense": torch.nn.Linear(hidden, hidden), "out_proj": torch.nn.Linear(hidden, len(MOOD))})
    else:
        heads["mood"] = torch.nn.Linear(hidden, len(MOOD))
    tensors = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    for task, head in heads.items():
        for k, v in head.state_dict().items():
            tensors[f"heads.{task}.{k}"] = v.contiguous()
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    config.to_json_file(os.path.join(folder, "config.json"))
    shutil.copy(tok_path(name), os.path.join(folder, "tokenizer.json"))
    json.dump({"pos": POS, "mood": MOOD, "topic": TOPIC}, open(os.path.join(folder, "labels.json"), "w"), indent=1)

    pad = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else tok.token_to_id("<pad>")
    encodings = [tok.encode(s, is_pretokenized=True) for s in SENTENCES]
    length = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (length - len(e.ids)) for e in encodings])
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
        last = out.last_hidden_state
        pos = heads["pos"](last)
        mean = (last * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        topic = heads["topic"](mean)
        if two_layer_sequence:
            mood = heads["mood"]["out_proj"](torch.tanh(heads["mood"]["dense"](last[:, 0])))
        else:
            mood = heads["mood"](out.pooler_output)
    expected = {
        "kinds": "pos:token,mood:sequence,topic:sequence-mean",
        "sentences": [
            {
                "tokens": s,
                "ids": e.ids,
                "pos": pos[i, : len(e.ids)].tolist(),
                "mood": mood[i].tolist(),
                "topic": topic[i].tolist(),
            }
            for i, (s, e) in enumerate(zip(SENTENCES, encodings))
        ],
    }
    json.dump(expected, open(os.path.join(folder, "expected.json"), "w"))


def tok_path(name):
    return os.path.join(OUT, f"{name}-tokenizer.json")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    bt = bert_tokenizer(tok_path("bert"))
    bc = BertConfig(vocab_size=bt.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")
    write("bert", "bert.", BertModel(bc, add_pooling_layer=True), bc, bt, False)
    rt = roberta_tokenizer(tok_path("roberta"))
    rc = RobertaConfig(vocab_size=rt.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                       bos_token_id=0, eos_token_id=2, hidden_act="gelu_new")
    write("roberta", "roberta.", RobertaModel(rc, add_pooling_layer=False), rc, rt, True)
    for name in ["bert", "roberta"]:
        os.remove(tok_path(name))
    # The sentences as a text dataset (labels made up for the fixture).
    data = os.path.join(OUT, "data")
    os.makedirs(data, exist_ok=True)
    rows = []
    for i, s in enumerate(SENTENCES):
        rows.append({"tokens": s, "pos": [POS[(len(w) + i) % len(POS)] for w in s], "mood": MOOD[int(s[-1] == "?")], "topic": TOPIC[i % len(TOPIC)]})
    for split, part in [("train", rows[:4]), ("test", rows[4:])]:
        with open(os.path.join(data, f"{split}.jsonl"), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
