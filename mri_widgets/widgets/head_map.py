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

__all__ = ["HeadMap"]

#: longest attention pattern sent to the view (tokens); longer examples show their first tokens
MAX_PATTERN_TOKENS = 128


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
        self.stats: HeadStats = head_stats(self._lm, self._texts, batch_size=batch_size, max_length=max_length)
        self.coords = self.stats.embedding(2)
        super().__init__(selection=selection)
        self._connect_interventions(interventions)
        self._push_data()

    # ---- data --------------------------------------------------------------------------------
    def _push_data(self) -> None:
        st = self.stats
        L, H = st.n_layers, st.n_heads
        layer = np.repeat(np.arange(L), H).astype(np.int32)
        head = np.tile(np.arange(H), L).astype(np.int32)
        self._set_data({
            "x": self.coords[:, 0].astype(np.float32),
            "y": self.coords[:, 1].astype(np.float32),
            "layer": layer,
            "head": head,
            "scores": {k: st.scores[k].reshape(-1).astype(np.float32) for k in SCORE_NAMES},
            "score_names": list(SCORE_NAMES),
            "score_help": [st.descriptions[k] for k in SCORE_NAMES],
            "n_layers": L,
            "n_heads": H,
            "n_examples": st.n_examples,
            "examples": [_preview(s) for s in self._texts],
            "model_name": str(self._lm.name),
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

        Returns
        -------
        dict ``tokens`` (list of str), ``attn`` ((n, n) float32, rows = queries), ``layer``,
        ``head``, ``example``, ``n_tokens`` and ``truncated`` (only the first
        :data:`MAX_PATTERN_TOKENS` tokens are sent).
        """
        layer, head = self._check_head(layer, head)
        ex = self.example if example is None else example
        ex = self._check_example(ex)
        tokens, attn = self._attention(ex)
        n = len(tokens)
        m = min(n, MAX_PATTERN_TOKENS)
        return {"tokens": tokens[:m], "attn": np.ascontiguousarray(attn[layer, head, :m, :m], dtype=np.float32),
                "layer": layer, "head": head, "example": ex, "n_tokens": n, "truncated": n > m}

    def _attention(self, ex: int):
        hit = self._cache.get(ex)
        if hit is not None:
            self._cache.move_to_end(ex)
            return hit
        cap = self._lm.capture([self._texts[ex]], ("attn",), max_length=self._max_length, progress=False)
        n = int(cap.mask[0].sum())
        value = (list(cap.tokens[0]), cap["attn"][0, :, :, :n, :n].numpy())
        self._cache[ex] = value
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return value

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
        except (TypeError, IndexError) as e:
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
