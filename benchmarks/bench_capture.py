"""Capture overhead: hooked capture (materialised and streamed) against plain forward passes.

Prints ratios measured in one run; the target is a capture of the residual stream costing at
most ~1.3x the plain forward passes over the same batches.
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


if __name__ == "__main__":
    main()
