"""Dataset-scale scan of MLP neurons: strongest examples, statistics, and direct logit effects.

A neuron's activation is the value its MLP feeds to the output projection (capture site
``"mlp"``): ``act(x W_in)`` for a plain MLP, ``act(gate) * up`` for a gated (SwiGLU) one.

:class:`NeuronScan` streams a corpus through the model once and keeps, for every
(layer, neuron), the ``k`` texts whose maximum activation is highest and the ``k`` texts whose
minimum is lowest, plus mergeable statistics. Memory is O(layers x neurons x k) whatever the
corpus size, scans of shards merge exactly (:meth:`NeuronScan.merge`), and files load without
executing anything (npz without pickle).

:func:`neuron_logit_effect` reads which output tokens a neuron's write direction promotes and
suppresses through the final norm and the unembedding.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
import torch

from .._checks import check_bool, check_int

__all__ = [
    "NeuronScan",
    "NeuronScanError",
    "neuron_logit_effect",
    "neuron_output_logits",
    "HIST_EDGES",
    "SIGN_CASES",
]

#: Identifies a saved scan (stored in the file's metadata) and the layout version.
FORMAT = "mri_widgets.NeuronScan"
VERSION = 1

# ---- histogram bins ---------------------------------------------------------------------------
# Fixed, data-independent bins so that histograms of shards add up: one bin per octave of
# magnitude on each side of zero. A value with |x| in [2**e, 2**(e+1)) for HIST_LO <= e < HIST_HI
# goes to its octave bin (sign kept); |x| < 2**HIST_LO (zero included) goes to the central bin;
# |x| >= 2**HIST_HI to the open-ended outer bins. The octave is read from the float's exponent
# bits, which is much cheaper than a search over bin edges.
HIST_LO = -10  # 2**-10 ~ 0.001
HIST_HI = 7  # 2**7 = 128
_N_SIDE = HIST_HI - HIST_LO + 1  # octave bins + the outer bin, per sign
N_BINS = 2 * _N_SIDE + 1
_CENTER = _N_SIDE
#: The N_BINS + 1 bin edges, from -inf to +inf (the central bin is [-2**HIST_LO, 2**HIST_LO)).
HIST_EDGES = np.array(
    [-np.inf] + [-(2.0 ** e) for e in range(HIST_HI, HIST_LO - 1, -1)]
    + [2.0 ** e for e in range(HIST_LO, HIST_HI + 1)] + [np.inf], dtype=np.float64)


def _exponent_lut() -> torch.Tensor:
    """Map ``float32_bits >> 23`` (sign and biased exponent, in [-256, 255]) to a bin index.

    Index with negative numbers wraps around, so entry ``256 + e`` serves negative values.
    """
    lut = torch.empty(512, dtype=torch.int32)
    for e in range(256):
        octave = e - 127
        if octave < HIST_LO:
            off = 0
        elif octave >= HIST_HI:
            off = _N_SIDE
        else:
            off = octave - HIST_LO + 1
        lut[e] = _CENTER + off
        lut[256 + e] = _CENTER - off
    return lut


#: The four sign cases of (gate pre-activation, up projection) of a gated MLP.
SIGN_CASES = ("gate+ up+", "gate+ up-", "gate- up+", "gate- up-")
_CASE_DOC = "'+' means > 0 and '-' means <= 0"


class NeuronScanError(ValueError):
    """Bad input to a neuron scan, or a file that is not a saved scan."""


# ---- the streaming reducer ----------------------------------------------------------------------
_EMPTY = torch.iinfo(torch.int64).min  # key of an empty slot: below every real key
_TEXT_MASK = 0x7FFFFFFF


def _order_key(values: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """int64 keys whose order is (value descending, then text index ascending), for float32 values.

    The float's bits, flipped for negatives, sort like the float (``-0.0`` is made ``+0.0``
    first); the text index goes in the low 32 bits, reversed so that lower indices rank higher.
    One ``topk`` over such unique keys gives the exact, deterministic top-k.
    """
    bits = (values.float() + 0.0).view(torch.int32)
    ordered = bits ^ ((bits >> 31) & _TEXT_MASK)
    return (ordered.to(torch.int64) << 32) | (_TEXT_MASK - texts.to(torch.int64))


def _decode_key(keys: torch.Tensor):
    """Values (float32) and text indices (int64, -1 for empty slots) of :func:`_order_key` keys."""
    ordered = (keys >> 32).to(torch.int32)
    bits = ordered ^ ((ordered >> 31) & _TEXT_MASK)
    values = bits.view(torch.float32)
    texts = _TEXT_MASK - (keys & 0xFFFFFFFF)
    empty = keys == _EMPTY
    return values.masked_fill(empty, math.nan), texts.masked_fill(empty, -1)


def _count(m: torch.Tensor) -> torch.Tensor:
    """Per (layer, neuron) count of a (b, L, seq, d) mask (bool or 0/1 float), as int64.

    Bool masks are summed as float32 (exact below 2**24 per batch): summing bools directly
    converts the whole mask to int64 first, which is several times slower.
    """
    if m.dtype == torch.bool:
        m = m.float()
    return m.sum(2, dtype=torch.float32).sum(0).round_().to(torch.int64)


class _Reducer:
    """Running top-k / bottom-k and statistics, kept on the model's device.

    Per batch: the maximum (minimum) of each text over its real tokens, with its position,
    becomes one candidate per (layer, neuron). Candidates carry an int64 key that orders them by
    value and then by lower text index (:func:`_order_key`); one ``topk`` over the running
    ``k`` keys and the batch's keys gives the new lists, exactly and deterministically (the
    bottom list uses the keys of the negated values). Reductions run over the sequence axis first
    (``sum(2).sum(0)``), which is much faster than reducing two strided axes at once.
    """

    def __init__(self, n_layers: int, d_mlp: int, k: int, gated: bool, device):
        self.k, self.gated, self.device = k, gated, device
        L, d = n_layers, d_mlp
        acc = torch.float32 if torch.device(device).type == "mps" else torch.float64
        self.top_key = torch.full((L, d, k), _EMPTY, dtype=torch.int64, device=device)
        self.top_p = torch.full((L, d, k), -1, dtype=torch.int32, device=device)
        self.bot_key = torch.full((L, d, k), _EMPTY, dtype=torch.int64, device=device)
        self.bot_p = torch.full((L, d, k), -1, dtype=torch.int32, device=device)
        self.n_pos = torch.zeros((L, d), dtype=torch.int64, device=device)
        self.act_sum = torch.zeros((L, d), dtype=acc, device=device)
        self.hist = torch.zeros((L * d * N_BINS,), dtype=torch.int64, device=device)
        self.case_n = torch.zeros((L, d, 4), dtype=torch.int64, device=device)
        self.case_sum = torch.zeros((L, d, 4), dtype=acc, device=device)
        self.n_tokens = 0
        self.n_texts = 0
        self.lut = _exponent_lut().to(device)
        self.bin_offset = (torch.arange(L * d, dtype=torch.int32, device=device) * N_BINS).view(L, 1, d)
        self._buf = None  # scratch reused by every batch (see _work)

    def __call__(self, batch) -> None:
        with torch.inference_mode():  # the capture's tensors are inference tensors: update in place
            self._update(batch)

    def _work(self, shape, n: int) -> list:
        """``n`` float32 scratch tensors of ``shape``, reused from batch to batch.

        Writing into memory that is already mapped is several times faster than allocating a
        fresh tensor of the batch's size for each intermediate result. Batches formed by a token
        budget come largest first, so the buffer is allocated once."""
        numel = math.prod(shape)
        if self._buf is None or self._buf.shape[0] < n or self._buf.shape[1] < numel:
            self._buf = None  # free the old one first
            self._buf = torch.empty((n, numel), dtype=torch.float32, device=self.device)
        return [self._buf[i, :numel].view(shape) for i in range(n)]

    def _update(self, batch) -> None:
        x = batch.acts["mlp"]  # (b, L, seq, d), padding zeroed
        mask = batch.mask  # (b, seq)
        b, seq = mask.shape
        # lengths from the token strings (on the host: no device sync), else from the mask
        lengths = [len(t) for t in batch.tokens] if len(batch.tokens) == b else mask.sum(1).tolist()
        n_real = sum(lengths)
        self.n_tokens += n_real
        self.n_texts += b
        work = self._work(x.shape, 3 if self.gated else 2)

        # statistics over real tokens: padding holds exact zeros, which add nothing to sums or
        # to the count of positive values, and fall into the central histogram bin (corrected).
        s_all = x.sum(2, dtype=torch.float32).sum(0)
        self.act_sum += s_all.to(self.act_sum.dtype)
        self._histogram(x, b * seq - n_real, work[0], work[1])
        self.n_pos += _count(torch.gt(x, 0, out=work[0]))
        if self.gated:
            self._sign_cases(x, batch.acts["mlp_gate"], batch.acts["mlp_up"], n_real, s_all, work)

        # one candidate per text: its max (min) over its real tokens and where it is
        # fill the padding in place (no copy of the batch), then zero it again; row by row, so that
        # only the padding is written (texts in a batch have similar lengths: little padding)
        padded = [(r, n) for r, n in enumerate(lengths) if n < seq]
        for r, n in padded:
            x[r, :, n:].fill_(-math.inf)
        vmax, pmax = x.max(dim=2)  # (b, L, d)
        for r, n in padded:
            x[r, :, n:].fill_(math.inf)
        vmin, pmin = x.min(dim=2)
        for r, n in padded:
            x[r, :, n:].zero_()
        # each row's index in the whole text list (rows of a batch formed by a token budget are
        # not consecutive texts)
        texts = torch.as_tensor(batch.indices, dtype=torch.int64).to(x.device).view(b, 1, 1)
        self.top_key, self.top_p = self._merge(self.top_key, self.top_p, _order_key(vmax, texts), pmax)
        self.bot_key, self.bot_p = self._merge(self.bot_key, self.bot_p, _order_key(-vmin.float(), texts), pmin)

    def _merge(self, run_key, run_p, new_key, new_p):
        """Keep the k largest keys of the running lists (L, d, k) and a batch's (b, L, d)."""
        keys = torch.cat([run_key, new_key.permute(1, 2, 0)], dim=-1)
        pos = torch.cat([run_p, new_p.permute(1, 2, 0).to(run_p.dtype)], dim=-1)
        top = torch.topk(keys, self.k, dim=-1, sorted=True)
        return top.values, pos.gather(-1, top.indices)

    def _histogram(self, x: torch.Tensor, n_pad: int, work_a=None, work_b=None) -> None:
        """Add a batch to the histograms; ``work_a``, ``work_b``: float32 scratch of ``x``'s shape."""
        if work_a is None or work_b is None:
            work_a, work_b = self._work(x.shape, 2)
        code = work_a.view(torch.int32)  # sign and biased exponent, in [-256, 255]
        if x.dtype == torch.bfloat16:  # bf16 shares float32's sign and exponent bits
            code.copy_(x.view(torch.int16))
            code.bitwise_right_shift_(7)
        else:
            torch.bitwise_right_shift((x if x.dtype == torch.float32 else x.float()).view(torch.int32), 23, out=code)
        code.bitwise_and_(511)  # negative codes wrap to the LUT's second half (two's complement)
        idx = work_b.view(torch.int32)
        torch.index_select(self.lut, 0, code.view(-1), out=idx.view(-1))
        idx += self.bin_offset  # (b, L, seq, d) + (L, 1, d)
        self.hist += torch.bincount(idx.view(-1), minlength=self.hist.numel())
        if n_pad:  # padding zeros were counted in each neuron's central bin
            self.hist.view(-1, N_BINS)[:, _CENTER] -= n_pad

    def _sign_cases(self, x, gate, up, n_real: int, s_all, work) -> None:
        g, u, tmp = work  # float masks written into scratch: counting and masked sums need no conversions
        torch.gt(gate, 0, out=g)
        torch.gt(up, 0, out=u)
        total = lambda m: torch.mul(x, m, out=tmp).sum(2, dtype=torch.float32).sum(0)  # noqa: E731
        n_g, n_u = _count(g), _count(u)
        s_g, s_u = total(g), total(u)
        gu = g.mul_(u)
        n_gu, s_gu = _count(gu), total(gu)
        # padding (gate = up = 0) is in no counted case; the last case is the rest of the real tokens
        n = torch.stack([n_gu, n_g - n_gu, n_u - n_gu], -1)
        self.case_n[..., :3] += n
        self.case_n[..., 3] += n_real - n.sum(-1)
        s = torch.stack([s_gu, s_g - s_gu, s_u - s_gu, s_all - s_g - s_u + s_gu], -1)
        self.case_sum += s.to(self.case_sum.dtype)

    def result(self) -> dict:
        cpu = lambda t: t.detach().cpu()  # noqa: E731
        L, d = self.n_pos.shape
        top_v, top_t = _decode_key(cpu(self.top_key))
        bot_v, bot_t = _decode_key(cpu(self.bot_key))
        top_v = top_v.masked_fill(top_t < 0, -math.inf)
        bot_v = (-bot_v).masked_fill(bot_t < 0, math.inf)
        return dict(
            top_values=top_v.numpy(), top_texts=top_t.numpy(), top_positions=cpu(self.top_p).numpy(),
            bottom_values=bot_v.numpy(), bottom_texts=bot_t.numpy(), bottom_positions=cpu(self.bot_p).numpy(),
            n_positive=cpu(self.n_pos).numpy(), act_sum=cpu(self.act_sum).double().numpy(),
            hist=cpu(self.hist).reshape(L, d, N_BINS).numpy(),
            case_counts=cpu(self.case_n).numpy(), case_sums=cpu(self.case_sum).double().numpy(),
            n_tokens=int(self.n_tokens),
        )


def _merge_k_np(va, ta, pa, vb, tb, pb, k: int, *, descending: bool):
    """Merge two finished (L, d, k) lists, b's texts coming after a's.

    A stable sort by value keeps a's entries before b's on ties and each list's own
    (value, text index) order, so the result is ordered by value, then lower text index.
    """
    v = np.concatenate([va, vb], -1)
    t = np.concatenate([ta, tb], -1)
    p = np.concatenate([pa, pb], -1)
    order = np.argsort(-v if descending else v, axis=-1, kind="stable")[..., :k]
    return (np.take_along_axis(v, order, -1), np.take_along_axis(t, order, -1),
            np.take_along_axis(p, order, -1))


def _texts_of(texts) -> list:
    """Accept a list of strings or a :class:`~mri_widgets.Corpus` (its ``.texts``)."""
    if texts is not None and not isinstance(texts, str) and hasattr(texts, "texts") and hasattr(texts, "labels"):
        return list(texts.texts)
    return texts


_ARRAYS = {  # name -> (dtype, shape in terms of L, d, k)
    "top_values": (np.float32, "Ldk"), "top_texts": (np.int64, "Ldk"), "top_positions": (np.int32, "Ldk"),
    "bottom_values": (np.float32, "Ldk"), "bottom_texts": (np.int64, "Ldk"),
    "bottom_positions": (np.int32, "Ldk"),
    "n_positive": (np.int64, "Ld"), "act_sum": (np.float64, "Ld"), "hist": (np.int64, "LdB"),
    "case_counts": (np.int64, "Ld4"), "case_sums": (np.float64, "Ld4"),
}


#: bytes per (layer, neuron, slot) of the top and bottom lists while scanning: the running int64
#: keys and int32 positions of both lists, one merge's concatenation and topk, and the finished
#: float32 values, int64 texts and int32 positions of both lists. Measured on CPU: 62 bytes
#: (peak RSS growth of 3.83 GiB for 2 layers x 1536 neurons x k=20,000).
_SLOT_BYTES = 64
#: the largest example-list memory :meth:`NeuronScan.run` starts (change it to allow more).
MAX_LIST_BYTES = 8 * 2**30


def scan_list_bytes(n_layers: int, d_mlp: int, k: int) -> int:
    """Estimated peak bytes of a scan's top and bottom example lists (``k`` slots per neuron)."""
    return int(n_layers) * int(d_mlp) * int(k) * _SLOT_BYTES


def _max_k(n_layers: int, d_mlp: int) -> int:
    return max(1, MAX_LIST_BYTES // (max(1, n_layers * d_mlp) * _SLOT_BYTES))


# ---- the scan -----------------------------------------------------------------------------------
class NeuronScan:
    """The strongest examples and statistics of every MLP neuron over a corpus.

    Build one with :meth:`run`, combine shards with :meth:`merge`, store with :meth:`save` and
    :meth:`load`. Look up one neuron with :meth:`top`, :meth:`bottom` and :meth:`stats`; view it
    with :class:`mri_widgets.NeuronViewer`.

    Attributes
    ----------
    layers : list of int
        The scanned layers (model layer indices); arrays are indexed in this order.
    d_mlp, k : int
        Neurons per layer and examples kept per list.
    n_texts, n_tokens : int
        Texts and real tokens scanned.
    gated : bool
        Whether the MLP is gated (then the sign-case statistics exist).
    model_name : str or None
    max_length : int or None
        Truncation used for the scan (the viewer re-tokenises examples the same way).
    texts : list of str or None
        The corpus, when kept (``keep_texts=True``); the viewer needs it to show examples.
    top_values, top_texts, top_positions : arrays of shape (n_layers, d_mlp, k)
        Per neuron, the k texts with the highest maximum activation, strongest first (ties: lower
        text index first); empty slots (fewer than k texts) hold -inf and index -1.
    bottom_values, bottom_texts, bottom_positions : same for the lowest minimum.
    n_positive : (n_layers, d_mlp) int64, tokens with activation > 0.
    act_sum : (n_layers, d_mlp) float64, sum of activations over tokens.
    hist : (n_layers, d_mlp, N_BINS) int64, token counts per bin of :data:`HIST_EDGES`.
    case_counts, case_sums : (n_layers, d_mlp, 4), gated MLPs only: tokens in each
        :data:`SIGN_CASES` case of (gate pre-activation, up projection), and the sum of the
        activation over them ('+' is > 0, '-' is <= 0). Zeros for non-gated MLPs.
    """

    def __init__(self, *, layers, d_mlp, k, n_texts, n_tokens, gated, arrays: dict,
                 model_name=None, max_length=None, texts=None, n_model_layers=None):
        self.layers = [int(l) for l in layers]
        self.d_mlp, self.k = int(d_mlp), int(k)
        self.n_texts, self.n_tokens = int(n_texts), int(n_tokens)
        self.gated = bool(gated)
        self.model_name = model_name
        self.max_length = None if max_length is None else int(max_length)
        self.n_model_layers = None if n_model_layers is None else int(n_model_layers)
        self.texts = None if texts is None else list(texts)
        if self.texts is not None and len(self.texts) != self.n_texts:
            raise NeuronScanError(f"got {len(self.texts)} texts for a scan of {self.n_texts} texts")
        L, d, k = len(self.layers), self.d_mlp, self.k
        dims = {"L": L, "d": d, "k": k, "B": N_BINS, "4": 4}
        for name, (dtype, shape) in _ARRAYS.items():
            if name not in arrays:
                raise NeuronScanError(f"missing array {name!r}")
            a = np.asarray(arrays[name])
            want = tuple(dims[c] for c in shape)
            if a.shape != want:
                raise NeuronScanError(f"array {name!r} has shape {a.shape}, expected {want}")
            setattr(self, name, a.astype(dtype, copy=False))
        self._index = {l: i for i, l in enumerate(self.layers)}

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def run(cls, model, texts, *, k: int = 16, layers=None, batch_size: Optional[int] = None,
            max_length: Optional[int] = None, keep_texts: bool = True,
            progress: Optional[bool] = None, batch_tokens: Optional[int] = None) -> "NeuronScan":
        """Scan ``texts`` with ``model`` in one streaming pass.

        Parameters
        ----------
        model : LoadedModel (or anything :func:`mri_widgets.load` accepts)
        texts : list of str or Corpus
        k : examples kept per neuron in each of the top and bottom lists.
        layers : int or list of int, optional
            Layers to scan (default: all).
        batch_size : texts per forward pass; default None: batches by a token budget, texts sorted
            by length (see :meth:`LoadedModel.capture`). Results do not depend on the batching.
        max_length : truncate texts to this many tokens (default: error for too-long texts).
        keep_texts : store the texts in the scan (needed by the viewer unless you pass them to it).
        progress : show a progress bar (default: when there is more than one batch).
        batch_tokens : with ``batch_size=None``, the most tokens (padding included) per batch, in
            place of the default memory budget (see :meth:`LoadedModel.capture`).

        Returns
        -------
        NeuronScan

        Examples
        --------
        >>> scan = NeuronScan.run(lm, corpus.texts, k=16, layers=[3, 4])   # doctest: +SKIP
        >>> scan.top(3, 17)[:2]                                             # doctest: +SKIP
        [(2.91, 120, 7), (2.55, 14, 3)]
        """
        from ..models.loading import load

        lm = load(model)
        texts = _texts_of(texts)
        if isinstance(texts, str):
            raise NeuronScanError("texts is a single string: pass a list of texts, e.g. [text]")
        k = check_int(k, "k", min=1, error=NeuronScanError, hint=" (k is a positive integer: examples kept per neuron, e.g. 16)")
        keep_texts = check_bool(keep_texts, "keep_texts")
        from ..models.capture import check_capture_args, check_texts, normalise_layers

        texts = check_texts(texts)
        batch_size, max_length, progress = check_capture_args(batch_size, max_length, progress)
        layer_list = normalise_layers(lm.adapter, ["mlp"], layers)["mlp"]
        if len(set(layer_list)) != len(layer_list):
            raise NeuronScanError(f"layers has duplicates: {layer_list}")
        need = scan_list_bytes(len(layer_list), lm.d_mlp, k)
        if need > MAX_LIST_BYTES:
            raise NeuronScanError(
                f"k={k} over {len(layer_list)} layers of {lm.d_mlp} neurons needs about {need / 2**30:.1f} GiB "
                f"for the example lists ({len(layer_list)} x {lm.d_mlp} x {k} slots x {_SLOT_BYTES} bytes), more "
                f"than the limit MAX_LIST_BYTES = {MAX_LIST_BYTES / 2**30:.0f} GiB. Lower k (the corpus has "
                f"{len(texts)} texts; k <= {_max_k(len(layer_list), lm.d_mlp)} fits), scan fewer layers "
                "(layers=[...]) or raise mri_widgets.analysis.neurons.MAX_LIST_BYTES.")
        sites = ["mlp"] + (["mlp_gate", "mlp_up"] if lm.gated else [])
        red = _Reducer(len(layer_list), lm.d_mlp, k, lm.gated, lm.device)
        lm.capture(texts, sites, reducer=red, layers=layer_list, batch_size=batch_size,
                   max_length=max_length, progress=progress, batch_tokens=batch_tokens)
        arrays = red.result()
        n_tokens = arrays.pop("n_tokens")
        return cls(layers=layer_list, d_mlp=lm.d_mlp, k=k, n_texts=len(texts), n_tokens=n_tokens,
                   gated=lm.gated, arrays=arrays, model_name=lm.name, max_length=max_length,
                   texts=texts if keep_texts else None, n_model_layers=lm.n_layers)

    @classmethod
    def merge(cls, a: "NeuronScan", b: "NeuronScan") -> "NeuronScan":
        """Combine scans of two shards of a corpus: equals one scan of ``a``'s texts then ``b``'s.

        ``b``'s text indices are shifted by ``a.n_texts``. Top and bottom lists are exactly those
        of the whole scan (same tie-break: lower text index first); counts and histograms add up;
        sums agree up to floating-point rounding.
        """
        for s, name in ((a, "a"), (b, "b")):
            if not isinstance(s, NeuronScan):
                raise TypeError(f"{name} must be a NeuronScan, got {type(s).__name__}")
        for attr in ("layers", "d_mlp", "k", "gated", "max_length"):
            if getattr(a, attr) != getattr(b, attr):
                raise NeuronScanError(
                    f"cannot merge scans with different {attr}: {getattr(a, attr)!r} vs {getattr(b, attr)!r}; "
                    "scan every shard with the same model and settings")
        if a.model_name and b.model_name and a.model_name != b.model_name:
            raise NeuronScanError(f"cannot merge scans of different models: {a.model_name!r} vs {b.model_name!r}")
        arrays = {}
        shift = lambda t: np.where(t >= 0, t + a.n_texts, t)  # noqa: E731
        for side, desc in (("top", True), ("bottom", False)):
            v, t, p = _merge_k_np(
                getattr(a, f"{side}_values"), getattr(a, f"{side}_texts"), getattr(a, f"{side}_positions"),
                getattr(b, f"{side}_values"), shift(getattr(b, f"{side}_texts")), getattr(b, f"{side}_positions"),
                a.k, descending=desc)
            arrays.update({f"{side}_values": v, f"{side}_texts": t, f"{side}_positions": p})
        for name in ("n_positive", "act_sum", "hist", "case_counts", "case_sums"):
            arrays[name] = getattr(a, name) + getattr(b, name)
        texts = a.texts + b.texts if a.texts is not None and b.texts is not None else None
        return cls(layers=a.layers, d_mlp=a.d_mlp, k=a.k, n_texts=a.n_texts + b.n_texts,
                   n_tokens=a.n_tokens + b.n_tokens, gated=a.gated, arrays=arrays,
                   model_name=a.model_name or b.model_name, max_length=a.max_length, texts=texts,
                   n_model_layers=a.n_model_layers or b.n_model_layers)

    # ---- lookup -----------------------------------------------------------------------------
    def _li(self, layer, neuron) -> tuple[int, int]:
        try:
            layer, neuron = int(layer), int(neuron)
        except (TypeError, ValueError):
            raise TypeError(f"layer and neuron must be integers, got {layer!r}, {neuron!r}") from None
        if layer not in self._index:
            raise NeuronScanError(f"layer {layer} was not scanned; scanned layers: {self.layers}")
        if not 0 <= neuron < self.d_mlp:
            raise IndexError(f"neuron {neuron} is out of range: layers have {self.d_mlp} neurons (0..{self.d_mlp - 1})")
        return self._index[layer], neuron

    def _list(self, side: str, layer, neuron) -> list:
        i, n = self._li(layer, neuron)
        v = getattr(self, f"{side}_values")[i, n]
        t = getattr(self, f"{side}_texts")[i, n]
        p = getattr(self, f"{side}_positions")[i, n]
        return [(float(a), int(b), int(c)) for a, b, c in zip(v, t, p) if b >= 0]

    def top(self, layer: int, neuron: int) -> list:
        """The texts where the neuron's maximum is highest: ``[(value, text_index, position), ...]``,
        strongest first (ties: lower text index first)."""
        return self._list("top", layer, neuron)

    def bottom(self, layer: int, neuron: int) -> list:
        """The texts where the neuron's minimum is lowest: ``[(value, text_index, position), ...]``,
        most negative first."""
        return self._list("bottom", layer, neuron)

    def to_pandas(self, layer: int):
        """One scanned layer's examples in long format: a ``pandas.DataFrame``, one row per kept example.

        Columns: ``layer``, ``neuron``, ``list`` (``"top"``: highest maxima, ``"bottom"``: lowest
        minima), ``rank`` (0 = strongest), ``value`` (the text's max / min activation),
        ``text_index``, ``position`` (the token where it is reached) and, when the scan kept its
        texts, ``text``. Per neuron: ``mean`` and ``freq_positive`` (over all scanned tokens).
        Empty slots (fewer than ``k`` texts) are left out.
        """
        import pandas as pd

        i, _ = self._li(layer, 0)
        frames = []
        N = max(self.n_tokens, 1)
        for side in ("top", "bottom"):
            vals = getattr(self, f"{side}_values")[i]
            texts = getattr(self, f"{side}_texts")[i]
            pos = getattr(self, f"{side}_positions")[i]
            n, r = np.nonzero(texts >= 0)
            df = pd.DataFrame({"layer": np.full(len(n), int(layer), np.int64), "neuron": n.astype(np.int64),
                               "list": side, "rank": r.astype(np.int64), "value": vals[n, r],
                               "text_index": texts[n, r].astype(np.int64), "position": pos[n, r].astype(np.int64)})
            if self.texts is not None:
                df["text"] = np.asarray(self.texts, dtype=object)[df["text_index"].to_numpy()]
            df["mean"] = (self.act_sum[i] / N)[n]
            df["freq_positive"] = (self.n_positive[i] / N)[n]
            frames.append(df)
        return pd.concat(frames, ignore_index=True).sort_values(["neuron", "list", "rank"], ascending=[True, False, True],
                                                                 ignore_index=True)

    def stats(self, layer: int, neuron: int) -> dict:
        """Statistics of one neuron over all scanned tokens.

        Returns
        -------
        dict
            ``n_texts``, ``n_tokens``, ``max``, ``min``, ``mean``, ``freq_positive`` (fraction of
            tokens with activation > 0), ``hist_counts`` (list, one count per bin) and
            ``hist_edges`` (list of N_BINS + 1 edges, -inf and inf at the ends); for gated MLPs
            ``cases``: one dict per :data:`SIGN_CASES` entry with ``name``, ``freq`` (fraction of
            tokens) and ``mean`` (mean activation over those tokens, None when there are none).
        """
        i, n = self._li(layer, neuron)
        N = max(self.n_tokens, 1)
        top, bot = self.top_values[i, n, 0], self.bottom_values[i, n, 0]
        out = {
            "layer": int(layer), "neuron": int(neuron),
            "n_texts": self.n_texts, "n_tokens": self.n_tokens,
            "max": float(top) if np.isfinite(top) else None,
            "min": float(bot) if np.isfinite(bot) else None,
            "mean": float(self.act_sum[i, n] / N),
            "freq_positive": float(self.n_positive[i, n] / N),
            "hist_counts": self.hist[i, n].tolist(),
            "hist_edges": HIST_EDGES.tolist(),
        }
        if self.gated:
            cn, cs = self.case_counts[i, n], self.case_sums[i, n]
            out["cases"] = [{"name": name, "freq": float(c / N), "mean": float(s / c) if c else None}
                            for name, c, s in zip(SIGN_CASES, cn, cs)]
        return out

    def plot_distribution(self, layer=None, neuron=None, selection=None, **kwargs):
        """A bqplot bar chart of one neuron's activation histogram (:attr:`hist` over :data:`HIST_EDGES`).

        Returns a :class:`mri_widgets.NeuronHistogram` that follows ``selection`` (``layer``,
        ``neuron``); needs bqplot (``pip install "mri_widgets[charts]"``).
        """
        from ..widgets.charts import NeuronHistogram

        return NeuronHistogram(self, selection, layer=layer, neuron=neuron, **kwargs)

    @property
    def freq_positive(self) -> np.ndarray:
        """(n_layers, d_mlp): fraction of tokens where each neuron is > 0."""
        return self.n_positive / max(self.n_tokens, 1)

    @property
    def mean(self) -> np.ndarray:
        """(n_layers, d_mlp): mean activation of each neuron over all tokens."""
        return self.act_sum / max(self.n_tokens, 1)

    def __repr__(self) -> str:
        return (f"NeuronScan({self.model_name!r}, layers={self.layers}, d_mlp={self.d_mlp}, k={self.k}, "
                f"n_texts={self.n_texts}, n_tokens={self.n_tokens}, gated={self.gated}, "
                f"texts={'kept' if self.texts is not None else 'not kept'})")

    # ---- files --------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the scan to ``path`` (a ``.npz`` file: arrays plus JSON metadata, no pickle).

        The texts, when kept, are stored as UTF-8 bytes with offsets.
        """
        meta = {"format": FORMAT, "version": VERSION, "layers": self.layers, "d_mlp": self.d_mlp,
                "k": self.k, "n_texts": self.n_texts, "n_tokens": self.n_tokens, "gated": self.gated,
                "model_name": self.model_name, "max_length": self.max_length,
                "n_model_layers": self.n_model_layers, "hist_edges": [str(e) for e in HIST_EDGES],
                "has_texts": self.texts is not None}
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        if self.texts is not None:
            enc = [t.encode("utf-8") for t in self.texts]
            arrays["texts_utf8"] = np.frombuffer(b"".join(enc), dtype=np.uint8)
            arrays["texts_offsets"] = np.cumsum([0] + [len(e) for e in enc]).astype(np.int64)
        path = os.fspath(path)
        with open(path, "wb") as f:  # a file object: numpy does not append ".npz" to the name
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path) -> "NeuronScan":
        """Read a scan written by :meth:`save`. Nothing in the file is executed (no pickle).

        The file is treated as untrusted: the metadata is read first; only the members a scan has
        are accepted; each member's ``.npy`` header (dtype, shape) is checked against the
        metadata, and its declared size against the expected size, before any of its data is
        decompressed, so memory stays bounded by the scan the metadata describes. Text offsets
        must rise from 0 to the end of the text bytes, the texts must be UTF-8, and every text
        index in the example lists must name a text of the scan. Any malformed file raises
        :class:`NeuronScanError`; the file is closed in every case.
        """
        import zipfile

        path = os.fspath(path)
        not_scan = f"{path!r} is not a NeuronScan file (write one with NeuronScan.save)"
        zf = open_npz(path, not_scan, NeuronScanError)
        with zf:
            try:
                return cls._load_members(zf, path, not_scan)
            except NeuronScanError:
                raise
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
                    TypeError, OverflowError, NotImplementedError, RuntimeError) as e:  # zlib.error is an Exception
                raise NeuronScanError(f"{not_scan}: {type(e).__name__}: {e}") from None
            except Exception as e:  # zlib.error and other decoder failures
                raise NeuronScanError(f"{not_scan}: {type(e).__name__}: {e}") from None

    @classmethod
    def _load_members(cls, zf, path: str, not_scan: str) -> "NeuronScan":
        allowed = set(_ARRAYS) | {"meta", "texts_utf8", "texts_offsets"}
        infos = {}
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy") or name[:-4] not in allowed:
                raise NeuronScanError(f"{not_scan}: unexpected member {name!r}; a scan holds only "
                                      f"{sorted(n + '.npy' for n in allowed)}")
            if name[:-4] in infos:
                raise NeuronScanError(f"{not_scan}: member {name!r} appears twice")
            infos[name[:-4]] = info
        if "meta" not in infos:
            raise NeuronScanError(not_scan + ": it has no scan metadata")
        meta_bytes = _read_npy(zf, infos["meta"], np.uint8, None, _META_MAX_BYTES, not_scan)
        try:
            meta = json.loads(meta_bytes.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise NeuronScanError(f"{not_scan}: unreadable metadata ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise NeuronScanError(not_scan + ": wrong format marker")
        if meta.get("version") != VERSION:
            raise NeuronScanError(f"{path!r} is a NeuronScan of format version {meta.get('version')!r}; "
                                  f"this mri_widgets reads version {VERSION}")
        edges = meta.get("hist_edges")
        try:
            same_bins = [float(e) for e in edges] == HIST_EDGES.tolist()
        except (TypeError, ValueError):
            same_bins = False
        if not same_bins:
            raise NeuronScanError(f"{path!r} uses other histogram bins than this mri_widgets")
        m = _check_meta(meta, not_scan)
        L, d, k = len(m["layers"]), m["d_mlp"], m["k"]
        dims = {"L": L, "d": d, "k": k, "B": N_BINS, "4": 4}
        if not m["has_texts"] and ({"texts_utf8", "texts_offsets"} & infos.keys()):
            raise NeuronScanError(f"{not_scan}: it holds texts but its metadata says it has none")
        data = {}
        for name, (dtype, shape) in _ARRAYS.items():
            if name not in infos:
                raise NeuronScanError(f"{not_scan}: missing array {name!r}")
            data[name] = _read_npy(zf, infos[name], dtype, tuple(dims[c] for c in shape), None, not_scan)
        n = m["n_texts"]
        for name in ("top_texts", "bottom_texts"):
            t = data[name]
            bad = (t < -1) | (t >= n)
            if bad.any():
                raise NeuronScanError(f"{not_scan}: {name} holds text index {int(t[bad].flat[0])}, but the scan "
                                      f"has {n} texts (0..{n - 1}, or -1 for an empty slot)")
        for name in ("top_positions", "bottom_positions"):
            if (data[name] < -1).any():
                raise NeuronScanError(f"{not_scan}: {name} holds a negative token position")
            if m["max_length"] is not None and (data[name] >= m["max_length"]).any():
                raise NeuronScanError(f"{not_scan}: {name} holds a token position past max_length={m['max_length']}")
        for name in ("n_positive", "hist", "case_counts"):
            if (data[name] < 0).any():
                raise NeuronScanError(f"{not_scan}: {name} holds a negative count")
        texts = None
        if m["has_texts"]:
            for name in ("texts_offsets", "texts_utf8"):
                if name not in infos:
                    raise NeuronScanError(f"{not_scan}: missing array {name!r}")
            off = _read_npy(zf, infos["texts_offsets"], np.int64, (n + 1,), None, not_scan)
            if off[0] != 0 or (np.diff(off) < 0).any():
                raise NeuronScanError(f"{not_scan}: text offsets must start at 0 and never decrease")
            blob = _read_npy(zf, infos["texts_utf8"], np.uint8, (int(off[-1]),), None, not_scan).tobytes()
            texts = []
            for i in range(n):
                try:
                    texts.append(blob[off[i]:off[i + 1]].decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise NeuronScanError(f"{not_scan}: text {i} is not UTF-8 ({e.reason} at byte {e.start})") from None
        return cls(layers=m["layers"], d_mlp=d, k=k, n_texts=n, n_tokens=m["n_tokens"], gated=m["gated"],
                   arrays=data, model_name=m["model_name"], max_length=m["max_length"], texts=texts,
                   n_model_layers=m["n_model_layers"])


#: largest metadata member accepted by :meth:`NeuronScan.load` (the JSON is a few hundred bytes).
_META_MAX_BYTES = 1 << 20


def _check_meta(meta: dict, not_scan: str) -> dict:
    """The metadata fields, type- and range-checked (NeuronScanError otherwise)."""
    def integer(name, lo, optional=False):
        v = meta.get(name)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise NeuronScanError(f"{not_scan}: metadata {name!r} must be an integer >= {lo}, got {v!r}")
        return v

    layers = meta.get("layers")
    if not isinstance(layers, list) or not layers or any(isinstance(l, bool) or not isinstance(l, int) or l < 0
                                                         for l in layers) or len(set(layers)) != len(layers):
        raise NeuronScanError(f"{not_scan}: metadata 'layers' must be a list of distinct layer indices")
    out = {"layers": layers, "d_mlp": integer("d_mlp", 1), "k": integer("k", 1), "n_texts": integer("n_texts", 0),
           "n_tokens": integer("n_tokens", 0), "max_length": integer("max_length", 1, True),
           "n_model_layers": integer("n_model_layers", 1, True)}
    for name in ("gated", "has_texts"):
        if not isinstance(meta.get(name), bool):
            raise NeuronScanError(f"{not_scan}: metadata {name!r} must be true or false, got {meta.get(name)!r}")
        out[name] = meta[name]
    name = meta.get("model_name")
    if name is not None and not isinstance(name, str):
        raise NeuronScanError(f"{not_scan}: metadata 'model_name' must be a string, got {type(name).__name__}")
    out["model_name"] = name
    return out


def open_npz(path: str, not_what: str, error: type):
    """``path`` opened as a zip archive (a ``.npz``), or FileNotFoundError / ``error(not_what: ...)``."""
    import zipfile

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise error(f"{not_what}: not a .npz (zip) archive ({e})") from None


def _read_npy(zf, info, dtype, shape, max_bytes, not_scan: str) -> np.ndarray:
    """One ``.npy`` member of an open zip, checked before its data is decompressed.

    The declared uncompressed size (``info.file_size``) is compared with what the expected
    shape and dtype need (plus the header) before the member is opened; then the header is read
    and its dtype, shape and order are checked; then exactly the expected bytes are read into a
    fresh array. ``shape=None`` accepts any 1-D array of at most ``max_bytes``.
    """
    from numpy.lib import format as npy

    want = np.dtype(dtype).newbyteorder("<")
    name = info.filename
    header_max = 1 << 16
    if shape is not None:
        nbytes = int(np.prod(shape, dtype=object)) * want.itemsize
        if info.file_size > nbytes + header_max or info.file_size < nbytes:
            raise NeuronScanError(f"{not_scan}: member {name!r} declares {info.file_size} bytes; an array of "
                                  f"shape {shape} {want.name} has {nbytes} (plus a small header)")
    elif info.file_size > max_bytes + header_max:
        raise NeuronScanError(f"{not_scan}: member {name!r} declares {info.file_size} bytes, more than "
                              f"the {max_bytes} allowed")
    with zf.open(info) as f:
        version = npy.read_magic(f)
        if version == (1, 0):
            got_shape, fortran, got_dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            got_shape, fortran, got_dtype = npy.read_array_header_2_0(f)
        else:
            raise NeuronScanError(f"{not_scan}: member {name!r} has .npy format version {version}")
        if got_dtype.hasobject or got_dtype.newbyteorder("<") != want or (
                got_dtype.byteorder not in ("<", "=", "|") and got_dtype.itemsize > 1):
            raise NeuronScanError(f"{not_scan}: member {name!r} has dtype {got_dtype}, expected {want.name}")
        if fortran and len(got_shape) > 1:
            raise NeuronScanError(f"{not_scan}: member {name!r} is in Fortran order")
        if shape is None:
            if len(got_shape) != 1:
                raise NeuronScanError(f"{not_scan}: member {name!r} has shape {got_shape}, expected 1-D")
            shape = got_shape
        elif tuple(got_shape) != tuple(shape):
            raise NeuronScanError(f"{not_scan}: array {name[:-4]!r} has shape {tuple(got_shape)}, expected {tuple(shape)}")
        nbytes = int(np.prod(shape, dtype=object)) * want.itemsize
        header = f.tell()
        if info.file_size != header + nbytes:
            raise NeuronScanError(f"{not_scan}: member {name!r} holds {info.file_size - header} data bytes, "
                                  f"expected {nbytes} for shape {tuple(shape)} {want.name}")
        out = np.empty(shape, dtype=want)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < nbytes:
            got = f.readinto(view[done:])
            if not got:
                raise NeuronScanError(f"{not_scan}: member {name!r} is truncated")
            done += got
        if f.read(1):
            raise NeuronScanError(f"{not_scan}: member {name!r} is longer than its header says")
    return out.astype(np.dtype(dtype), copy=False)


# ---- direct effect on the output ---------------------------------------------------------------
def neuron_output_logits(lm, layer: int, neurons=None) -> torch.Tensor:
    """Direct effect of neurons' output rows on the logits, through the final norm and unembedding.

    For neuron ``j`` of ``layer`` the write direction is column ``j`` of the MLP output weights
    (``W_out``, shape (d_model, d_mlp)). Its effect is ``unembed(norm(w)) - unembed(norm(0))``:
    the final norm (which rescales ``w`` to unit RMS, centres it for LayerNorm, and applies its
    gain) then the unembedding, without the norm's bias or the LM head's bias (which do not depend
    on the neuron). Values are logits per unit-RMS write; their ranking is what matters.
    Computed as ``W_U @ (norm(w) - norm(0))``, the same directions that
    :func:`neuron_logit_effect` reads through :meth:`LoadedModel.readout
    <mri_widgets.models.loading.LoadedModel.readout>` (``norm=False, bias=False``).

    Parameters
    ----------
    lm : LoadedModel
    layer : int
    neurons : int or sequence of int, optional (default: all neurons of the layer)

    Returns
    -------
    torch.Tensor
        float32 on CPU, shape (n_neurons, vocab_size).
    """
    dirs = _neuron_directions(lm, layer, neurons)
    with torch.inference_mode():
        W_U = lm.W_U.detach()
        return (dirs.to(device=W_U.device, dtype=W_U.dtype) @ W_U.T).float().cpu()


def _neuron_directions(lm, layer: int, neurons=None) -> torch.Tensor:
    """``norm(w) - norm(0)`` for the output rows ``w`` of ``neurons`` (n, d_model): the final norm
    without its bias, ready for the unembedding without its bias."""
    layer = lm.adapter.check_layer(layer)
    W = lm.adapter.W_out(layer)  # (d_model, d_mlp)
    if neurons is None:
        idx = list(range(W.shape[1]))
    else:
        idx = [neurons] if isinstance(neurons, (int, np.integer)) else list(neurons)
        for n in idx:
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
                raise TypeError(f"neuron must be an integer, got {n!r}")
            if not 0 <= n < W.shape[1]:
                raise IndexError(f"neuron {n} is out of range: layer {layer} has {W.shape[1]} neurons (0..{W.shape[1] - 1})")
    with torch.inference_mode():
        cols = W[:, idx].T.float()  # (n, d_model)
        base = lm.apply_final_norm(torch.zeros(1, W.shape[0]))
        return (lm.apply_final_norm(cols).float() - base.float())


def neuron_logit_effect(lm, layer: int, neuron: int, k: int = 10) -> dict:
    """The tokens a neuron's output row promotes and suppresses most (direct effect on logits).

    See :func:`neuron_output_logits` for how the effect is computed.

    Parameters
    ----------
    lm : LoadedModel (a causal LM: encoders have no unembedding)
    layer, neuron : int
    k : tokens in each list.

    Returns
    -------
    dict
        ``layer``, ``neuron``, ``promoted`` (list of ``(token_string, token_id, logit)``, highest
        first) and ``suppressed`` (same, lowest first).
    """
    k = check_int(k, "k", min=1, hint=" (k is a positive integer: tokens per list)")
    d = _neuron_directions(lm, layer, [neuron])
    k = min(k, lm.vocab_size)
    # the unembedding without bias is linear: the top of -d's logits is the bottom of d's
    r = lm.readout(torch.cat([d, -d]), k=k, norm=False, bias=False, progress=False)
    out = {"layer": int(lm.adapter.check_layer(layer)), "neuron": int(neuron)}
    for name, row, sign in (("promoted", 0, 1.0), ("suppressed", 1, -1.0)):
        ids = r.top_ids[row].tolist()
        out[name] = [(s, i, sign * float(v)) for s, i, v in zip(lm.token_str(ids), ids, r.top_logits[row].tolist())]
    return out
