"""Activation patching (causal tracing): restore clean activations into a corrupted run, one at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["PatchingResult", "PatchingError", "patching", "PATCH_SITES", "METRICS"]


class PatchingError(ValueError):
    """Bad input to :func:`patching` (prompts of different lengths, unknown site or metric, ...)."""


@dataclass
class PatchingResult:
    """What :func:`patching` computes: the effect of restoring each clean activation.

    Rows are layers, columns are token positions (``kind="position"``) or attention heads
    (``kind="head"``). ``effect[l, j]`` is the metric of the corrupted run with the clean
    activation restored at row ``l`` and column ``j``, normalised so that 0 is the corrupted
    run's metric and 1 the clean run's: ``(raw - corrupt_metric) / (clean_metric - corrupt_metric)``.

    Attributes
    ----------
    effect : (rows, cols) float32 array, normalised as above.
    raw : (rows, cols) float32 array, the metric itself.
    clean_metric, corrupt_metric : float, the metric of the unpatched clean and corrupted runs.
    site : str, the patched site (``"resid"``, ``"attn_out"``, ``"mlp_out"``, ``"mlp"``, ``"z"``).
    kind : ``"position"`` or ``"head"``.
    layers : (rows,) int64 array, the site's layer index of each row (``resid``: 0 = embeddings).
    layer_names : list of str, a label per row (``"emb"``, ``"1"``, ... for ``resid``; ``"0"``,
        ``"1"``, ... for block sites).
    columns : list of str, a label per column: the corrupted prompt's tokens (``kind="position"``)
        or ``"h0"``, ``"h1"``, ... (``kind="head"``).
    clean_tokens, corrupt_tokens : list of str, the tokens of the two prompts.
    metric : str, ``"logit_diff"``, ``"logit"`` or ``"prob"``.
    answer, wrong : str or None, the tokens the metric compares.
    positions : (cols,) int64 array for ``kind="position"`` (the patched positions), else empty.
    model_name : str
    """

    effect: np.ndarray
    raw: np.ndarray
    clean_metric: float
    corrupt_metric: float
    site: str
    kind: str
    layers: np.ndarray
    layer_names: list
    columns: list
    clean_tokens: list
    corrupt_tokens: list
    metric: str = "logit_diff"
    answer: Optional[str] = None
    wrong: Optional[str] = None
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    model_name: str = ""

    @property
    def shape(self) -> tuple:
        return tuple(self.effect.shape)

    def top(self, n: int = 5) -> list:
        """The ``n`` entries with the largest effect: ``(layer_name, column_label, effect)``, largest first."""
        flat = np.argsort(-np.nan_to_num(self.effect, nan=-np.inf), axis=None)[:n]
        rows, cols = np.unravel_index(flat, self.effect.shape)
        return [(self.layer_names[r], self.columns[c], float(self.effect[r, c])) for r, c in zip(rows, cols)]

    def to_pandas(self):
        """The result in long format: a ``pandas.DataFrame`` with one row per (row, column) cell.

        Columns: ``layer`` (the site's layer index), ``layer_name``, ``column`` (column index),
        ``column_label`` (the token, or ``"h3"``), ``position`` (the patched position for
        ``kind="position"``, else -1), ``head`` (for ``kind="head"``, else -1), ``effect``
        (normalised: 0 = corrupted, 1 = clean) and ``raw`` (the metric), plus ``site``, ``kind``
        and ``metric`` repeated on every row.
        """
        import pandas as pd

        R, C = self.effect.shape
        ri, ci = np.meshgrid(np.arange(R), np.arange(C), indexing="ij")
        ri, ci = ri.reshape(-1), ci.reshape(-1)
        by_pos = self.kind == "position"
        pos = np.asarray(self.positions, dtype=np.int64)
        return pd.DataFrame({
            "layer": np.asarray(self.layers, dtype=np.int64)[ri],
            "layer_name": np.asarray(self.layer_names, dtype=object)[ri], "column": ci,
            "column_label": np.asarray(self.columns, dtype=object)[ci],
            "position": pos[ci] if by_pos and len(pos) == C else np.full(len(ci), -1, np.int64),
            "head": np.full(len(ci), -1, np.int64) if by_pos else ci,
            "effect": np.asarray(self.effect).reshape(-1), "raw": np.asarray(self.raw).reshape(-1),
            "site": self.site, "kind": self.kind, "metric": self.metric,
        })

    def __repr__(self) -> str:
        return (f"PatchingResult({self.model_name!r}, site={self.site!r}, kind={self.kind!r}, "
                f"shape={self.shape}, metric={self.metric!r}, clean={self.clean_metric:.4g}, "
                f"corrupt={self.corrupt_metric:.4g})")


#: sites that :func:`patching` restores; ``"z"`` is patched per attention head
PATCH_SITES = ("resid", "attn_out", "mlp_out", "mlp", "z")
#: metrics of :func:`patching`, read at the last position of the prompt
METRICS = ("logit_diff", "logit", "prob")
#: most tokens (copies of the corrupted prompt x its length) in one patched forward pass
PATCH_BATCH_TOKENS = 4096


def _metric_fn(metric: str, answer: int, wrong: Optional[int]):
    import torch

    def fn(logits):  # (b, vocab) float -> (b,)
        logits = logits.float()
        if metric == "logit_diff":
            return logits[:, answer] - logits[:, wrong]
        if metric == "logit":
            return logits[:, answer]
        return torch.softmax(logits, dim=-1)[:, answer]
    return fn


def _last_logits(lm, ids):
    """Logits at the last position of each row of ``ids`` (b, seq), one forward pass."""
    import torch

    from ..models.capture import _accepts

    kw = {"logits_to_keep": 1} if _accepts(lm.model.forward, "logits_to_keep") else {}
    with torch.inference_mode():
        out = lm.model(input_ids=ids.to(lm.device), **kw)
    return out.logits[:, -1]


def patching(lm, clean: str, corrupt: str, *, site: str = "resid", answer=None, wrong=None,
             metric: str = "logit_diff", layers=None, positions=None, batch_size: Optional[int] = None,
             progress: Optional[bool] = None) -> PatchingResult:
    """Activation patching (causal tracing): restore each clean activation into the corrupted run.

    For every layer and every token position (or every attention head, with ``site="z"``), the
    corrupted prompt runs with that one activation taken from the clean prompt's run; the metric
    at the last position says how much of the clean behaviour it restores (Meng et al. 2022,
    "Locating and editing factual associations in GPT"; Wang et al. 2022, "Interpretability in
    the wild"). Effects are normalised: 0 is the corrupted run, 1 the clean one.

    The patched runs are batched (copies of the corrupted prompt, one patched entry each,
    :data:`PATCH_BATCH_TOKENS` tokens per forward pass by default), so a table row of ``P``
    positions costs one forward pass over ``P`` copies of the prompt.

    Parameters
    ----------
    lm : LoadedModel, a causal LM.
    clean, corrupt : str
        Two prompts with the same number of tokens (e.g. a different subject: "The Eiffel Tower is
        in the city of" / "The Colosseum is in the city of").
    site : ``"resid"`` (the residual stream: row 0 is the embeddings, row ``l`` block ``l``'s
        output), ``"attn_out"``, ``"mlp_out"``, ``"mlp"`` (all neurons at a position) or ``"z"``
        (per attention head, all positions of the head at once).
    answer : the clean answer token (``" Paris"``) or id; default: the clean run's top-1 prediction.
    wrong : the token the answer is compared with, for ``metric="logit_diff"``; default: the
        corrupted run's top-1 prediction.
    metric : ``"logit_diff"`` (logit of ``answer`` minus logit of ``wrong``), ``"logit"`` or
        ``"prob"`` (of ``answer``), at the last position.
    layers : the site's layers to patch (default: all; ``"resid"`` counts the embeddings as 0).
    positions : token positions to patch (default: all; ignored for ``site="z"``, which patches a
        head at every position).
    batch_size : patched copies per forward pass (default: as many as fit in
        :data:`PATCH_BATCH_TOKENS` tokens).
    progress : show a progress bar (default: when there is more than one batch).

    Returns
    -------
    PatchingResult

    Examples
    --------
    >>> res = mw.patching(lm, "The Eiffel Tower is in the city of", "The Colosseum is in the city of",
    ...                   answer=" Paris", wrong=" Rome")
    >>> res.top(3)
    """

    from .._checks import check_bool, check_choice, check_int, check_target, parse_layers
    from ..models.capture import check_texts
    from ..models.loading import LoadedModel

    if not isinstance(lm, LoadedModel):
        raise TypeError(f"lm must be a mri_widgets LoadedModel (mri_widgets.load(...)), got {type(lm).__name__}")
    if lm.is_encoder or lm.adapter.unembed_module is None:
        raise PatchingError(f"{lm.name} is an encoder without next-token logits; patching needs a causal LM")
    check_texts([clean], what="clean")
    check_texts([corrupt], what="corrupt")
    site = check_choice(site, PATCH_SITES, "site", error=PatchingError)
    metric = check_choice(metric, METRICS, "metric", error=PatchingError)
    progress = None if progress is None else check_bool(progress, "progress")
    ids_c = lm.tokenizer(clean, return_tensors="pt")["input_ids"]
    ids_x = lm.tokenizer(corrupt, return_tensors="pt")["input_ids"]
    n = ids_c.shape[1]
    tok_c, tok_x = lm.token_str(ids_c[0]), lm.token_str(ids_x[0])
    if ids_x.shape[1] != n:
        raise PatchingError(
            f"clean has {n} tokens {tok_c} but corrupt has {ids_x.shape[1]} {tok_x}: patching compares the "
            "same positions, so change words for words of the same token count (e.g. another subject)")
    limit = lm.max_positions
    if limit is not None and n > limit:
        raise PatchingError(f"the prompts have {n} tokens but the model accepts {limit}; shorten them")

    logit_c = _last_logits(lm, ids_c)[0]
    logit_x = _last_logits(lm, ids_x)[0]
    a = check_target(lm, answer, error=PatchingError)
    a = int(logit_c.argmax()) if a is None else a
    w = check_target(lm, wrong, error=PatchingError)
    if metric == "logit_diff":
        if w is None:
            w = int(logit_x.argmax())
            if w == a:
                raise PatchingError(
                    f"the corrupted run also predicts {lm.token_str([a])[0]!r}, so logit_diff has nothing to compare: "
                    "pass wrong= (the token the corrupted prompt should favour) or metric='prob'")
        elif w == a:
            raise PatchingError("answer and wrong are the same token; logit_diff would be 0 everywhere")
    fn = _metric_fn(metric, a, w)
    m_clean = float(fn(logit_c[None])[0])
    m_corrupt = float(fn(logit_x[None])[0])

    n_site = lm.n_layers + 1 if site == "resid" else lm.n_layers
    sel = parse_layers(layers, n_site, what="resid layer (0 = embeddings)" if site == "resid" else "layer",
                       error=PatchingError)
    if site == "z":
        kind = "head"
        cols = list(range(lm.n_heads))
        col_labels = [f"h{h}" for h in cols]
        pos_arr = np.zeros(0, np.int64)
    else:
        kind = "position"
        if positions is None:
            cols = list(range(n))
        else:
            plist = [positions] if not isinstance(positions, (list, tuple, np.ndarray)) else list(positions)
            if not plist:
                raise PatchingError("positions is empty: pass None (every position) or token positions")
            cols = [check_int(p, "position", min=-n, max=n - 1, error=PatchingError) % n for p in plist]
        col_labels = [tok_x[p] for p in cols]
        pos_arr = np.asarray(cols, np.int64)

    # clean activations of the site at the patched layers: (L, seq, width)
    cap = lm.capture([clean], sites=[site], layers=sel, progress=False)
    src = cap[site][0]
    if site == "z":
        src = src.permute(0, 2, 1, 3).reshape(src.shape[0], src.shape[2], -1)
    src = src[:, :n].to(lm.device)

    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", min=1, error=PatchingError)
    if kind == "position" and _prefix_cache_ok(lm):
        raw = _patch_positions_cached(lm, ids_x, src, sel, cols, fn, site, batch_size, progress)
    else:
        raw = _patch_batched(lm, ids_x, src, sel, cols, fn, site, kind, batch_size, progress)
    raw = raw.reshape(len(sel), len(cols))
    denom = m_clean - m_corrupt
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = ((raw - m_corrupt) / denom).astype(np.float32) if denom != 0 else np.full_like(raw, np.nan)
    names = [("emb" if l == 0 else str(l)) for l in sel] if site == "resid" else [str(l) for l in sel]
    return PatchingResult(
        effect=effect, raw=raw, clean_metric=m_clean, corrupt_metric=m_corrupt, site=site, kind=kind,
        layers=np.asarray(sel, np.int64), layer_names=names, columns=col_labels, clean_tokens=tok_c,
        corrupt_tokens=tok_x, metric=metric, answer=lm.token_str([a])[0],
        wrong=None if w is None else lm.token_str([w])[0], positions=pos_arr, model_name=str(lm.name))


def _chunks(items: list, size: int) -> list:
    return [items[s:s + size] for s in range(0, len(items), size)]


def _patch_batched(lm, ids_x, src, sel, cols, fn, site, kind, batch_size, progress) -> np.ndarray:
    """Every (layer, column) entry is one copy of the whole corrupted prompt in a batch."""
    import torch
    from tqdm.auto import tqdm

    from ..models.interventions import Edit, apply_edits

    n = ids_x.shape[1]
    entries = [(i, j) for i in range(len(sel)) for j in range(len(cols))]
    chunks = _chunks(entries, batch_size or max(1, PATCH_BATCH_TOKENS // n))
    raw = np.zeros(len(entries), np.float32)
    show = len(chunks) > 1 if progress is None else progress
    done = 0
    for chunk in tqdm(chunks, desc="patching", disable=not show, leave=False):
        by_layer: dict = {}
        for r, (i, j) in enumerate(chunk):
            by_layer.setdefault(i, []).append((r, cols[j]))
        edits = []
        for i, rc in by_layer.items():
            rows = torch.tensor([r for r, _ in rc], device=lm.device)
            cidx = torch.tensor([c for _, c in rc], device=lm.device)
            edits.append(Edit(site, sel[i], _restore(src[i], rows, cidx, kind, lm.d_head)))
        with apply_edits(lm.adapter, edits):
            vals = fn(_last_logits(lm, ids_x.expand(len(chunk), -1)))
        raw[done:done + len(chunk)] = vals.float().cpu().numpy()
        done += len(chunk)
    return raw.reshape(len(sel), len(cols))


def _prefix_cache_ok(lm) -> bool:
    """Whether the model takes a key/value cache (causal LMs of transformers do)."""
    from ..models.loading import _forward_params
    params = _forward_params(lm.model)
    return "cache" in params or "past_key_values" in params


def _patch_positions_cached(lm, ids_x, src, sel, cols, fn, site, batch_size, progress) -> np.ndarray:
    """Patch position by position, reusing the corrupted run's key/value cache of the prefix.

    Restoring an activation at position ``p`` changes nothing before ``p`` (causal attention), so
    the corrupted run's keys and values of tokens ``0..p-1`` serve every layer's patched run at
    ``p``: each runs only tokens ``p..n-1``, on average half the prompt.
    """
    import torch
    from tqdm.auto import tqdm

    from ..models.capture import _accepts
    from ..models.interventions import Edit, apply_edits
    from ..models.loading import _forward_params

    n = ids_x.shape[1]
    ids_x = ids_x.to(lm.device)
    cache_kw = "cache" if "cache" in _forward_params(lm.model) else "past_key_values"
    kw = {"logits_to_keep": 1} if _accepts(lm.model.forward, "logits_to_keep") else {}
    raw = np.zeros((len(sel), len(cols)), np.float32)
    show = len(cols) > 1 and len(sel) * n > PATCH_BATCH_TOKENS if progress is None else progress
    layer_rows = list(range(len(sel)))
    per_batch = batch_size or max(1, PATCH_BATCH_TOKENS // n)
    with torch.inference_mode():
        for j, p in enumerate(tqdm(cols, desc="patching", disable=not show, leave=False)):
            for chunk in _chunks(layer_rows, per_batch):
                b = len(chunk)
                edits = [Edit(site, sel[i], _restore_at(src[i][p], r)) for r, i in enumerate(chunk)]
                past = None
                if p > 0:  # the unpatched prefix, once, repeated for the batch
                    out = lm.model(input_ids=ids_x[:, :p], use_cache=True, **kw)
                    past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
                    past.batch_repeat_interleave(b)
                mask = torch.ones(b, n, dtype=torch.long, device=lm.device)
                with apply_edits(lm.adapter, edits):
                    out = lm.model(input_ids=ids_x[:, p:].expand(b, -1), attention_mask=mask,
                                   use_cache=p > 0, **({cache_kw: past} if p > 0 else {}), **kw)
                raw[chunk, j] = fn(out.logits[:, -1]).float().cpu().numpy()
    return raw


def _restore_at(value, row: int):
    """Edit function: batch row ``row`` gets ``value`` at the first position of the call."""
    def fn(x, where):
        x[row, 0] = value.to(x.dtype)
        return x
    return fn


def _restore(src, rows, cols, kind: str, dh: int):
    """Edit function: batch row ``rows[r]`` gets the clean activation at position ``cols[r]``
    (kind "position") or of head ``cols[r]`` at every position (kind "head")."""
    def fn(x, where):
        if kind == "position":
            x[rows, cols] = src[cols].to(x.dtype)
        else:
            for r, h in zip(rows.tolist(), cols.tolist()):
                x[r, :, h * dh:(h + 1) * dh] = src[:, h * dh:(h + 1) * dh].to(x.dtype)
        return x
    return fn
