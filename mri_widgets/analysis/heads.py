"""Attention heads compared by how they attend (after Clark et al. 2019, "What does BERT look at?").

For every example, each head's attention matrix (query rows x key columns, real tokens only)
is smoothed and compared with every other head's: the distance between two heads is the
Jensen-Shannon divergence between their attention distributions, summed over query rows and
averaged over examples. Classical MDS embeds the heads in 2-D. Per-head scores say what a head
mostly does: how spread its attention is (entropy) and how much of it goes to the previous
token, the first token and the token itself.

Everything streams: attention probabilities are reduced batch by batch and never materialised
for the whole text list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..models.loading import as_loaded_model

__all__ = [
    "JS_SMOOTHING",
    "SCORE_NAMES",
    "HeadStats",
    "smooth_attention",
    "js_divergence",
    "pairwise_head_js",
    "attention_score_sums",
    "block_score_sums",
    "head_stats",
    "head_distances",
    "head_scores",
    "classical_mds",
]

#: Smoothing of attention rows before the Jensen-Shannon divergence, as in Clark et al.'s code:
#: ``p <- eps / n_keys + (1 - eps) * p`` with ``eps = 0.001``, so that no probability is zero.
JS_SMOOTHING = 1e-3

#: Per-head scores computed by :func:`head_stats` (means over query rows 1..n-1 of every example).
SCORE_NAMES = ("entropy", "previous", "first", "self")

_SCORE_DOC = {
    "entropy": "attention entropy in nats (0: all on one token; log(q + 1) for query q: uniform)",
    "previous": "attention to the previous token",
    "first": "attention to the first token",
    "self": "attention to the query token itself",
}


class HeadAnalysisError(ValueError):
    """Bad input to the attention-head analysis."""


# ------------------------------------------------------------------------------ pure functions
def smooth_attention(attn, eps: float = JS_SMOOTHING):
    """Smooth attention rows: ``eps / n + (1 - eps) * p`` over the last axis of length ``n``.

    Works on numpy arrays and torch tensors; rows that sum to 1 still sum to 1.
    """
    if not 0 <= eps < 1:
        raise HeadAnalysisError(f"eps must be in [0, 1), got {eps!r}")
    n = attn.shape[-1]
    return eps / n + (1 - eps) * attn


def js_divergence(p, q, *, eps: float = JS_SMOOTHING, axis: int = -1) -> np.ndarray:
    """Jensen-Shannon divergence (natural log) between distributions along ``axis``.

    ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, after smoothing both
    with :func:`smooth_attention` (``eps=0`` for none). Bounded by ``log 2``.

    Parameters
    ----------
    p, q : array-like of the same shape (each slice along ``axis`` a distribution)
    eps : smoothing (default :data:`JS_SMOOTHING`)
    axis : axis of the distributions

    Returns
    -------
    numpy array with ``axis`` reduced.
    """
    p = np.moveaxis(np.asarray(p, dtype=np.float64), axis, -1)
    q = np.moveaxis(np.asarray(q, dtype=np.float64), axis, -1)
    if p.shape != q.shape:
        raise HeadAnalysisError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    p, q = smooth_attention(p, eps), smooth_attention(q, eps)
    m = (p + q) / 2
    from scipy.special import xlogy

    kl_pm = (xlogy(p, p) - xlogy(p, m)).sum(-1)
    kl_qm = (xlogy(q, q) - xlogy(q, m)).sum(-1)
    return np.maximum(0.5 * kl_pm + 0.5 * kl_qm, 0.0)


def _xlogx(x: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(x, x)


def pairwise_head_js(attn, *, eps: float = JS_SMOOTHING, max_elements: int = 1 << 22,
                     dtype=torch.float32, n_keys: Optional[int] = None) -> torch.Tensor:
    """Summed Jensen-Shannon divergence between every pair of heads of one example.

    Parameters
    ----------
    attn : (n_heads, n, n) array or tensor of attention probabilities of the real tokens of one
        example (rows = queries, columns = keys); heads of all layers may be stacked on axis 0.
        With ``n_keys``: (n_heads, rows, k) for a block of query rows over the first ``k`` of
        ``n_keys`` keys (the keys left out must be zero in every head, as a causal model's
        future keys are): summing the blocks of a text's rows gives its full result.
    eps : smoothing (:data:`JS_SMOOTHING`)
    max_elements : bound on the size of the (chunk, n_heads, n, n) temporaries; pairs are
        processed in chunks of heads so that memory stays ~ ``max_elements`` floats.
    dtype : computation precision (float32 by default; float64 for reference values)
    n_keys : the number of keys of the text (the smoothing's ``n``), for a block of rows

    Returns
    -------
    (n_heads, n_heads) tensor ``D[a, b] = sum_q JS(attn[a, q], attn[b, q])``: symmetric, exactly
    zero on the diagonal and between heads with identical attention.

    Notes
    -----
    Uses ``JS(p, q) = (sum p log p + sum q log q) / 2 - sum m log m`` elementwise, which is exactly
    zero for identical rows in floating point, and only computes the upper triangle. Entries that
    are zero in every head (a causal model's future keys) are skipped: after smoothing they are
    equal in both heads of any pair and add nothing.
    """
    a = torch.as_tensor(attn)
    if n_keys is None:
        if a.dim() != 3 or a.shape[1] != a.shape[2]:
            raise HeadAnalysisError(f"attn must have shape (n_heads, n, n), got {tuple(a.shape)}")
        n_keys = a.shape[2]
    elif a.dim() != 3 or a.shape[2] > n_keys:
        raise HeadAnalysisError(f"attn must have shape (n_heads, rows, k) with k <= n_keys={n_keys}, "
                                f"got {tuple(a.shape)}")
    if not 0 <= eps < 1:
        raise HeadAnalysisError(f"eps must be in [0, 1), got {eps!r}")
    nh, n = a.shape[0], int(n_keys)
    a = a.to(dtype).reshape(nh, -1)
    # entries that are zero in every head (future keys of a causal model) are equal after
    # smoothing in every pair, so they add exactly 0: keep the other columns only
    keep = (a != 0).any(0)
    if not bool(keep.all()):
        a = a[:, keep]
    p = eps / n + (1 - eps) * a if eps else a
    plogp = _xlogx(p)
    out = torch.zeros(nh, nh, dtype=dtype, device=p.device)
    per_head = max(1, nh * p.shape[1])
    chunk = max(1, int(max_elements) // per_head)
    for a0 in range(0, nh, chunk):
        a1 = min(nh, a0 + chunk)
        pa, pb = p[a0:a1, None], p[None, a0:]
        m = (pa + pb) * 0.5
        t = (plogp[a0:a1, None] + plogp[None, a0:]) * 0.5 - _xlogx(m)
        block = t.sum(dim=-1).clamp_min_(0)  # (a1 - a0, nh - a0)
        out[a0:a1, a0:] = block
        out[a0:, a0:a1] = block.T
    out.fill_diagonal_(0)
    return out


def attention_score_sums(attn) -> dict:
    """Per-head sums of the scores over query rows 1..n-1 of one example.

    Parameters
    ----------
    attn : (..., n, n) attention probabilities of the real tokens of one example.

    Returns
    -------
    dict with ``entropy``, ``previous``, ``first``, ``self`` (each of shape ``attn.shape[:-2]``,
    float64 numpy, sums over rows) and ``rows`` (the number of rows summed, ``n - 1``). Query 0 is
    left out: in a causal model it can only attend to itself.
    """
    a = torch.as_tensor(attn).to(torch.float64)
    n = a.shape[-1]
    if a.dim() < 2 or a.shape[-2] != n:
        raise HeadAnalysisError(f"attn must end in (n, n), got {tuple(a.shape)}")
    if n < 2:
        z = np.zeros(tuple(a.shape[:-2]))
        return {"entropy": z, "previous": z.copy(), "first": z.copy(), "self": z.copy(), "rows": 0}
    rows = a[..., 1:, :]  # queries 1..n-1
    q = torch.arange(1, n)
    ent = -_xlogx(rows).sum(-1)
    return {
        "entropy": ent.sum(-1).numpy(),
        "previous": rows[..., torch.arange(n - 1), q - 1].sum(-1).numpy(),
        "first": rows[..., 0].sum(-1).numpy(),
        "self": rows[..., torch.arange(n - 1), q].sum(-1).numpy(),
        "rows": n - 1,
    }


def block_score_sums(rows: torch.Tensor, q0: int) -> dict:
    """:func:`attention_score_sums` of a block of query rows ``q0 .. q0 + r - 1`` (query 0 left out).

    ``rows`` is (..., r, k): the rows' probabilities over the first ``k`` keys (later keys zero);
    ``k`` must reach past the block's last query. Summing the blocks of a text gives
    :func:`attention_score_sums` of its full pattern.
    """
    r, k = rows.shape[-2], rows.shape[-1]
    if q0 == 0:
        rows, q0, r = rows[..., 1:, :], 1, r - 1
    if r <= 0:
        z = np.zeros(tuple(rows.shape[:-2]))
        return {"entropy": z, "previous": z.copy(), "first": z.copy(), "self": z.copy(), "rows": 0}
    if q0 + r > k:
        raise HeadAnalysisError(f"a block of rows {q0}..{q0 + r - 1} needs at least {q0 + r} keys, got {k}")
    i = torch.arange(r, device=rows.device)
    q = i + q0
    ent = -_xlogx(rows).sum(-1, dtype=torch.float64)
    return {
        "entropy": ent.sum(-1).cpu().numpy(),
        "previous": rows[..., i, q - 1].double().sum(-1).cpu().numpy(),
        "first": rows[..., 0].double().sum(-1).cpu().numpy(),
        "self": rows[..., i, q].double().sum(-1).cpu().numpy(),
        "rows": r,
    }


def classical_mds(D, k: int = 2, *, squared: bool = False) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling in numpy.

    Double-centres the squared distances, ``B = -J D^2 J / 2``, and returns the top ``k``
    eigenvectors scaled by the square roots of their eigenvalues (negative eigenvalues, from
    non-Euclidean distances, count as 0). Each axis' sign is fixed so that its largest-magnitude
    coordinate is positive, so the result is deterministic.

    Parameters
    ----------
    D : (n, n) symmetric distance matrix
    k : output dimensions
    squared : ``D`` already holds squared distances

    Returns
    -------
    (n, k) float64 coordinates whose pairwise distances approximate ``D`` (exactly for a
    Euclidean configuration of dimension <= k).
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise HeadAnalysisError(f"D must be a square matrix, got shape {D.shape}")
    if not np.isfinite(D).all():
        raise HeadAnalysisError("D has NaN or infinite entries")
    from .._checks import check_bool, check_int
    k = check_int(k, "k", min=1, error=HeadAnalysisError)
    squared = check_bool(squared, "squared")
    n = D.shape[0]
    D = (D + D.T) / 2
    D2 = D if squared else D ** 2
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ D2 @ J
    vals, vecs = np.linalg.eigh(B)
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order]
    idx = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[idx, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1
    X = vecs * signs * np.sqrt(np.clip(vals, 0, None))
    if X.shape[1] < k:  # fewer points than dimensions
        X = np.pad(X, ((0, 0), (0, k - X.shape[1])))
    return X


# ------------------------------------------------------------------------------ model level
@dataclass
class HeadStats:
    """Distances and scores of every attention head of a model over a list of texts.

    Attributes
    ----------
    distances : (n_layers * n_heads, n_layers * n_heads) float64. Head ``(layer, head)`` is row
        ``layer * n_heads + head``.
    scores : dict score name -> (n_layers, n_heads) float64 mean over query rows (see
        :data:`SCORE_NAMES`).
    n_layers, n_heads, n_examples : sizes; ``n_rows`` query rows entered the scores.
    eps : the smoothing used.
    """

    distances: np.ndarray
    scores: dict
    n_layers: int
    n_heads: int
    n_examples: int
    n_rows: int = 0
    eps: float = JS_SMOOTHING
    descriptions: dict = field(default_factory=lambda: dict(_SCORE_DOC))

    def index(self, layer: int, head: int) -> int:
        """Row of head ``(layer, head)`` in :attr:`distances`."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise IndexError(f"head ({layer}, {head}) out of range: {self.n_layers} layers x {self.n_heads} heads")
        return layer * self.n_heads + head

    def embedding(self, k: int = 2) -> np.ndarray:
        """Classical MDS of the heads in ``k`` dimensions.

        The summed JS divergence is a sum of squared metrics (the JS distance is the square root of
        the JS divergence), so the divergences are embedded as squared distances.
        """
        return classical_mds(self.distances, k, squared=True)


class _HeadReducer:
    def __init__(self, n_layers: int, n_heads: int, eps: float):
        self.L, self.H, self.eps = n_layers, n_heads, eps
        LH = n_layers * n_heads
        self.dist = torch.zeros(LH, LH, dtype=torch.float64)
        self.sums = {k: np.zeros((n_layers, n_heads)) for k in SCORE_NAMES}
        self.n_examples = 0
        self.n_rows = 0

    def __call__(self, batch) -> None:
        att = batch.acts["attn"]  # (b, L, H, seq, seq), padded right
        lengths = batch.mask.sum(1).tolist()
        for i, n in enumerate(lengths):
            a = att[i, :, :, :n, :n].float().cpu()
            d = pairwise_head_js(a.reshape(self.L * self.H, n, n), eps=self.eps)
            self.dist += d.double()
            s = attention_score_sums(a)
            for k in SCORE_NAMES:
                self.sums[k] += s[k]
            self.n_rows += s["rows"]
            self.n_examples += 1

    def result(self) -> HeadStats:
        D = (self.dist / max(1, self.n_examples)).numpy()
        D = (D + D.T) / 2
        np.fill_diagonal(D, 0.0)
        rows = max(1, self.n_rows)
        scores = {k: v / rows for k, v in self.sums.items()}
        return HeadStats(D, scores, self.L, self.H, self.n_examples, self.n_rows, self.eps)


#: Working memory of one block of query rows of every head (float32 bytes): the block's
#: probabilities; the pairwise divergences add temporaries of ``4 * PAIR_ELEMENTS`` floats.
BLOCK_BYTES = 128 * 2 ** 20
#: bound on the pairwise divergence temporaries (elements), see :func:`pairwise_head_js`
PAIR_ELEMENTS = 1 << 22


class _StreamHeadReducer(_HeadReducer):
    """The same sums from queries and keys: each text's attention of every head is computed a block
    of query rows at a time (:func:`~mri_widgets.models.attention.attention_rows`) and reduced at
    once, so memory is linear in the length, never (layers, heads, seq, seq)."""

    def __init__(self, n_layers: int, n_heads: int, eps: float, rules: list, block_bytes: int = BLOCK_BYTES):
        super().__init__(n_layers, n_heads, eps)
        self.rules = rules
        self.block_bytes = block_bytes

    def __call__(self, batch) -> None:
        qa, ka = batch.acts["q"], batch.acts["k"]  # (b, L, H, seq, dh), padded right
        for i, n in enumerate(batch.mask.sum(1).tolist()):
            self.add_text(qa[i, :, :, :n], ka[i, :, :, :n])

    def add_text(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """Add one text: ``q``, ``k`` (n_layers, n_heads, n, d_head) of its real tokens."""
        from ..models.attention import attention_rows

        L, H = self.L, self.H
        n = q.shape[2]
        causal = all(r.causal for r in self.rules)
        # rows per block: the block's probabilities within block_bytes, and the pairwise temporaries
        # of one head against all (L * H, rows * keys) within PAIR_ELEMENTS
        bq = max(1, min(n, self.block_bytes // (4 * L * H * n), PAIR_ELEMENTS // (L * H * n)))
        dist = torch.zeros(L * H, L * H, dtype=torch.float64, device=q.device)
        for q0 in range(0, n, bq):
            q1 = min(n, q0 + bq)
            k_end = q1 if causal else n
            P = torch.empty(L, H, q1 - q0, k_end, dtype=torch.float32, device=q.device)
            for l, rule in enumerate(self.rules):
                P[l] = attention_rows(q[l], k[l], rule, q0, q1, k_end)
            dist += pairwise_head_js(P.view(L * H, q1 - q0, k_end), eps=self.eps, n_keys=n,
                                     max_elements=PAIR_ELEMENTS).double()
            s = block_score_sums(P, q0)
            for key in SCORE_NAMES:
                self.sums[key] += s[key]
            self.n_rows += s["rows"]
            del P
        self.dist += dist.cpu()
        self.n_examples += 1


def _stream_estimate(lm, lengths, batch_size, block_bytes: int = BLOCK_BYTES):
    """``m -> {device: bytes}`` of :func:`head_stats` streaming texts truncated to ``m`` tokens."""
    from ..models.attention import device_name, dtype_bytes
    from ..models.capture import _token_bytes, plan_batches

    ad = lm.adapter
    dev = device_name(ad)
    db = dtype_bytes(ad)
    L, H, dh = ad.n_layers, ad.n_heads, ad.d_head
    layers = {"q": list(range(L)), "k": list(range(L))}
    per_tok, _ = _token_bytes(ad, ("q", "k"), layers)

    def est(m: int) -> dict:
        ls = [min(x, m) for x in lengths]
        batches = plan_batches(ls, batch_size=batch_size, bytes_per_token=per_tok)
        b_tok = max(len(bt) * max(ls[i] for i in bt) for bt in batches)
        # q and k of every layer: the model's tensors and the stacked copy; GQA expanded
        qk = 2 * 2 * b_tok * L * H * dh * db
        # the forward pass: a few residual-width activations, and one layer's (heads, seq, seq)
        # scores where the attention kernel materialises them (padded batches)
        fwd = 8 * b_tok * max(ad.d_model, ad.d_mlp) * db
        if any(len({ls[i] for i in bt}) > 1 for bt in batches):  # padded: the kernel gets a mask and
            fwd += b_tok * m * H * db  # may materialise one layer's scores
        # one block (within PAIR_ELEMENTS), its filtered, smoothed and p log p copies, the pairwise
        # temporaries, the (L*H)^2 sums
        blk = min(block_bytes, 4 * PAIR_ELEMENTS + 4 * L * H * m)
        work = 4 * blk + 6 * 4 * (PAIR_ELEMENTS + L * H * m) + (L * H) ** 2 * 8 * 2
        return {dev: qk + fwd + work}
    return est


def head_stats(model, texts, *, batch_size: Optional[int] = None, max_length: Optional[int] = None,
               eps: float = JS_SMOOTHING, progress: Optional[bool] = None) -> HeadStats:
    """Head distances and per-head scores in one streaming pass over ``texts``.

    Parameters
    ----------
    model : LoadedModel (from :func:`mri_widgets.load`)
    texts : list of str
    batch_size : texts per forward pass (default None: batches by a token budget, texts sorted by
        length; see :meth:`LoadedModel.capture`)
    max_length : truncate texts to this many tokens
    eps : smoothing of attention rows before the JS divergence (:data:`JS_SMOOTHING`)
    progress : tqdm progress bar (default: when there is more than one batch)

    Returns
    -------
    HeadStats
    """
    from ..models.adapters import AdapterError
    from ..models.attention import attention_rules, check_fits

    lm = as_loaded_model(model)
    try:
        rules = attention_rules(lm.adapter)
    except AdapterError:  # unknown attention rules: the model's own probabilities, a batch at a time
        rules = None
    if rules is None:
        red = _HeadReducer(lm.n_layers, lm.n_heads, eps)
        lm.capture(texts, ("attn",), batch_size=batch_size, max_length=max_length, reducer=red, progress=progress)
        return red.result()
    from ..models.capture import max_positions

    lengths = _token_lengths(lm, texts, max_length)
    limit = max_positions(lm.adapter)
    if max_length is not None or limit is None or max(lengths) <= limit:  # else capture names max_length
        check_fits(_stream_estimate(lm, lengths, batch_size), max(lengths),
                   what=f"head_stats over {len(lengths)} text(s) ({lm.n_layers} layers x {lm.n_heads} heads)")
    red = _StreamHeadReducer(lm.n_layers, lm.n_heads, eps, rules)
    lm.capture(texts, ("q", "k"), batch_size=batch_size, max_length=max_length, reducer=red, progress=progress)
    return red.result()


def _token_lengths(lm, texts, max_length) -> list:
    """Token count of each text (after truncation to ``max_length``)."""
    from ..models.capture import check_texts

    texts = check_texts(texts)
    kw = {"truncation": True, "max_length": int(max_length)} if max_length else {}
    enc = lm.tokenizer(texts, **kw)
    if "attention_mask" in enc:
        return [int(sum(m)) for m in enc["attention_mask"]]
    return [len(ids) for ids in enc["input_ids"]]


def head_distances(model, texts, *, batch_size: Optional[int] = None, max_length: Optional[int] = None,
                   eps: float = JS_SMOOTHING) -> np.ndarray:
    """Distances between every pair of attention heads (Clark et al. 2019).

    For each example, every head's attention rows over the real tokens are smoothed
    (``eps / n + (1 - eps) * p``, :data:`JS_SMOOTHING`) and the Jensen-Shannon divergence
    (natural log) between two heads' rows is summed over query rows; the sums are averaged over
    examples. Padding never enters.

    Parameters
    ----------
    model : LoadedModel
    texts : list of str
    batch_size : texts per forward pass (default None: batches by a token budget, texts sorted by
        length; see :meth:`LoadedModel.capture`)
    max_length : truncate texts to this many tokens
    eps : smoothing

    Returns
    -------
    (n_layers * n_heads, n_layers * n_heads) float64 array, symmetric with a zero diagonal;
    head ``(layer, head)`` is row ``layer * n_heads + head``.

    Examples
    --------
    >>> D = mri_widgets.head_distances(lm, ["The cat sat on the mat.", "Paris is in France."])
    >>> xy = mri_widgets.analysis.heads.classical_mds(D, squared=True)
    """
    return head_stats(model, texts, batch_size=batch_size, max_length=max_length, eps=eps).distances


def head_scores(model, texts, *, batch_size: Optional[int] = None, max_length: Optional[int] = None) -> dict:
    """Per-head scores: mean attention entropy and attention to the previous / first / same token.

    Returns
    -------
    dict ``entropy``, ``previous``, ``first``, ``self`` -> (n_layers, n_heads) arrays, means over
    the query rows 1..n-1 of every text.
    """
    return head_stats(model, texts, batch_size=batch_size, max_length=max_length).scores

