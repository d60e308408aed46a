"""HeadMap: attention heads laid out by how similarly they attend, with their patterns on click."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np
import traitlets as t

from ..analysis.heads import SCORE_NAMES, HeadStats, head_stats
from ..models.capture import check_texts
from .base import NDArray, array_serialization, command
from .interventions import AblationControls
from .selection import Selection

__all__ = ["HeadMap", "overview_pattern", "MAX_PATTERN_TOKENS", "OVERVIEW_CELLS"]

#: longest attention pattern sent whole to the view (tokens); longer texts come as an overview
#: plus exact tiles of at most this many tokens a side (:meth:`HeadMap.pattern_tile`)
MAX_PATTERN_TOKENS = 128
#: most cells a side of the overview of a long text's pattern
OVERVIEW_CELLS = 192


def _rows(q, k, rule, head: int, q0: int, q1: int, k_end: int):
    """Rows ``q0 .. q1 - 1`` over keys ``0 .. k_end - 1`` of one head (float32 CPU tensor); with
    ``rule`` None, ``q`` is the head's captured (H, n, n) attention and ``k`` is unused."""
    import torch

    if rule is None:
        return q[head, q0:q1, :k_end].float().cpu()
    from ..models.attention import attention_rows

    with torch.inference_mode():
        return attention_rows(q[head], k[head], rule, q0, q1, k_end if rule.causal else None).cpu()


def overview_pattern(rows, n: int, cells: int = OVERVIEW_CELLS):
    """Downsampled (m, m) pattern of ``n`` tokens: block maxima of ``block`` x ``block`` pairs.

    ``rows(q0, q1, k_end)`` gives the probabilities of query rows ``q0 .. q1 - 1`` over keys
    ``0 .. k_end - 1`` (later keys are zero); they are asked for a band of rows at a time, so memory
    stays ~ ``block * n`` floats. Returns ``(overview, block)`` with ``block = ceil(n / cells)``
    and ``m = ceil(n / block)``; cell ``(i, j)`` is the largest probability of queries
    ``i * block ..`` and keys ``j * block ..`` (the maximum keeps sharp, thin patterns visible).
    """
    import torch

    block = max(1, -(-n // cells))
    m = -(-n // block)
    out = np.zeros((m, m), dtype=np.float32)
    band = block * max(1, (1 << 22) // (block * n))  # rows per band: ~4M floats
    for q0 in range(0, n, band):
        q1 = min(n, q0 + band)
        r = rows(q0, q1, n)  # (q1 - q0, <= n)
        kn = r.shape[1]
        pad_q = (-(q1 - q0)) % block
        pad_k = m * block - kn
        r = torch.nn.functional.pad(r, (0, pad_k, 0, pad_q))
        mx = r.reshape(r.shape[0] // block, block, m, block).amax(dim=(1, 3))
        out[q0 // block: q0 // block + mx.shape[0]] = mx.numpy()
    return out, block


class HeadMap(AblationControls):
    """Every attention head as a point, placed by classical MDS of the heads' distances.

    Two heads are close when they attend alike: the distance is the Jensen-Shannon divergence
    between their attention distributions summed over query rows and averaged over ``texts``
    (:func:`mri_widgets.head_distances`). Points are coloured by layer (or by a score); hovering
    shows each head's scores (attention entropy, attention to the previous token, to the first
    token, to itself). Drag a rectangle to pick heads (shift-drag adds): :attr:`picked` lists
    them as ``[layer, head]`` pairs. Clicking a head sets ``selection.layer`` and
    ``selection.head`` and shows its attention pattern on the chosen example (tokens x tokens);
    a head selected in another view is highlighted and shown too.

    Parameters
    ----------
    model : LoadedModel (or a name for :func:`mri_widgets.load`)
    texts : list of str, the examples (a handful of sentences is enough)
    selection : the shared :class:`Selection`
    batch_size, max_length : passed to the capture (default ``batch_size=None``: batches by a token budget)
    interventions : a shared :class:`~mri_widgets.Interventions`, optional: with a head selected,
        the view offers "ablate (zero)" and "ablate (mean)", which add the head's ablation to it
        (:meth:`ablate` from Python does the same)

    Attributes
    ----------
    picked : list of ``[layer, head]`` picked with the brush (settable from Python)
    example : index of the text whose attention patterns are shown
    color_by : ``"layer"`` or a score name
    stats : the :class:`~mri_widgets.analysis.heads.HeadStats` (distances, scores)
    coords : (n_layers * n_heads, 2) MDS coordinates; row ``layer * n_heads + head``
    """

    _view = "head_map"

    # ---- parameters (set from Python or in the view) ------------------------------------------
    #: ``[layer, head]`` pairs picked with the brush
    picked = t.List().tag(sync=True)
    #: index of the text whose attention patterns are shown
    example = t.Int(0).tag(sync=True)
    #: point colour: ``"layer"`` or a score name
    color_by = t.Unicode("layer").tag(sync=True)

    # ---- the data shown (set by Python only), one entry per head, row ``layer * n_heads + head`` --
    #: MDS coordinates
    x = NDArray("float32", ndim=1).tag(sync=True)
    y = NDArray("float32", ndim=1).tag(sync=True)
    #: layer and head of each point
    layer = NDArray("int32", ndim=1).tag(sync=True)
    head = NDArray("int32", ndim=1).tag(sync=True)
    #: ``{score name: float32 array}``
    scores = t.Dict().tag(sync=True, **array_serialization)
    #: score names and their descriptions (tooltips)
    score_names = t.List(t.Unicode()).tag(sync=True)
    score_help = t.List(t.Unicode()).tag(sync=True)
    n_layers = t.Int(0).tag(sync=True)
    n_heads = t.Int(0).tag(sync=True)
    n_examples = t.Int(0).tag(sync=True)
    #: a preview of each example text
    examples = t.List(t.Unicode()).tag(sync=True)
    #: name of the model
    model_name = t.Unicode("").tag(sync=True)

    def __init__(self, model, texts: Sequence[str], *, selection: Optional[Selection] = None, batch_size: Optional[int] = None,
                 max_length: Optional[int] = None, interventions=None):
        from ..models.loading import load

        self._lm = load(model)
        self._texts = check_texts(texts)
        self._max_length = max_length
        self._cache: OrderedDict = OrderedDict()
        self._overviews: OrderedDict = OrderedDict()
        self._rules = None
        self.stats: HeadStats = head_stats(self._lm, self._texts, batch_size=batch_size, max_length=max_length)
        self.coords = self.stats.embedding(2)
        super().__init__(selection=selection)
        self._connect_interventions(interventions)
        self._push_data()

    @classmethod
    def from_distances(cls, D, *, n_layers: int, n_heads: int, scores: Optional[dict] = None,
                       model_name: str = "", selection: Optional[Selection] = None) -> "HeadMap":
        """A HeadMap from head distances computed elsewhere, without a model.

        Parameters
        ----------
        D : (n_layers * n_heads, n_layers * n_heads) symmetric distances, head ``(layer, head)``
            at row ``layer * n_heads + head`` (what :func:`mri_widgets.head_distances` returns);
            placed by classical MDS as squared distances, as the model path does.
        n_layers, n_heads : the sizes.
        scores : optional ``{name: (n_layers, n_heads)}`` for every name of
            :data:`~mri_widgets.analysis.heads.SCORE_NAMES` (colour and hover); without them the
            points are coloured by layer only.
        model_name : shown in the title.

        Without a model there are no attention patterns: clicking a head still selects it, and
        the pattern panel says that the patterns need ``HeadMap(model, texts)``.
        """
        from .._checks import check_int

        L = check_int(n_layers, "n_layers", min=1)
        H = check_int(n_heads, "n_heads", min=1)
        D = np.asarray(D, dtype=np.float64)
        if D.shape != (L * H, L * H):
            raise ValueError(f"D has shape {D.shape}; expected ({L * H}, {L * H}) = (n_layers * n_heads) a side, "
                             "head (layer, head) at row layer * n_heads + head")
        if not np.isfinite(D).all():
            raise ValueError("D has NaN or infinite entries")
        if (D < 0).any():
            raise ValueError("D has negative entries; distances are >= 0")
        if not np.allclose(D, D.T, rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(D).max()))):
            raise ValueError("D is not symmetric; pass (D + D.T) / 2 if it is a one-sided estimate")
        if scores is None:
            score_dict, names = {}, ()
        else:
            if not isinstance(scores, dict) or set(scores) != set(SCORE_NAMES):
                raise ValueError(f"scores must be a dict with exactly the keys {SCORE_NAMES}, "
                                 f"got {sorted(scores) if isinstance(scores, dict) else type(scores).__name__}")
            score_dict = {}
            for k in SCORE_NAMES:
                v = np.asarray(scores[k], dtype=np.float64)
                if v.shape != (L, H):
                    raise ValueError(f"scores[{k!r}] has shape {v.shape}; expected (n_layers, n_heads) = ({L}, {H})")
                score_dict[k] = v
            names = SCORE_NAMES
        self = cls.__new__(cls)
        self._lm = None
        self._model_name = str(model_name)
        self._texts = []
        self._max_length = None
        self._cache, self._overviews, self._rules = OrderedDict(), OrderedDict(), None
        self._score_names = names
        self.stats = HeadStats(distances=D, scores=score_dict, n_layers=L, n_heads=H, n_examples=0)
        self.coords = self.stats.embedding(2)
        super(HeadMap, self).__init__(selection=selection)
        self._connect_interventions(None)
        self._push_data()
        return self

    # ---- data --------------------------------------------------------------------------------
    def _push_data(self) -> None:
        st = self.stats
        L, H = st.n_layers, st.n_heads
        names = getattr(self, "_score_names", SCORE_NAMES)
        layer = np.repeat(np.arange(L), H).astype(np.int32)
        head = np.tile(np.arange(H), L).astype(np.int32)
        self._set_data({
            "x": self.coords[:, 0].astype(np.float32),
            "y": self.coords[:, 1].astype(np.float32),
            "layer": layer,
            "head": head,
            "scores": {k: st.scores[k].reshape(-1).astype(np.float32) for k in names},
            "score_names": list(names),
            "score_help": [st.descriptions[k] for k in names],
            "n_layers": L,
            "n_heads": H,
            "n_examples": st.n_examples,
            "examples": [_preview(s) for s in self._texts],
            "model_name": str(self._lm.name) if self._lm is not None else self._model_name,
        })

    @property
    def texts(self) -> list:
        """The example texts."""
        return list(self._texts)

    def picked_heads(self) -> list:
        """The picked heads as ``(layer, head)`` tuples."""
        return [tuple(p) for p in self.picked]

    # ---- on demand ---------------------------------------------------------------------------
    @command
    def pattern(self, layer: int, head: int, example: Optional[int] = None) -> dict:
        """Attention pattern of head ``(layer, head)`` on example ``example`` (default: :attr:`example`).

        Texts of at most :data:`MAX_PATTERN_TOKENS` tokens come whole; longer ones come as an
        overview (each cell the largest probability of a block of ``block`` x ``block`` (query,
        key) pairs, at most :data:`OVERVIEW_CELLS` cells a side) whose windows the view fetches
        exactly with :meth:`pattern_tile`. Nothing of size (layers, heads, seq, seq) is computed:
        the head's rows come from its queries and keys, a block of rows at a time.

        Returns
        -------
        dict ``tokens`` (every token, str), ``n_tokens``, ``layer``, ``head``, ``example``,
        ``attn`` ((n, n) float32, rows = queries; None for a long text), ``overview``
        ((m, m) float32 block maxima; None for a short text), ``block`` (tokens per overview
        cell) and ``truncated`` (False: no text is cut).
        """
        layer, head = self._check_head(layer, head)
        ex = self.example if example is None else example
        ex = self._check_example(ex)
        tokens, q, k, rule = self._queries_keys(ex, layer)
        n = len(tokens)
        out = {"tokens": tokens, "layer": layer, "head": head, "example": ex, "n_tokens": n, "truncated": False,
               "attn": None, "overview": None, "block": 1}
        if n <= MAX_PATTERN_TOKENS:
            out["attn"] = np.ascontiguousarray(_rows(q, k, rule, head, 0, n, n).numpy(), dtype=np.float32)
            return out
        out["overview"], out["block"] = self._overview(ex, layer, head, q, k, rule)
        return out

    @command
    def pattern_tile(self, layer: int, head: int, q0: int, q1: int, k0: int, k1: int,
                     example: Optional[int] = None) -> dict:
        """The exact attention of head ``(layer, head)`` for queries ``q0 .. q1 - 1`` and keys
        ``k0 .. k1 - 1`` of example ``example`` (default: :attr:`example`): the zoomed window of a
        long text's pattern. At most :data:`MAX_PATTERN_TOKENS` a side.

        Returns
        -------
        dict ``attn`` ((q1 - q0, k1 - k0) float32, equal to that slice of the full pattern),
        ``q0``, ``q1``, ``k0``, ``k1``, ``layer``, ``head``, ``example``, ``n_tokens``.
        """
        layer, head = self._check_head(layer, head)
        ex = self.example if example is None else example
        ex = self._check_example(ex)
        tokens, q, k, rule = self._queries_keys(ex, layer)
        n = len(tokens)
        bounds = []
        for name, v in (("q0", q0), ("q1", q1), ("k0", k0), ("k1", k1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {v!r}")
            bounds.append(int(v))
        q0, q1, k0, k1 = bounds
        for a, b, what in ((q0, q1, "queries"), (k0, k1, "keys")):
            if not 0 <= a < b <= n:
                raise IndexError(f"{what} {a}..{b} out of range: the text has {n} tokens (0 <= start < end <= {n})")
            if b - a > MAX_PATTERN_TOKENS:
                raise ValueError(f"a tile spans at most {MAX_PATTERN_TOKENS} {what}, got {b - a}: ask for a smaller window")
        rows = _rows(q, k, rule, head, q0, q1, max(k1, q1) if rule is not None and rule.causal else n)
        tile = np.zeros((q1 - q0, k1 - k0), dtype=np.float32)
        kk = min(k1, rows.shape[1])
        if kk > k0:
            tile[:, : kk - k0] = rows[:, k0:kk].numpy()
        return {"attn": tile, "q0": q0, "q1": q1, "k0": k0, "k1": k1, "layer": layer, "head": head,
                "example": ex, "n_tokens": n}

    def _queries_keys(self, ex: int, layer: int):
        """Tokens, (H, n, d_head) queries and keys of one layer, and its rule (cached per example and layer)."""
        from ..models.attention import attention_rules

        if self._lm is None:
            raise ValueError("no attention patterns: this HeadMap was built from distances alone "
                             "(HeadMap.from_distances); build it with HeadMap(model, texts) to see them")

        key = (ex, layer)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if self._rules is None:
            from ..models.adapters import AdapterError
            try:
                self._rules = attention_rules(self._lm.adapter)
            except AdapterError:
                self._rules = False
        if self._rules is False:  # unknown rules: the model's own probabilities of that layer
            cap = self._lm.capture([self._texts[ex]], ("attn",), layers=[layer], max_length=self._max_length,
                                   progress=False)
            n = int(cap.mask[0].sum())
            value = (list(cap.tokens[0]), cap["attn"][0, 0, :, :n, :n], None, None)
        else:
            cap = self._lm.capture([self._texts[ex]], ("q", "k"), layers=[layer], max_length=self._max_length,
                                   progress=False)
            n = int(cap.mask[0].sum())
            value = (list(cap.tokens[0]), cap["q"][0, 0, :, :n], cap["k"][0, 0, :, :n], self._rules[layer])
        self._cache[key] = value
        while len(self._cache) > 8:
            self._cache.popitem(last=False)
        return value

    def _overview(self, ex, layer, head, q, k, rule):
        key = (ex, layer, head)
        hit = self._overviews.get(key)
        if hit is None:
            n = q.shape[1] if rule is not None else q.shape[-1]
            hit = self._overviews[key] = overview_pattern(lambda a, b, c: _rows(q, k, rule, head, a, b, c), n)
            while len(self._overviews) > 16:
                self._overviews.popitem(last=False)
        return hit

    # ---- validation --------------------------------------------------------------------------
    def _check_head(self, layer, head) -> tuple:
        L, H = self.stats.n_layers, self.stats.n_heads
        for name, v, n in (("layer", layer, L), ("head", head, H)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {v!r}")
            if not 0 <= v < n:
                raise IndexError(f"{name} {v} out of range: the model has {n} {name}s (0..{n - 1})")
        return int(layer), int(head)

    def _check_example(self, ex) -> int:
        if self._lm is None:
            raise ValueError("no attention patterns: this HeadMap was built from distances alone "
                             "(HeadMap.from_distances); build it with HeadMap(model, texts) to see them")
        if isinstance(ex, bool) or not isinstance(ex, (int, np.integer)):
            raise TypeError(f"example must be an int, got {ex!r}")
        if not 0 <= ex < len(self._texts):
            raise IndexError(f"example {ex} out of range: there are {len(self._texts)} texts (0..{len(self._texts) - 1})")
        return int(ex)

    @t.validate("picked")
    def _valid_picked(self, proposal):
        out = []
        for p in proposal["value"]:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise t.TraitError(f"picked holds [layer, head] pairs, got {p!r}")
            try:
                pair = list(self._check_head(p[0], p[1]))
            except (TypeError, IndexError) as e:
                raise t.TraitError(str(e)) from None
            if pair not in out:
                out.append(pair)
        return sorted(out)

    @t.validate("example")
    def _valid_example(self, proposal):
        try:
            return self._check_example(proposal["value"])
        except (TypeError, IndexError, ValueError) as e:
            raise t.TraitError(str(e)) from None

    @t.validate("color_by")
    def _valid_color_by(self, proposal):
        v = proposal["value"]
        if v not in ("layer",) + SCORE_NAMES:
            raise t.TraitError(f"color_by must be 'layer' or one of {SCORE_NAMES}, got {v!r}")
        return v


def _preview(s: str, n: int = 60) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
