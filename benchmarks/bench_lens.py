"""Logit lens: what the LensTable sends, and what the lens costs against the bare unembedding.

For a 128-token prompt (demo model when installed, else a small random Llama):

- bytes the widget sends (binary buffers + the JSON part of the message) against the same
  content written as JSON text (token strings per cell, numbers as JSON numbers), as a static
  page with embedded JSON would carry it;
- the lens computation (one forward pass with hooks + :meth:`LoadedModel.readout`: chunked final
  norm, unembedding, top-k, entropy, rank) against one unembedding matmul of all layer x position
  states at once (which materialises the whole (layers * positions, vocab) logits that the lens
  avoids), against the forward pass plus that matmul, and against the naive lens a user writes by
  hand (``output_hidden_states`` -> final norm -> ``lm_head`` -> ``log_softmax`` -> ``topk`` ->
  entropy, all at once).

The same comparison is repeated for a 2048-token prompt. There one (layers * positions, vocab)
float32 tensor is 12.5 GB on the demo model, so the matmul and the naive lens go one layer at a
time (2048 rows each, their best case short of the impossible all-at-once).

Timings are interleaved (each round runs every contender once) and the best of several rounds
is kept. Prints ratios measured in one run; never a timed test. Usage:
``python benchmarks/bench_lens.py [N_TOKENS ...]`` (default 128 2048).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from _common import bench_model

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


def naive_lens(lm, enc, k: int, *, per_layer: bool = False):
    """The lens a user writes by hand: hidden states -> final norm -> lm_head -> log_softmax -> top-k,
    entropy; all states at once (``per_layer``: one layer at a time)."""
    norm, head = lm.adapter.final_norm, lm.adapter.unembed_module
    with torch.inference_mode():
        hs = lm.model(**enc, output_hidden_states=True).hidden_states
        groups = [torch.stack(hs)] if not per_layer else [h[None] for h in hs]
        out = []
        for x in groups:
            lp = torch.log_softmax(head(norm(x)).float(), -1)
            top = lp.topk(k, -1)
            ent = -(lp.exp() * lp).sum(-1)
            out.append((top.values.exp(), top.indices, ent))
            del lp
        return out


def time_lens(lm, n_tokens: int, k: int = 5, repeat: int = 3) -> dict:
    """Lens, naive lens, forward pass and unembedding matmul at one prompt length, interleaved."""
    import mri_widgets as mw

    prompt = prompt_of(lm, n_tokens)
    enc = lm.encode(prompt)
    n = int(enc["input_ids"].shape[1])
    states = lm.capture([prompt], sites=["resid"], progress=False)["resid"][0].reshape(-1, lm.d_model)
    W = lm.W_U.detach()
    rows = states.shape[0]
    per_layer = rows * lm.vocab_size * 4 > 2**31  # over 2 GB of logits: one layer at a time

    def matmul():
        with torch.inference_mode():
            if not per_layer:
                return states.to(W.dtype) @ W.T
            for s in range(0, rows, n):
                states[s:s + n].to(W.dtype) @ W.T

    def forward():
        with torch.inference_mode():
            lm.model(**enc)

    fns = {
        "lens": lambda: mw.logit_lens(lm, prompt, k, progress=False),
        "naive": lambda: naive_lens(lm, enc, k, per_layer=per_layer),
        "matmul": matmul,
        "forward": forward,
    }
    best = {name: float("inf") for name in fns}
    if rows * lm.vocab_size * 4 <= 2**31:  # warm up (long prompts: the short one warmed up already)
        for fn in fns.values():
            fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    t_lens, t_mm, t_fwd, t_naive = best["lens"], best["matmul"], best["forward"], best["naive"]
    return {
        "tokens": n, "rows": rows, "per_layer_baselines": per_layer, "repeat": repeat,
        "lens_s": t_lens, "naive_lens_s": t_naive, "unembed_matmul_s": t_mm, "forward_s": t_fwd,
        "lens_over_naive": t_lens / t_naive, "lens_over_forward_plus_matmul": t_lens / (t_fwd + t_mm),
        "lens_over_matmul": t_lens / t_mm, "lens_over_forward": t_lens / t_fwd,
        "lens_minus_forward_over_matmul": (t_lens - t_fwd) / t_mm,
    }


def main(n_tokens=(128, 2048), k: int = 5, repeat: int = 3) -> dict:
    import mri_widgets as mw

    lm = bench_model()
    sizes = [int(t) for t in n_tokens]
    if lm.max_positions:
        sizes = [t for t in sizes if t <= lm.max_positions]
    prompt = prompt_of(lm, sizes[0])
    n = len(lm.encode(prompt)["input_ids"][0])

    # ---- bytes -----------------------------------------------------------------------------
    w = mw.LensTable(lm, prompt, k=k)
    sent = widget_bytes(w)
    total = sent["json"] + sent["buffers"]
    full = as_json_text(w.result)
    short = as_json_text(w.result, digits=4)
    out = {
        "model": lm.name, "tokens": n, "layers": lm.n_layers + 1, "k": k, "threads": torch.get_num_threads(),
        "sent_json_bytes": sent["json"], "sent_buffer_bytes": sent["buffers"], "sent_total_bytes": total,
        "json_text_bytes": full, "json_text_4digits_bytes": short,
        "json_text_over_sent": full / total, "json_4digits_over_sent": short / total,
    }
    print(f"[lens] {lm.name}: {lm.n_layers + 1} layers, k={k}, {torch.get_num_threads()} torch threads")
    print(f"[lens] widget sends {total / 1024:.1f} KiB ({sent['buffers'] / 1024:.1f} KiB binary + "
          f"{sent['json'] / 1024:.1f} KiB JSON) for {n} tokens; as JSON text {full / 1024:.1f} KiB "
          f"({out['json_text_over_sent']:.1f}x), rounded to 4 digits {short / 1024:.1f} KiB "
          f"({out['json_4digits_over_sent']:.1f}x)")

    # ---- time ------------------------------------------------------------------------------
    for t in sizes:
        r = time_lens(lm, t, k, repeat=repeat if t <= 512 else max(1, repeat - 1))
        out[f"time_{t}"] = r
        how = "one layer at a time" if r["per_layer_baselines"] else "all states at once"
        print(f"[lens] {r['tokens']} tokens ({r['rows']} rows; baselines {how}, best of {r['repeat']}): "
              f"lens {r['lens_s']:.3f}s = {r['lens_over_naive']:.2f}x the naive lens ({r['naive_lens_s']:.3f}s), "
              f"{r['lens_over_forward_plus_matmul']:.2f}x forward + unembedding matmul "
              f"({r['forward_s']:.3f}s + {r['unembed_matmul_s']:.3f}s), {r['lens_over_matmul']:.2f}x the matmul alone; "
              f"without the forward pass {r['lens_minus_forward_over_matmul']:.2f}x the matmul")
    first = out[f"time_{sizes[0]}"]
    # the figures this benchmark reported before (short prompt), kept under their old names
    out.update(lens_s=first["lens_s"], unembed_matmul_s=first["unembed_matmul_s"], forward_s=first["forward_s"],
               lens_over_matmul=first["lens_over_matmul"], lens_over_forward=first["lens_over_forward"],
               lens_minus_forward_over_matmul=first["lens_minus_forward_over_matmul"])
    return out


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or (128, 2048))
