"""Attention probabilities recomputed from captured queries and keys, a block of query rows at a
time, and the memory check of attention requests.

The site ``"attn"`` of :func:`~mri_widgets.models.capture.run_capture` asks the model for every
layer's (heads, seq, seq) probabilities at once (eager attention, ``output_attentions``): its
memory grows with the square of the length. The head analyses do not need that: the queries and
keys (sites ``"q"`` and ``"k"``, rotary applied, grouped-query heads expanded) are linear in the
length, and :func:`attention_rows` turns any block of query rows into that block's attention
probabilities with the model's own scale, causal mask, sliding window and logit soft-capping
(:func:`attention_rules`). The result equals the model's ``output_attentions`` to float tolerance
on every supported family (tests/test_attention_memory.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .adapters import Adapter, AdapterError
from .capture import CaptureError

__all__ = ["AttentionRule", "AttentionMemoryError", "attention_rules", "attention_rows", "available_memory",
           "check_fits", "fmt_bytes"]

#: fraction of the available memory a request may plan to use (the rest: the interpreter, the
#: model, allocator slack)
MEMORY_FRACTION = 0.8


class AttentionMemoryError(CaptureError, MemoryError):
    """A request whose estimated memory exceeds what is available; raised before anything runs.

    ``max_length`` is the longest truncation (tokens per text) that fits, or None when none does.
    """

    def __init__(self, msg: str, max_length: Optional[int] = None, needed: int = 0, available: int = 0):
        super().__init__(msg)
        self.max_length = max_length
        self.needed = needed
        self.available = available


@dataclass(frozen=True)
class AttentionRule:
    """How one layer turns queries and keys into probabilities.

    ``softmax(cap(q @ k.T * scale) + mask)`` with ``cap(s) = softcap * tanh(s / softcap)`` when
    ``softcap`` is set; the mask lets query ``i`` see key ``j`` when ``j <= i`` (``causal``) and
    ``i - j < window`` (``window``: GPT-Neo local layers, Mistral / Qwen2 / Gemma-2 sliding windows).
    """

    scale: float
    causal: bool = True
    window: Optional[int] = None
    softcap: Optional[float] = None


def _inner_attention(mod):
    """The module that holds ``scaling`` (GPT-Neo: ``attn.attention``, BERT: ``attention.self``)."""
    if hasattr(mod, "scaling"):
        return mod
    for name in ("attention", "self"):
        sub = getattr(mod, name, None)
        if isinstance(sub, torch.nn.Module):
            return sub
    return mod


_MISSING = object()


def attention_rules(adapter: Adapter) -> list:
    """One :class:`AttentionRule` per layer, read from the model's attention modules and config.

    Raises AdapterError for a model whose rules are not known (a family outside the built-in
    adapters, or an attention module without the ``scaling`` attribute of transformers >= 5):
    callers then fall back to the model's own attention probabilities.
    """
    from .adapters import SPECS

    fam = adapter.spec.family
    if fam not in SPECS or SPECS[fam] != adapter.spec:
        raise AdapterError(f"attention rules are not known for the custom family {fam!r}")
    cfg = adapter.config
    rules = []
    for layer in range(adapter.n_layers):
        inner = _inner_attention(adapter.part(layer, "attn"))
        causal = bool(getattr(inner, "is_causal", not adapter.spec.encoder))
        window = None
        if fam == "gpt_neo":
            scale = 1.0  # GPT-Neo does not scale its scores
            if getattr(inner, "attention_type", "global") == "local":
                window = int(cfg.window_size)
        else:
            scale = getattr(inner, "scaling", None)
            if not isinstance(scale, (int, float)):
                raise AdapterError(f"the {fam} attention module of layer {layer} has no 'scaling' attribute "
                                   "(transformers < 5?)")
            w = getattr(inner, "sliding_window", _MISSING)
            if w is _MISSING and getattr(cfg, "model_type", None) == "mistral":
                w = getattr(cfg, "sliding_window", None)  # Mistral's modules read it from the config
            window = int(w) if isinstance(w, int) and not isinstance(w, bool) and w > 0 else None
        softcap = getattr(inner, "attn_logit_softcapping", None)
        softcap = float(softcap) if isinstance(softcap, (int, float)) and softcap else None
        rules.append(AttentionRule(float(scale), causal, window, softcap))
    return rules


def attention_rows(q: torch.Tensor, k: torch.Tensor, rule: AttentionRule, q0: int, q1: int,
                   k_end: Optional[int] = None) -> torch.Tensor:
    """Attention probabilities of query rows ``q0 .. q1 - 1`` over keys ``0 .. k_end - 1``.

    Parameters
    ----------
    q, k : (..., n, d_head) queries and keys of the real tokens of one text (no padding)
    rule : the layer's :class:`AttentionRule`
    q0, q1 : the query rows
    k_end : keys computed (default: ``q1`` for a causal layer, whose later keys are all zero, else
        ``n``); later keys are left out (their probabilities are 0 for a causal layer)

    Returns
    -------
    (..., q1 - q0, k_end) float32 tensor; each row sums to 1 over all ``n`` keys.
    """
    n = k.shape[-2]
    if not 0 <= q0 < q1 <= q.shape[-2]:
        raise ValueError(f"bad query rows {q0}..{q1} of {q.shape[-2]}")
    if k_end is None:
        k_end = q1 if rule.causal else n
    if not rule.causal and k_end != n:
        raise ValueError("a non-causal layer's rows need every key (k_end = n)")
    k_end = min(max(int(k_end), q1 if rule.causal else n), n)
    s = torch.matmul(q[..., q0:q1, :].float(), k[..., :k_end, :].float().transpose(-1, -2))
    s = s * rule.scale
    if rule.softcap:
        s = torch.tanh(s / rule.softcap) * rule.softcap
    if rule.causal or rule.window:
        qi = torch.arange(q0, q1, device=s.device)[:, None]
        ki = torch.arange(k_end, device=s.device)[None, :]
        allowed = torch.ones(q1 - q0, k_end, dtype=torch.bool, device=s.device)
        if rule.causal:
            allowed &= ki <= qi
        if rule.window:
            allowed &= (qi - ki) < rule.window
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1)


# ------------------------------------------------------------------------------ memory
def available_memory(device=None) -> Optional[int]:
    """Bytes available for new allocations on ``device`` (CPU: psutil, else /proc/meminfo's
    MemAvailable; CUDA: ``torch.cuda.mem_get_info``), or None when unknown (then no check is made)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except Exception:  # pragma: no cover - no driver
            return None
    if dev.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


def fmt_bytes(n: float) -> str:
    """``1.5 GiB`` style."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_fits(estimate: Callable[[int], dict], longest: int, *, what: str, hint: str = "") -> None:
    """Raise :class:`AttentionMemoryError` when ``estimate(longest)`` does not fit.

    ``estimate(m)`` gives, for texts truncated to ``m`` tokens, ``{device: bytes}`` (``"cpu"``,
    ``"cuda:0"`` ...). Each device's bytes are compared with :data:`MEMORY_FRACTION` of
    :func:`available_memory` there; the error names the largest ``max_length`` that fits
    (binary search on ``estimate``) and the figures.
    """
    if os.environ.get("MRI_NO_MEMORY_CHECK"):
        return
    avail: dict = {}

    def fits(m: int):
        for dev, need in estimate(m).items():
            if dev not in avail:
                avail[dev] = available_memory(dev)
            a = avail[dev]
            if a is not None and need > MEMORY_FRACTION * a:
                return dev, need, a
        return None

    bad = fits(longest)
    if bad is None:
        return
    dev, need, a = bad
    lo, hi = 0, longest  # fits(lo) holds (0: nothing), fits(hi) fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid) is None:
            lo = mid
        else:
            hi = mid
    where = "memory" if dev == "cpu" else f"{dev} memory"
    fix = (f"pass max_length={lo} (the longest truncation that fits)" if lo >= 1
           else "even one token per text does not fit: use fewer texts or layers")
    raise AttentionMemoryError(
        f"{what} for texts of up to {longest} tokens needs about {fmt_bytes(need)} of {where}, but "
        f"{fmt_bytes(a)} is available ({int(MEMORY_FRACTION * 100)}% of it may be planned): {fix}{hint}",
        max_length=lo or None, needed=int(need), available=int(a))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def dtype_bytes(adapter: Adapter) -> int:
    """Bytes per element of the model's parameters (the dtype of its activations)."""
    try:
        return next(adapter.model.parameters()).element_size()
    except StopIteration:  # pragma: no cover
        return 4


def device_name(adapter: Adapter) -> str:
    dev = adapter.embed.weight.device
    return "cpu" if dev.type in ("cpu", "meta") else str(dev if dev.index is not None else torch.device(dev.type, 0))

