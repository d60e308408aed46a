"""Attention memory: peak memory of the head analyses on long texts, before vs after streaming.

Each measurement runs in a fresh subprocess that loads the model, then samples its resident set
size (RSS, every 2 ms) while one call runs; the figure is the peak RSS minus the RSS before the
call. ``before`` is the eager path the head analyses used until now (the model's own attention
probabilities of every layer at once, ``output_attentions``); ``after`` recomputes them from the
captured queries and keys a block of query rows at a time.

* ``head_distances``: one text of N tokens, stopped after :data:`STOP_AFTER` calls of the
  divergence kernel (the peak comes before: the capture and the first blocks; the rest of the
  reduction repeats the same working set). "stopped" marks such runs.
* ``HeadMap.pattern``: the pattern of one head on one text of N tokens (``before``: the capture
  of all layers' attention that HeadMap cached per example; ``after``: the overview plus one
  zoomed tile).

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
import mri_widgets.analysis.heads as heads
from mri_widgets.models import attention as A
from mri_widgets.models.adapters import AdapterError

kind, how, n, stop_after = {kind!r}, {how!r}, {n}, {stop_after}
lm = bench_model()
words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing "
         "matches in the old town hall ").split()
text = " ".join(words[i % len(words)] + str(i % 7) for i in range(n * 2))
ids = lm.tokenizer(text)["input_ids"][:n]
text = lm.tokenizer.decode(ids)

class Enough(Exception):
    pass

if how == "before":
    def no_rules(adapter):
        raise AdapterError("benchmark: the eager path")
    A.attention_rules = no_rules
calls = [0]
xlogx = heads._xlogx
def counted(x):
    calls[0] += 1
    if stop_after and calls[0] > stop_after:
        raise Enough
    return xlogx(x)
proc = psutil.Process()
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
from mri_widgets.widgets.head_map import HeadMap
w = HeadMap(lm, ["A short warm-up text."]) if kind == "HeadMap.pattern" else None
heads.head_stats(lm, ["warm up"], max_length=8)
heads._xlogx = counted
base = proc.memory_info().rss
th = threading.Thread(target=sample, daemon=True); th.start()
t0 = time.perf_counter()
err, stopped = None, False
try:
    if kind == "head_distances":
        mw.head_distances(lm, [text], max_length=n)
    elif how == "before":  # what HeadMap kept per example: the capture of every layer's attention
        lm.capture([text], ("attn",), max_length=n, progress=False)
    else:
        w._texts.append(text)
        w._max_length = n
        p = w.pattern(lm.n_layers // 2, 0, example=1)
        w.pattern_tile(lm.n_layers // 2, 0, n // 2, n // 2 + 64, n // 2 - 64, n // 2, example=1)
except A.AttentionMemoryError as e:
    err = str(e)
except Enough:
    stopped = True
dt = time.perf_counter() - t0
stop.set(); th.join()
print(json.dumps({{"peak": max(0, peak[0] - base), "seconds": dt, "error": err, "stopped": stopped}}))
"""


#: ``head_distances`` runs stop after this many calls of the divergence kernel's x log x: the
#: peak is reached by then (the capture, then the setup and first head chunks of the first block
#: (after) or of the whole text (before)), while the full reduction costs
#: (layers x heads)^2 x seq^2 / 2 operations (tens of minutes on two CPU cores at 1k tokens).
#: 0 runs to the end.
STOP_AFTER = 3


def run_one(kind: str, how: str, n: int, stop_after: int = STOP_AFTER) -> dict:
    code = CHILD.format(here=str(HERE), kind=kind, how=how, n=n, stop_after=stop_after)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"peak": None, "seconds": None, "error": None,
                "failed": (out.stderr.strip().splitlines() or ["failed"])[-1]}
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
            def label(r, refused):
                if r.get("failed"):
                    return f"failed: {r['failed'][:100]}"
                return refused if r["error"] else _gib(r["peak"])
            before = label(b, f"refused before running (est. {fmt_bytes(sum(est.values()))})")
            after = label(a, "refused before running")
            tb = "" if b["seconds"] is None or b["error"] else f" ({b['seconds']:.1f}s{', stopped' if b.get('stopped') else ''})"
            ta = "" if a["seconds"] is None or a["error"] else f" ({a['seconds']:.1f}s{', stopped' if a.get('stopped') else ''})"
            print(f"  {kind:16s} N={n:5d}: before {before}{tb}; after {after}{ta}")
            results[f"{kind}/{n}"] = row
    return results


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [1000, 2000, 4000]
    main(tuple(args))
