"""ActivationAreas over the emotions corpus (440 short sentences): batching by a token budget
(the default) against one padded batch of the whole corpus (what the original LLM-MRI code does)
and against fixed batches of 8 texts (the former default).

Prints the times and their ratios to the one-batch run, measured in one run: interleaved, best
of ``repeat``. Target: the default no slower than one padded batch, with memory bounded for a
corpus of any size (the padded tokens computed are printed too).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, when not installed

from _common import bench_model


def main(repeat: int = 3, repeat_batch_8: int = 1) -> dict:
    """Times of the three batchings, interleaved, best of ``repeat`` (``repeat_batch_8`` for the
    slow batches of 8, which the others beat by far on a CPU)."""
    from mri_widgets import ActivationAreas
    from mri_widgets.datasets import emotions
    from mri_widgets.models import capture as C

    lm = bench_model()
    corpus = emotions()
    n = len(corpus)
    lengths = [len(ids) for ids in lm.tokenizer(corpus.texts)["input_ids"]]
    per_tok, per_pair = C._token_bytes(lm.adapter, ["resid"], C.normalise_layers(lm.adapter, ["resid"], None))
    plan = C.plan_batches(lengths, bytes_per_token=per_tok, bytes_per_pair=per_pair)
    padded = {"default": sum(len(b) * max(lengths[i] for i in b) for b in plan), "one_batch": n * max(lengths),
              "batch_8": sum(len(b) * max(lengths[i] for i in b) for b in C.plan_batches(lengths, batch_size=8))}
    runs = {"default": dict(), "one_batch": dict(batch_size=n), "batch_8": dict(batch_size=8)}
    best = {k: float("inf") for k in runs}
    for r in range(repeat):  # interleaved, best of repeat (the first round warms up)
        for name, kw in runs.items():
            if name == "batch_8" and r >= repeat_batch_8:
                continue
            t = time.perf_counter()
            ActivationAreas(lm, corpus, progress=False, **kw)
            best[name] = min(best[name], time.perf_counter() - t)
    out = {"model": lm.name, "n_texts": n, "n_tokens": sum(lengths), "default_batches": [len(b) for b in plan],
           "padded_tokens": padded, **{f"{k}_s": v for k, v in best.items()},
           "default_vs_one_batch": best["default"] / best["one_batch"],
           "batch_8_vs_one_batch": best["batch_8"] / best["one_batch"]}
    print(f"[areas] {lm.name}: ActivationAreas over {n} emotion sentences ({sum(lengths)} tokens); "
          f"default (batches {out['default_batches']}, {padded['default']} padded tokens) {best['default']:.2f}s = "
          f"{out['default_vs_one_batch']:.2f}x one padded batch ({padded['one_batch']} tokens, "
          f"{best['one_batch']:.2f}s; target <= 1x); batch_size=8 ({padded['batch_8']} tokens) "
          f"{best['batch_8']:.2f}s = {out['batch_8_vs_one_batch']:.2f}x")
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
