"""Capture of ``resid`` + ``mlp`` against TransformerLens on the same texts (run in a separate venv).

TransformerLens pins its own versions of transformers and friends, so it is not a dependency
of mri_widgets: make a venv that sees the main environment
(``python -m venv VENV --system-site-packages``), ``VENV/bin/pip install transformer_lens==4.3.0``,
then run ``PYTHONPATH=. VENV/bin/python benchmarks/bench_vs_transformer_lens.py`` from the
repository root.

TransformerLens 4.x replaces ``HookedTransformer.from_pretrained`` by ``TransformerBridge``,
which wraps a transformers model. The bridge is built offline from the model already loaded by
``mw.load("demo")`` (SmolLM2-135M, a ``LlamaForCausalLM``):
``TransformerBridge.boot_transformers(name_or_path, hf_model=model, tokenizer=tok)`` takes its
config from the given model, so it neither downloads nor reloads weights. Two things to know:

- ``boot_transformers`` switches the given model to eager attention *in place*, so the bridge
  gets a deep copy and ``lm.model`` keeps its default (sdpa) attention;
- the bridge does not call transformers' attention: its attention component recomputes the
  scores, softmax and pattern itself (for ``hook_attn_scores`` / ``hook_pattern``), whatever
  ``attn_implementation`` says. That is part of the bridge's cost, so two baselines are timed:
  ``forward`` (the model as mri_widgets runs it, sdpa) and ``forward_eager`` (the same weights
  with transformers' eager attention).

12 texts of 256 tokens, batches of 3 texts, right-padded, the same batches for every contender:

- ``forward``: plain forward passes of ``lm.model``;
- ``capture``: ``lm.capture(texts, sites=("resid", "mlp"), batch_size=3)``, materialised
  (CPU float32 tensors (12, 31, 256, 576) and (12, 30, 256, 1536));
- ``transformer_lens``: ``bridge.run_with_cache`` per batch, keeping only the equivalent hooks
  (``names_filter``: ``blocks.0.hook_resid_pre``, every ``blocks.{i}.hook_resid_post``, every
  ``blocks.{i}.mlp.hook_post``), the caches kept as TransformerLens returns them (a dict of
  per-layer tensors per batch; not stacked into capture's layout, which would cost it a copy).

Before timing, the captured values are checked to agree (relative error per layer over real
tokens below 1e-4): ``resid`` against the stacked ``hook_resid_pre`` / ``hook_resid_post``,
``mlp`` against ``mlp.hook_post``. Interleaved, best of 3 after a warm-up; ratios measured in one
run. Never a timed test.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from bench_neuron_scan import _interleaved, long_texts

TOLERANCE = 1e-4  # relative error (Frobenius, per layer, real tokens) allowed between the two


def build_bridge(lm):
    """A TransformerBridge over a deep copy of ``lm.model`` (booting switches it to eager attention)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf = copy.deepcopy(lm.model)
    name = hf.config.name_or_path or lm.name
    return TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=lm.tokenizer, device=str(lm.device))


def hook_names(n_layers: int) -> tuple[list, list]:
    """TransformerLens hook names of mri_widgets' ``resid`` (n_layers + 1) and ``mlp`` (n_layers)."""
    resid = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
    mlp = [f"blocks.{i}.mlp.hook_post" for i in range(n_layers)]
    return resid, mlp


def _rel_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Largest per-layer ||a - b|| / ||b|| over real tokens; a, b (batch, layers, seq, d)."""
    a = a.float().permute(0, 2, 1, 3)[mask]  # (tokens, layers, d)
    b = b.float().permute(0, 2, 1, 3)[mask]
    return ((a - b).norm(dim=(0, 2)) / b.norm(dim=(0, 2))).max().item()


def check_agreement(lm, bridge, texts, encs, batch: int, n_tokens: int) -> dict:
    """Largest relative error per site between ``lm.capture`` and the bridge's cache; raises over TOLERANCE."""
    cap = lm.capture(texts, sites=["resid", "mlp"], max_length=n_tokens, batch_size=batch, progress=False)
    resid_names, mlp_names = hook_names(lm.n_layers)
    errs = {"resid": 0.0, "mlp": 0.0}
    with torch.inference_mode():
        for b, enc in enumerate(encs):
            _, cache = bridge.run_with_cache(enc["input_ids"].to(lm.device),
                                             attention_mask=enc["attention_mask"].to(lm.device),
                                             names_filter=resid_names + mlp_names)
            rows = slice(b * batch, b * batch + len(enc["input_ids"]))
            seq = enc["input_ids"].shape[1]
            mask = enc["attention_mask"].bool()
            assert torch.equal(cap.mask[rows, :seq], mask), "capture and the bridge saw different tokens"
            for site, names in (("resid", resid_names), ("mlp", mlp_names)):
                tl = torch.stack([cache[n] for n in names], 1).cpu()
                errs[site] = max(errs[site], _rel_error(tl, cap[site][rows, :, :seq], mask))
    bad = {k: v for k, v in errs.items() if not v < TOLERANCE}
    if bad:
        raise AssertionError(f"capture and TransformerLens disagree: relative errors {bad} (tolerance {TOLERANCE})")
    return errs


def _mib(tensors) -> float:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key not in seen:  # the cache holds some tensors under two names (aliases)
            seen.add(key)
            total += t.numel() * t.element_size()
    return total / 2**20


def main(n_texts: int = 12, n_tokens: int = 256, batch: int = 3, repeat: int = 3) -> dict:
    import mri_widgets as mw

    lm = mw.load("demo")
    tok = lm.tokenizer
    dev = lm.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    texts = long_texts(tok, n_texts, n_tokens)
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    encs = [tok(c, padding=True, truncation=True, max_length=n_tokens, return_tensors="pt", padding_side="right")
            for c in chunks]
    n_tok = sum(int(e["attention_mask"].sum()) for e in encs)

    def forward():
        with torch.inference_mode():
            for enc in encs:
                lm.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))

    def capture():
        return lm.capture(texts, sites=["resid", "mlp"], max_length=n_tokens, batch_size=batch, progress=False)

    runs = {"forward": forward, "capture": capture}
    try:
        bridge = build_bridge(lm)
    except Exception as e:  # measure what is possible, and say why the rest is missing
        bridge = None
        print(f"[capture vs TransformerLens] no TransformerBridge for the demo model: {type(e).__name__}: {e}")
    errs = {}
    if bridge is not None:
        names = sum(hook_names(lm.n_layers), [])
        hf = bridge.original_model  # the deep copy, now with eager attention

        def forward_eager():
            with torch.inference_mode():
                for enc in encs:
                    hf(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))

        def transformer_lens():
            out = []
            with torch.inference_mode():
                for enc in encs:
                    out.append(bridge.run_with_cache(enc["input_ids"].to(dev),
                                                     attention_mask=enc["attention_mask"].to(dev),
                                                     names_filter=names)[1])
            return out

        errs = check_agreement(lm, bridge, texts, encs, batch, n_tokens)
        runs = {"forward": forward, "forward_eager": forward_eager, "capture": capture,
                "transformer_lens": transformer_lens}

    cap = capture()
    sizes = {"capture_mib": _mib(cap[s] for s in cap.sites),
             "capture_shapes": {s: tuple(cap[s].shape) for s in cap.sites}}
    del cap
    if bridge is not None:
        caches = transformer_lens()
        sizes["transformer_lens_mib"] = _mib(t for c in caches for t in c.values())
        sizes["transformer_lens_entries"] = sum(len(c) for c in caches)
        del caches

    best = _interleaved(runs, sync, repeat, warmup=True)
    out = {"model": lm.name, "device": str(dev), "n_texts": n_texts, "n_tokens": n_tok, "batch": batch,
           **{f"{k}_s": v for k, v in best.items()}, **sizes,
           "capture_vs_forward": best["capture"] / best["forward"]}
    head = (f"[capture vs TransformerLens] {lm.name} on {dev}: {n_texts} texts x {n_tokens} tokens "
            f"({n_tok} real), resid + mlp of all {lm.n_layers} layers, batches of {batch}: forward "
            f"{best['forward']:.2f}s, capture {best['capture']:.2f}s = {out['capture_vs_forward']:.2f}x forward")
    if bridge is None:
        print(head + f"; capture holds {sizes['capture_mib']:.0f} MiB")
        return out
    out.update(resid_rel_error=errs["resid"], mlp_rel_error=errs["mlp"],
               transformer_lens_vs_forward=best["transformer_lens"] / best["forward"],
               transformer_lens_vs_forward_eager=best["transformer_lens"] / best["forward_eager"],
               forward_eager_vs_forward=best["forward_eager"] / best["forward"],
               capture_vs_transformer_lens=best["capture"] / best["transformer_lens"])
    print(head + f"; TransformerLens run_with_cache {best['transformer_lens']:.2f}s = "
          f"{out['transformer_lens_vs_forward']:.2f}x forward, {out['transformer_lens_vs_forward_eager']:.2f}x "
          f"eager forward ({best['forward_eager']:.2f}s); capture = {out['capture_vs_transformer_lens']:.2f}x "
          f"TransformerLens. Sizes: capture {sizes['capture_mib']:.0f} MiB "
          f"({', '.join(f'{s} {v}' for s, v in sizes['capture_shapes'].items())}), TransformerLens caches "
          f"{sizes['transformer_lens_mib']:.0f} MiB ({sizes['transformer_lens_entries']} entries). Agreement: "
          f"relative error resid {errs['resid']:.1e}, mlp {errs['mlp']:.1e}")
    return out


if __name__ == "__main__":
    main()
