"""Capture overhead: hooked capture (materialised and streamed) against plain forward passes.

Prints ratios measured in one run; the target is a capture of the residual stream costing at
most ~1.3x the plain forward passes over the same batches.

``long``: texts of 256 tokens (the size researchers scan), capture of ``resid`` + ``mlp``
(materialised, default token-budget batching) against what a user would write instead on the same
texts: transformers' ``output_hidden_states=True`` (which gives the residual stream only) and a
hand-written hook loop (forward hooks on the blocks, pre-hooks on the MLP output projections,
stacked), each over the same texts in batches of the same size. Interleaved, best of 3.
Usage: ``python benchmarks/bench_capture.py [short|long|both]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import bench_model, best_of, corpus


def main(n_texts: int = 32, batch_size: int = 8) -> dict:
    lm = bench_model()
    texts = corpus(n_texts)
    tok = lm.tokenizer
    batches = [tok(texts[i:i + batch_size], padding=True, return_tensors="pt", padding_side="right")
               for i in range(0, len(texts), batch_size)]

    def forward():
        with torch.inference_mode():
            for enc in batches:
                lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    def capture_resid():
        lm.capture(texts, sites=["resid"], batch_size=batch_size, progress=False)

    def stream_mlp():
        sums = []
        lm.capture(texts, sites=["mlp"], batch_size=batch_size, progress=False,
                   reducer=lambda b: sums.append(b.acts["mlp"].sum((0, 2))))

    t_fwd = best_of(forward)
    t_res = best_of(capture_resid)
    t_mlp = best_of(stream_mlp)
    out = {"model": lm.name, "n_texts": n_texts, "forward_s": t_fwd,
           "capture_resid_ratio": t_res / t_fwd, "stream_mlp_ratio": t_mlp / t_fwd}
    print(f"[capture] {lm.name}: {n_texts} texts, forward {t_fwd:.3f}s; "
          f"materialised resid capture {out['capture_resid_ratio']:.2f}x forward; "
          f"streamed mlp reducer {out['stream_mlp_ratio']:.2f}x forward")
    return out


def main_long(n_texts: int = 12, n_tokens: int = 256, repeat: int = 3) -> dict:
    from bench_neuron_scan import _interleaved, long_texts

    lm = bench_model()
    tok = lm.tokenizer
    texts = long_texts(tok, n_texts, n_tokens)
    cap = lm.capture(texts[:1], sites=["resid"], max_length=n_tokens, progress=False)  # warm
    del cap
    bs = 3
    batches = [tok(texts[i:i + bs], padding=True, truncation=True, max_length=n_tokens, return_tensors="pt",
                   padding_side="right") for i in range(0, len(texts), bs)]
    blocks = lm.adapter.blocks
    downs = [lm.adapter.part(l, "mlp_out") for l in range(lm.n_layers)]

    def hidden_states():
        out = []
        with torch.inference_mode():
            for enc in batches:
                hs = lm.model(**enc, output_hidden_states=True).hidden_states
                out.append(torch.stack(hs, 1).float().cpu())
        return out

    def hand_hooks():
        out = []
        with torch.inference_mode():
            for enc in batches:
                got_r, got_m = [], []
                hs = [b.register_forward_hook(lambda m, i, o, r=got_r: r.append(o[0] if isinstance(o, tuple) else o))
                      for b in blocks]
                hs += [d.register_forward_pre_hook(lambda m, a, g=got_m: g.append(a[0])) for d in downs]
                try:
                    lm.model(**enc)
                finally:
                    for h in hs:
                        h.remove()
                out.append((torch.stack(got_r, 1).float().cpu(), torch.stack(got_m, 1).float().cpu()))
        return out

    def capture():
        return lm.capture(texts, sites=["resid", "mlp"], max_length=n_tokens, progress=False)

    def forward():
        with torch.inference_mode():
            for enc in batches:
                lm.model(**enc)

    best = _interleaved({"forward": forward, "hidden_states": hidden_states, "hand_hooks": hand_hooks,
                         "capture": capture}, lambda: None, repeat, warmup=False)
    out = {"model": lm.name, "n_texts": n_texts, "n_tokens": n_tokens, **{f"{k}_s": v for k, v in best.items()},
           "capture_vs_forward": best["capture"] / best["forward"],
           "capture_vs_hidden_states": best["capture"] / best["hidden_states"],
           "capture_vs_hand_hooks": best["capture"] / best["hand_hooks"]}
    print(f"[capture long] {lm.name}: {n_texts} texts x {n_tokens} tokens, resid + mlp of all layers: capture "
          f"{best['capture']:.2f}s = {out['capture_vs_forward']:.2f}x forward ({best['forward']:.2f}s), "
          f"{out['capture_vs_hidden_states']:.2f}x output_hidden_states (resid only, {best['hidden_states']:.2f}s), "
          f"{out['capture_vs_hand_hooks']:.2f}x a hand-written hook loop ({best['hand_hooks']:.2f}s)")
    return out


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    if which in ("short", "both"):
        main()
    if which in ("long", "both"):
        main_long()
