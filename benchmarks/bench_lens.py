"""Logit lens: what the LensTable sends, and what the lens costs against the bare unembedding.

For a 128-token prompt (demo model when installed, else a small random Llama):

- bytes the widget sends (binary buffers + the JSON part of the message) against the same
  content written as JSON text (token strings per cell, numbers as JSON numbers), as a static
  page with embedded JSON would carry it;
- the lens computation (one forward pass with hooks + chunked final norm, unembedding, softmax
  statistics) against one unembedding matmul of all layer x position states at once (which
  materialises the whole (layers * positions, vocab) logits that the lens avoids).

Prints ratios measured in one run; never a timed test.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from _common import bench_model, best_of

TEXT = ("The logit lens reads the residual stream of a transformer after every block through the final "
        "norm and the unembedding, so one can watch the next-token guess form layer by layer. ")


def prompt_of(lm, n_tokens: int = 128) -> str:
    """A prompt of exactly ``n_tokens`` tokens (with the tokenizer's special tokens)."""
    text = TEXT * (1 + n_tokens // 10)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    special = len(lm.tokenizer("a")["input_ids"]) - len(lm.tokenizer("a", add_special_tokens=False)["input_ids"])
    for cut in range(n_tokens - special, 0, -1):
        p = lm.tokenizer.decode(ids[:cut])
        if len(lm.encode(p)["input_ids"][0]) <= n_tokens:
            return p
    raise RuntimeError("cannot build the prompt")


def widget_bytes(widget) -> dict:
    """Bytes of the widget's data message: its JSON part and its binary buffers."""
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers(widget.get_state(["data"]))
    js = len(json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode())
    return {"json": js, "buffers": int(sum(b.nbytes for b in buffers))}


def as_json_text(res, digits=None) -> int:
    """The same content as one JSON document: strings per cell, numbers as JSON numbers."""
    def num(a):
        a = np.asarray(a)
        return (np.round(a.astype(np.float64), digits) if digits is not None else a.astype(np.float64)).tolist()

    doc = {
        "tokens": res.tokens, "layer_names": res.layer_names,
        "top_tokens": res.top_tokens.tolist(), "top_probs": num(res.top_probs),
        "entropy": num(res.entropy), "target_tokens": res.target_tokens,
        "target_probs": num(res.target_probs), "target_ranks": res.target_ranks.tolist(),
        "best_layer": res.best_layer.tolist(),
    }
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def main(n_tokens: int = 128, k: int = 5) -> dict:
    import mri_widgets as mw

    lm = bench_model()
    prompt = prompt_of(lm, n_tokens)
    n = len(lm.encode(prompt)["input_ids"][0])

    # ---- bytes -----------------------------------------------------------------------------
    w = mw.LensTable(lm, prompt, k=k)
    sent = widget_bytes(w)
    total = sent["json"] + sent["buffers"]
    full = as_json_text(w.result)
    short = as_json_text(w.result, digits=4)

    # ---- time ------------------------------------------------------------------------------
    t_lens = best_of(lambda: mw.logit_lens(lm, prompt, k, progress=False), repeat=2)
    cap = lm.capture([prompt], sites=["resid"], progress=False)
    states = cap["resid"][0].reshape(-1, lm.d_model).to(lm.device)
    W = lm.W_U.detach()

    def matmul():
        with torch.inference_mode():
            return states.to(W.dtype) @ W.T

    t_mm = best_of(matmul, repeat=2)

    def forward():
        with torch.inference_mode():
            lm.model(**lm.encode(prompt))

    t_fwd = best_of(forward)
    out = {
        "model": lm.name, "tokens": n, "layers": lm.n_layers + 1, "k": k,
        "sent_json_bytes": sent["json"], "sent_buffer_bytes": sent["buffers"], "sent_total_bytes": total,
        "json_text_bytes": full, "json_text_4digits_bytes": short,
        "json_text_over_sent": full / total, "json_4digits_over_sent": short / total,
        "lens_s": t_lens, "unembed_matmul_s": t_mm, "forward_s": t_fwd,
        "lens_over_matmul": t_lens / t_mm, "lens_over_forward": t_lens / t_fwd,
        "lens_minus_forward_over_matmul": (t_lens - t_fwd) / t_mm,
    }
    print(f"[lens] {lm.name}: {n} tokens x {lm.n_layers + 1} layers, k={k}")
    print(f"[lens] widget sends {total / 1024:.1f} KiB ({sent['buffers'] / 1024:.1f} KiB binary + "
          f"{sent['json'] / 1024:.1f} KiB JSON); as JSON text {full / 1024:.1f} KiB "
          f"({out['json_text_over_sent']:.1f}x), rounded to 4 digits {short / 1024:.1f} KiB "
          f"({out['json_4digits_over_sent']:.1f}x)")
    print(f"[lens] lens {t_lens:.3f}s = {out['lens_over_matmul']:.2f}x one unembedding matmul of all states "
          f"({t_mm:.3f}s), {out['lens_over_forward']:.1f}x a plain forward pass; without the forward pass "
          f"{out['lens_minus_forward_over_matmul']:.2f}x the matmul")
    return out


if __name__ == "__main__":
    main()
