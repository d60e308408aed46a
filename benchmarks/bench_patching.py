"""Activation patching: seconds per patched table row against one forward pass, and against the loop
a user writes by hand (one hooked forward pass per (layer, position) entry).

``mw.patching`` batches the patched runs: a row of the table (one layer, every position) is one
forward pass over ``P`` copies of the corrupted prompt. Measured on the demo model for the
subject-attribute prompt of the interventions notebook (9 tokens, 31 x 9 entries) and for a
longer prompt (~40 tokens), site ``resid``; interleaved, best of 3.
Usage: ``python benchmarks/bench_patching.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import bench_model, best_of

PAIRS = {
    "short": ("The Eiffel Tower is in the city of", "The Colosseum is in the city of", " Paris", " Rome"),
    "long": ("After a long week of meetings in Germany, the tired engineer finally flew home to her family. "
             "The Eiffel Tower is in the city of",
             "After a long week of meetings in Germany, the tired engineer finally flew home to her family. "
             "The Colosseum is in the city of", " Paris", " Rome"),
}


def _hand_loop(lm, clean, corrupt, layers, positions):
    """What a user writes: capture the clean residual stream, then one hooked forward per entry."""
    ids_c = lm.tokenizer(clean, return_tensors="pt")["input_ids"]
    ids_x = lm.tokenizer(corrupt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hs = lm.model(input_ids=ids_c, output_hidden_states=True).hidden_states
        out = []
        for l in layers:
            for p in positions:
                def hook(m, args, o, l=l, p=p):
                    x = (o[0] if isinstance(o, tuple) else o).clone()
                    x[:, p] = hs[l][:, p]
                    return (x,) + tuple(o[1:]) if isinstance(o, tuple) else x
                h = lm.adapter.blocks[l - 1].register_forward_hook(hook)
                try:
                    out.append(lm.model(input_ids=ids_x).logits[0, -1])
                finally:
                    h.remove()
    return out


def _measure(lm, clean, corrupt, ans, wrong) -> dict:
    import mri_widgets as mw

    ids = lm.tokenizer(corrupt, return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    layers = [1, lm.n_layers // 2, lm.n_layers]  # the hand loop on 3 rows: its cost per row extrapolates

    def forward():
        with torch.inference_mode():
            lm.model(input_ids=ids)

    def patch():
        mw.patching(lm, clean, corrupt, answer=ans, wrong=wrong, progress=False)

    def hand():
        _hand_loop(lm, clean, corrupt, layers, range(n))

    t_f, t_p, t_h = [], [], []
    for _ in range(3):  # interleaved
        t_f.append(best_of(forward, repeat=3))
        t_p.append(best_of(patch, repeat=1))
        t_h.append(best_of(hand, repeat=1))
    t_f, t_p, t_h = min(t_f), min(t_p), min(t_h)
    rows = lm.n_layers + 1
    per_row, hand_per_row = t_p / rows, t_h / len(layers)
    per_run = t_p / (rows * n)
    return {"tokens": n, "rows": rows, "entries": rows * n, "forward_s": t_f, "patching_s": t_p,
            "seconds_per_row": per_row, "row_over_forward": per_row / t_f, "patched_run_over_forward": per_run / t_f,
            "hand_loop_seconds_per_row": hand_per_row, "patching_over_hand_loop": per_row / hand_per_row}


def main() -> dict:
    lm = bench_model()
    results = {"model": lm.name}
    for name, (clean, corrupt, ans, wrong) in PAIRS.items():
        r = results[name] = _measure(lm, clean, corrupt, ans, wrong)
        print(f"patching {name} ({r['tokens']} tokens, {r['rows']} rows x {r['tokens']} positions): "
              f"{r['patching_s']:.2f} s; per row {r['seconds_per_row'] * 1e3:.0f} ms = {r['row_over_forward']:.2f}x "
              f"one forward pass ({r['forward_s'] * 1e3:.1f} ms); per patched run {r['patched_run_over_forward']:.2f}x "
              f"one forward pass; the hand-written loop takes {r['hand_loop_seconds_per_row'] * 1e3:.0f} ms per row: "
              f"patching = {r['patching_over_hand_loop']:.2f}x the hand loop")
    return results


if __name__ == "__main__":
    main()
