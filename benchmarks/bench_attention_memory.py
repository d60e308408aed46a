"""Attention memory: peak memory of the head analyses on long texts, before vs after streaming.

Each measurement runs in a fresh subprocess that loads the model, then samples its resident set
size (RSS, every 2 ms) while one call runs; the figure is the peak RSS minus the RSS before the
call. ``before`` is the eager path the head analyses used until now (the model's own attention
probabilities of every layer at once, ``output_attentions``); ``after`` recomputes them from the
captured queries and keys a block of query rows at a time.

* ``head_distances``: one text of N tokens.
* ``HeadMap.pattern``: the pattern of one head on one text of N tokens (``before``: the capture
  of all layers' attention that HeadMap cached; ``after``: the overview plus one zoomed tile).

``before`` runs are skipped (reported as the estimate) when the eager capture's own pre-check says
they would not fit. Usage: ``python benchmarks/bench_attention_memory.py [1000 2000 4000]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, os, sys, threading, time
sys.path.insert(0, {here!r})
import psutil, torch
from _common import bench_model
import mri_widgets as mw
from mri_widgets.models import attention as A
from mri_widgets.models.adapters import AdapterError

torch.set_num_threads(max(1, os.cpu_count() or 1))
kind, how, n = {kind!r}, {how!r}, {n}
lm = bench_model()
words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing "
         "matches in the old town hall ").split()
text = " ".join(words[i % len(words)] + str(i % 7) for i in range(n * 2))
ids = lm.tokenizer(text)["input_ids"][:n]
text = lm.tokenizer.decode(ids)
if how == "before":
    import mri_widgets.models.attention as AM
    def no_rules(adapter):
        raise AdapterError("benchmark: the eager path")
    AM.attention_rules = no_rules
proc = psutil.Process()
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
mw.head_stats(lm, ["warm up"], max_length=8)
base = proc.memory_info().rss
th = threading.Thread(target=sample, daemon=True); th.start()
t0 = time.perf_counter()
err = None
try:
    if kind == "head_distances":
        mw.head_distances(lm, [text], max_length=n)
    else:
        from mri_widgets.widgets.head_map import HeadMap
        w = HeadMap.__new__(HeadMap)
        HeadMap._init_pattern_only(w, lm, [text], max_length=n)
        p = w.pattern(lm.n_layers // 2, 0)
        if how == "after":
            w.pattern_tile(lm.n_layers // 2, 0, n // 2, n // 2 + 64, n // 2 - 64, n // 2)
except A.AttentionMemoryError as e:
    err = str(e)
dt = time.perf_counter() - t0
stop.set(); th.join()
print(json.dumps({{"peak": max(0, peak[0] - base), "seconds": dt, "error": err}}))
"""


def run_one(kind: str, how: str, n: int) -> dict:
    code = CHILD.format(here=str(HERE), kind=kind, how=how, n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"peak": None, "seconds": None, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(b):
    return "-" if b is None else f"{b / 2 ** 30:.2f} GiB"


def main(lengths=(1000, 2000, 4000)) -> dict:
    from _common import bench_model
    from mri_widgets.models.attention import fmt_bytes
    from mri_widgets.models.capture import _attention_estimate, normalise_layers

    lm = bench_model()
    sel = normalise_layers(lm.adapter, ["attn"], None)
    results = {}
    print(f"[attention memory] {lm.name}: {lm.n_layers} layers x {lm.n_heads} heads; peak RSS above the "
          "loaded model, one text of N tokens")
    for kind in ("head_distances", "HeadMap.pattern"):
        for n in lengths:
            row = {}
            for how in ("before", "after"):
                r = run_one(kind, how, n)
                row[how] = r
            est = _attention_estimate(lm.adapter, ["attn"], sel, [n], None, None, True)(n)
            b, a = row["before"], row["after"]
            before = _gib(b["peak"]) if not b["error"] else f"refused (est. {fmt_bytes(sum(est.values()))})"
            after = _gib(a["peak"]) if not a["error"] else f"refused: {a['error'][:80]}"
            tb = "" if b["seconds"] is None or b["error"] else f" in {b['seconds']:.1f}s"
            ta = "" if a["seconds"] is None or a["error"] else f" in {a['seconds']:.1f}s"
            print(f"  {kind:16s} N={n:5d}: before {before}{tb}; after {after}{ta}")
            results[f"{kind}/{n}"] = row
    return results


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [1000, 2000, 4000]
    main(tuple(args))
