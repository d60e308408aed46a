"""NeuronViewer: one MLP neuron's statistics, strongest examples and direct effect on the output."""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Optional

import numpy as np
import traitlets as t

from ..analysis.neurons import HIST_EDGES, NeuronScan, neuron_logit_effect
from .base import NDArray, array_serialization, command
from .interventions import AblationControls
from .selection import Selection

__all__ = ["NeuronViewer", "NeuronViewerError"]

#: channel name in the view -> capture site
CHANNELS = {"mlp": "mlp", "gate": "mlp_gate", "up": "mlp_up", "act": "mlp_act"}
CHANNEL_LABELS = {"mlp": "act(gate)·up", "gate": "gate", "up": "up", "act": "act(gate)"}


class NeuronViewerError(t.TraitError, ValueError):
    """Bad input to the neuron viewer (unscanned layer, neuron out of range, unknown channel)."""


class NeuronViewer(AblationControls):
    """One MLP neuron of a :class:`~mri_widgets.NeuronScan`: stats, examples, output effect.

    Shows a statistics table and an activation histogram; the texts where the neuron is highest
    (and lowest), tokens coloured on one shared diverging scale, a window around the extreme
    token (50 tokens before, 10 after) that expands to the whole text; for gated MLPs a switch
    between channels (the product fed to the output projection, the gate pre-activation, the up
    projection, act(gate)); the tokens the neuron's output row promotes and suppresses through
    the final norm and unembedding; previous / next / random / go-to navigation.

    Per-token activations of the examples are recomputed from ``model`` when the view asks for
    them (one batched forward pass per neuron, cached).

    Parameters
    ----------
    scan : NeuronScan
    model : LoadedModel, optional
        The model the scan was made with; needed for per-token activations and the output effect.
    texts : list of str or Corpus, optional
        The scanned texts (default: ``scan.texts``); needed to show the examples.
    layer : int, optional
        A scanned layer (default: the first one).
    neuron : int
    channel : ``"mlp"`` (default), or for gated MLPs ``"gate"``, ``"up"``, ``"act"``.
    selection : Selection, optional
        Shared selection: the viewer follows ``selection.layer`` / ``selection.neuron``, sets them
        when you navigate, and clicking a token sets ``selection.position``.
    window : (before, after)
        Tokens shown around the extreme token before the text is expanded.
    interventions : a shared :class:`~mri_widgets.Interventions`, optional: the view then offers
        "ablate (zero)" and "ablate (mean)" for the neuron shown (:meth:`ablate` from Python).

    Attributes
    ----------
    layer, neuron, channel : synced traits; set them from Python to move the view.
    """

    _view = "neuron_viewer"

    # ---- parameters (set from Python or from the view's navigation) ---------------------------
    #: the neuron's layer (a scanned layer)
    layer = t.Int(0).tag(sync=True)
    #: the neuron's index in the layer
    neuron = t.Int(0).tag(sync=True)
    #: activation channel shown: ``"mlp"``, or for gated MLPs ``"gate"``, ``"up"``, ``"act"``
    channel = t.Unicode("mlp").tag(sync=True)

    # ---- the data shown (set by Python only) --------------------------------------------------
    #: layer and neuron the data below describes
    shown_layer = t.Int(None, allow_none=True).tag(sync=True)
    shown_neuron = t.Int(None, allow_none=True).tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    #: the scanned layers
    layers = t.List(t.Int()).tag(sync=True)
    d_mlp = t.Int(0).tag(sync=True)
    gated = t.Bool(False).tag(sync=True)
    #: channels that can be shown, and their labels
    channels = t.List(t.Unicode()).tag(sync=True)
    channel_labels = t.List(t.Unicode()).tag(sync=True)
    n_texts = t.Int(0).tag(sync=True)
    n_tokens = t.Int(0).tag(sync=True)
    #: examples kept per neuron by the scan
    k = t.Int(0).tag(sync=True)
    #: ``{max, min, mean, freq_positive}`` of the neuron over the scan
    stats = t.Dict().tag(sync=True, **array_serialization)
    #: gated MLPs: how often each sign case of (gate, up) occurs
    cases = t.List().tag(sync=True, **array_serialization)
    #: histogram counts of the activations and the inner bin edges
    hist = NDArray("float32", ndim=1).tag(sync=True)
    hist_edges = t.List(t.Float()).tag(sync=True)
    #: strongest and weakest examples ``[{value, text, position}]``
    top = t.List(t.Dict()).tag(sync=True, **array_serialization)
    bottom = t.List(t.Dict()).tag(sync=True, **array_serialization)
    #: largest |activation| of the neuron (colour scale)
    scale = t.Float(1.0).tag(sync=True)
    #: tokens promoted / suppressed ``{promoted: [[token, value]], suppressed: [...]}``, or None
    effect = t.Dict(None, allow_none=True).tag(sync=True, **array_serialization)
    #: why ``effect`` is missing
    effect_note = t.Unicode("").tag(sync=True)
    has_texts = t.Bool(False).tag(sync=True)
    has_model = t.Bool(False).tag(sync=True)
    #: a hint shown under the title
    note = t.Unicode("").tag(sync=True)
    #: tokens shown around the extreme token: (before, after)
    window = t.List(t.Int()).tag(sync=True)

    _CACHE_BYTES = 128 * 2 ** 20

    def __init__(self, scan: NeuronScan, model=None, texts=None, *, layer: Optional[int] = None,
                 neuron: int = 0, channel: str = "mlp", selection: Optional[Selection] = None,
                 window=(50, 10), interventions=None):
        if not isinstance(scan, NeuronScan):
            raise TypeError(f"scan must be a NeuronScan (NeuronScan.run or NeuronScan.load), got {type(scan).__name__}")
        self._scan = scan
        self._lm = None
        if model is not None:
            from ..models.loading import load

            lm = load(model)
            if lm.d_mlp != scan.d_mlp or lm.gated != scan.gated or max(scan.layers) >= lm.n_layers:
                raise NeuronViewerError(
                    f"the model ({lm.name}: {lm.n_layers} layers, d_mlp={lm.d_mlp}, gated={lm.gated}) does not match "
                    f"the scan ({scan.model_name}: layers {scan.layers}, d_mlp={scan.d_mlp}, gated={scan.gated}); "
                    "pass the model the scan was made with")
            self._lm = lm
        if texts is not None:
            from ..analysis.neurons import _texts_of

            texts = _texts_of(texts)
            if isinstance(texts, str):
                raise NeuronViewerError("texts is a single string: pass the list of scanned texts")
            texts = list(texts)
            if len(texts) != scan.n_texts:
                raise NeuronViewerError(f"got {len(texts)} texts but the scan covers {scan.n_texts}; pass the scanned texts")
        else:
            texts = scan.texts
        self._texts = texts
        try:
            w0, w1 = (int(x) for x in window)
        except (TypeError, ValueError):
            raise TypeError(f"window must be (before, after) token counts, got {window!r}") from None
        if w0 < 0 or w1 < 0:
            raise NeuronViewerError(f"window counts must be >= 0, got {window!r}")
        self._window = (w0, w1)
        self._acts_cache: OrderedDict = OrderedDict()  # (layer, text) -> {channel: (seq, d_mlp)}
        self._cache_bytes = 0
        self._token_cache: dict = {}
        self._effect_cache: dict = {}
        self._ready = False
        self._following = False
        self._shown = None
        layer = scan.layers[0] if layer is None else layer
        super().__init__(selection=selection)
        self._connect_interventions(interventions)
        with self.hold_trait_notifications():
            self.layer = layer
            self.neuron = neuron
            self.channel = channel
        self._ready = True
        self.selection.observe(self._follow_selection, names=["layer", "neuron"])
        self._refresh()

    #: from_examples: text index -> (tokens, activations) and (layer, neuron) -> stats of the given examples
    _given: Optional[dict] = None
    _given_stats: Optional[dict] = None

    @classmethod
    def from_examples(cls, top, bottom=None, *, d_mlp: Optional[int] = None, model_name: str = "",
                      layer: Optional[int] = None, neuron: int = 0, selection: Optional[Selection] = None,
                      window=(50, 10)) -> "NeuronViewer":
        """A NeuronViewer from example texts with per-token activations computed elsewhere, no model.

        Parameters
        ----------
        top : ``{(layer, neuron): [(tokens, acts), ...]}``, the texts where each neuron is highest;
            ``tokens`` a list of str (joined they are the text), ``acts`` the neuron's activation at
            each token (same length). A list ``[examples of neuron 0, examples of neuron 1, ...]``
            means layer 0. Examples are ranked by their largest activation (strongest first).
        bottom : the same for the texts where each neuron is lowest (ranked by their smallest
            activation), optional.
        d_mlp : neurons per layer (default: the largest neuron given + 1).
        model_name : shown in the title.
        layer, neuron, selection, window : as in the constructor.

        The statistics and histogram are those of the given examples' tokens only (the view says
        so); the output effect needs a model (``NeuronViewer(scan, model)``).
        """
        from ..analysis.neurons import _ARRAYS, N_BINS

        def norm(arg, what):
            if arg is None:
                return {}
            if isinstance(arg, (list, tuple)):
                arg = {(0, n): ex for n, ex in enumerate(arg)}
            if not isinstance(arg, dict):
                raise TypeError(f"{what} must be a dict {{(layer, neuron): [(tokens, acts), ...]}} or a list over "
                                f"the neurons of layer 0, got {type(arg).__name__}")
            out = {}
            for key, exs in arg.items():
                if not (isinstance(key, tuple) and len(key) == 2
                        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in key)):
                    raise NeuronViewerError(f"{what} keys must be (layer, neuron) pairs of ints >= 0, got {key!r}")
                rows = []
                for j, ex in enumerate(exs):
                    if not isinstance(ex, (list, tuple)) or len(ex) != 2:
                        raise NeuronViewerError(f"{what}[{key}][{j}] must be a (tokens, acts) pair")
                    toks, acts = ex
                    if isinstance(toks, str) or not all(isinstance(x, str) for x in toks):
                        raise NeuronViewerError(f"{what}[{key}][{j}]: tokens must be a list of str (one per token)")
                    acts = np.asarray(acts, dtype=np.float32)
                    if acts.shape != (len(toks),) or len(toks) == 0:
                        raise NeuronViewerError(f"{what}[{key}][{j}]: acts has shape {acts.shape} but there are "
                                                f"{len(toks)} tokens; give one activation per token (at least one)")
                    if not np.isfinite(acts).all():
                        raise NeuronViewerError(f"{what}[{key}][{j}]: acts has NaN or infinite values")
                    rows.append((list(toks), acts))
                out[(int(key[0]), int(key[1]))] = rows
            return out

        top, bottom = norm(top, "top"), norm(bottom, "bottom")
        keys = sorted(set(top) | set(bottom))
        if not keys:
            raise NeuronViewerError("no examples: give top={(layer, neuron): [(tokens, acts), ...]}")
        layers = sorted({l for l, _ in keys})
        need = max(n for _, n in keys) + 1
        if d_mlp is None:
            d_mlp = need
        elif isinstance(d_mlp, bool) or not isinstance(d_mlp, (int, np.integer)) or d_mlp < need:
            raise NeuronViewerError(f"d_mlp must be an int >= {need} (the largest neuron given + 1), got {d_mlp!r}")
        L, d = len(layers), int(d_mlp)
        k = max(1, max(len(v) for v in list(top.values()) + list(bottom.values())))
        arrays = {name: np.zeros(tuple({"L": L, "d": d, "k": k, "B": N_BINS, "4": 4}[c] for c in shape), dtype)
                  for name, (dtype, shape) in _ARRAYS.items()}
        for side, fill in (("top", -np.inf), ("bottom", np.inf)):
            arrays[f"{side}_values"][:] = fill
            arrays[f"{side}_texts"][:] = -1
            arrays[f"{side}_positions"][:] = -1
        texts, given, index = [], {}, {}
        for side, lists in (("top", top), ("bottom", bottom)):
            for (l, n), rows in lists.items():
                li = layers.index(l)
                ext = [(float(a.max()) if side == "top" else float(a.min()),
                        int(a.argmax()) if side == "top" else int(a.argmin()), toks, a) for toks, a in rows]
                ext.sort(key=lambda e: -e[0] if side == "top" else e[0])  # stable: given order on ties
                for r, (v, pos, toks, a) in enumerate(ext):
                    key = (tuple(toks), a.tobytes())
                    if key not in index:
                        index[key] = len(texts)
                        texts.append("".join(toks))
                        given[index[key]] = (toks, a)
                    arrays[f"{side}_values"][li, n, r] = v
                    arrays[f"{side}_texts"][li, n, r] = index[key]
                    arrays[f"{side}_positions"][li, n, r] = pos
        stats = {}
        for l, n in keys:
            ids = sorted({index[(tuple(t), a.tobytes())] for t, a in top.get((l, n), []) + bottom.get((l, n), [])})
            if not ids:  # a neuron given with no examples: empty statistics
                continue
            x = np.concatenate([given[i][1] for i in ids]).astype(np.float64)
            # the scan's bins: by magnitude octave, sign kept (|x| = 2**e goes to octave e on both sides)
            pos = np.clip(np.searchsorted(HIST_EDGES, np.abs(x), side="right") - 1, 0, N_BINS - 1)
            center = N_BINS // 2
            hist = np.bincount(np.where(x < 0, 2 * center - pos, pos), minlength=N_BINS)
            stats[(l, n)] = {"max": float(x.max()), "min": float(x.min()), "mean": float(x.mean()),
                             "freq_positive": float((x > 0).mean()), "hist_counts": hist.tolist()}
        scan = NeuronScan(layers=layers, d_mlp=d, k=k, n_texts=len(texts),
                          n_tokens=sum(len(g[0]) for g in given.values()), gated=False, arrays=arrays,
                          model_name=model_name or None, texts=texts)
        self = cls.__new__(cls)
        self._given, self._given_stats = given, stats
        cls.__init__(self, scan, None, None, layer=layer, neuron=neuron, selection=selection, window=window)
        return self

    # ---- validation -----------------------------------------------------------------------
    @t.validate("layer")
    def _check_layer(self, proposal):
        layer = proposal["value"]
        if layer not in self._scan.layers:
            raise NeuronViewerError(f"layer {layer} was not scanned; scanned layers: {self._scan.layers}")
        return layer

    @t.validate("neuron")
    def _check_neuron(self, proposal):
        n = proposal["value"]
        if not 0 <= n < self._scan.d_mlp:
            raise NeuronViewerError(f"neuron {n} is out of range: layers have {self._scan.d_mlp} neurons (0..{self._scan.d_mlp - 1})")
        return n

    @t.validate("channel")
    def _check_channel(self, proposal):
        c = proposal["value"]
        allowed = self._channels()
        if c not in allowed:
            raise NeuronViewerError(f"unknown channel {c!r}; this MLP has channels {allowed}"
                                    + ("" if self._scan.gated else " (gate/up/act exist only for gated MLPs)"))
        return c

    def _channels(self) -> list:
        """The channels that can be shown: ``["mlp"]``, plus gate/up/act for gated MLPs."""
        return list(CHANNELS) if self._scan.gated else ["mlp"]

    @property
    def scan(self) -> NeuronScan:
        return self._scan

    # ---- navigation ------------------------------------------------------------------------
    def go(self, layer: Optional[int] = None, neuron: Optional[int] = None) -> None:
        """Show another neuron (layer defaults to the current one)."""
        layer = self.layer if layer is None else layer
        neuron = self.neuron if neuron is None else neuron
        self._check_layer({"value": layer})
        self._check_neuron({"value": neuron})
        with self.hold_trait_notifications():
            self.layer = layer
            self.neuron = neuron

    def next(self) -> None:
        """The next neuron of the layer (wraps around)."""
        self.go(neuron=(self.neuron + 1) % self._scan.d_mlp)

    def previous(self) -> None:
        """The previous neuron of the layer (wraps around)."""
        self.go(neuron=(self.neuron - 1) % self._scan.d_mlp)

    def random(self, seed=None) -> None:
        """A random scanned neuron (any scanned layer)."""
        rng = random.Random(seed)
        self.go(rng.choice(self._scan.layers), rng.randrange(self._scan.d_mlp))

    @t.observe("layer", "neuron")
    def _moved(self, change):
        if not self._ready or self._shown == (self.layer, self.neuron):
            return
        self._refresh()
        if not self._following:  # moved here (navigation, Python): tell the other views
            self.selection.update(layer=self.layer, neuron=self.neuron)

    def _follow_selection(self, change):
        sel = self.selection
        layer = self.layer if sel.layer is None else sel.layer
        neuron = self.neuron if sel.neuron is None else sel.neuron
        if (layer, neuron) == (self.layer, self.neuron):
            return
        if layer not in self._scan.layers or not 0 <= neuron < self._scan.d_mlp:
            return  # another view selected something this scan does not cover: stay
        self._following = True
        try:
            self.go(layer, neuron)
        finally:
            self._following = False

    @t.observe("selection")
    def _rewire_follow(self, change):
        old = change["old"]
        if old is not None:
            old.unobserve(self._follow_selection, names=["layer", "neuron"])
        if self._ready:
            change["new"].observe(self._follow_selection, names=["layer", "neuron"])
            self._follow_selection(None)

    # ---- data --------------------------------------------------------------------------------
    def _effect(self, layer: int, neuron: int):
        if self._lm is None:
            return None, "pass model= to see the tokens this neuron promotes and suppresses"
        if self._lm.adapter.unembed_module is None:
            return None, "this model has no unembedding (encoder): no direct effect on output tokens"
        key = (layer, neuron)
        if key not in self._effect_cache:
            if len(self._effect_cache) > 512:
                self._effect_cache.clear()
            self._effect_cache[key] = neuron_logit_effect(self._lm, layer, neuron, k=10)
        eff = self._effect_cache[key]
        return {side: [[s, v] for s, _, v in eff[side]] for side in ("promoted", "suppressed")}, ""

    def _refresh(self) -> None:
        scan, layer, neuron = self._scan, self.layer, self.neuron
        self._shown = (layer, neuron)
        st = scan.stats(layer, neuron)
        effect, effect_note = self._effect(layer, neuron)
        note = ""
        if self._given is not None:
            st = {**st, **self._given_stats.get((layer, neuron), {"max": None, "min": None, "mean": 0.0,
                                                                   "freq_positive": 0.0,
                                                                   "hist_counts": [0] * len(HIST_EDGES[1:])})}
            effect_note = "built from examples (NeuronViewer.from_examples): the output effect needs a model"
            note = "built from examples: the statistics are over the given examples' tokens only"
        elif self._texts is None:
            note = "the scan did not keep its texts: pass texts= (the scanned texts) to see the examples"
        elif self._lm is None:
            note = "pass model= to colour the examples' tokens by activation"
        ex = lambda rows: [{"value": v, "text": ti, "position": p} for v, ti, p in rows]  # noqa: E731
        extremes = [abs(x) for x in (st["max"], st["min"]) if x is not None]
        self._set_data({
            "model_name": scan.model_name or "", "shown_layer": layer, "shown_neuron": neuron,
            "layers": [int(x) for x in scan.layers],
            "d_mlp": int(scan.d_mlp), "gated": bool(scan.gated), "channels": self._channels(),
            "channel_labels": [CHANNEL_LABELS[c] for c in self._channels()],
            "n_texts": int(scan.n_texts), "n_tokens": int(scan.n_tokens), "k": int(scan.k),
            "stats": {key: st[key] for key in ("max", "min", "mean", "freq_positive")},
            "cases": st.get("cases", []),
            "hist": np.asarray(st["hist_counts"], dtype=np.float32),
            "hist_edges": [float(e) for e in HIST_EDGES[1:-1]],
            "top": ex(scan.top(layer, neuron)), "bottom": ex(scan.bottom(layer, neuron)),
            "scale": float(max(extremes)) if extremes else 1.0,
            "effect": effect, "effect_note": effect_note,
            "has_texts": self._texts is not None, "has_model": self._lm is not None,
            "note": note, "window": list(self._window),
        })

    # ---- on demand: per-token activations of examples -----------------------------------------
    def _activations(self, layer: int, text_ids: list) -> dict:
        """(layer, text) -> {channel: (n_tokens, d_mlp) float32}, computing the missing ones."""
        wanted = list(dict.fromkeys(text_ids))
        for i in wanted:  # most recently used last: the wanted entries are evicted last
            if (layer, i) in self._acts_cache:
                self._acts_cache.move_to_end((layer, i))
        missing = [i for i in wanted if (layer, i) not in self._acts_cache]
        if missing:
            sites = [CHANNELS[c] for c in self._channels()]
            cap = self._lm.capture([self._texts[i] for i in missing], sites, layers=[layer],
                                   max_length=self._scan.max_length, progress=False)
            for row, i in enumerate(missing):
                n = int(cap.mask[row].sum())
                entry = {c: cap[CHANNELS[c]][row, 0, :n].numpy().copy() for c in self._channels()}
                self._token_cache[i] = list(cap.tokens[row])
                self._acts_cache[(layer, i)] = entry
                self._cache_bytes += sum(a.nbytes for a in entry.values())
            while self._cache_bytes > self._CACHE_BYTES and len(self._acts_cache) > len(wanted):
                _, old = self._acts_cache.popitem(last=False)
                self._cache_bytes -= sum(a.nbytes for a in old.values())
        return {i: self._acts_cache[(layer, i)] for i in text_ids}

    @command
    def examples(self, layer: int, neuron: int) -> dict:
        """Tokens and per-token activations (every channel) of the neuron's top and bottom texts.

        Returns ``{"top": [...], "bottom": [...]}`` in the order of :meth:`NeuronScan.top` /
        :meth:`NeuronScan.bottom`; each entry is ``{"text": index, "tokens": [...],
        "acts": {channel: float32 array}}``, or ``{"text": index, "raw": str}`` without a model.
        ``mismatch`` is the largest difference between a stored extreme and the recomputed
        activation at its position (a large one means the model or texts differ from the scan's).
        """
        layer, neuron = int(layer), int(neuron)
        self._check_layer({"value": layer})
        self._check_neuron({"value": neuron})
        if self._texts is None:
            raise NeuronViewerError("the scan did not keep its texts: pass texts= to NeuronViewer")
        top, bottom = self._scan.top(layer, neuron), self._scan.bottom(layer, neuron)
        if self._given is not None:  # from_examples: the given tokens and activations
            given = lambda rows: [{"text": ti, "tokens": list(self._given[ti][0]),  # noqa: E731
                                   "acts": {"mlp": self._given[ti][1]}} for _, ti, _ in rows]
            return {"layer": layer, "neuron": neuron, "top": given(top), "bottom": given(bottom), "mismatch": 0.0}
        if self._lm is None:
            raw = lambda rows: [{"text": ti, "raw": self._texts[ti]} for _, ti, _ in rows]  # noqa: E731
            return {"layer": layer, "neuron": neuron, "top": raw(top), "bottom": raw(bottom), "mismatch": 0.0}
        acts = self._activations(layer, [ti for _, ti, _ in top + bottom])
        mismatch = 0.0
        out = {"layer": layer, "neuron": neuron, "mismatch": 0.0}
        for side, rows in (("top", top), ("bottom", bottom)):
            items = []
            for value, ti, pos in rows:
                per = {c: np.ascontiguousarray(a[:, neuron]) for c, a in acts[ti].items()}
                if pos < per["mlp"].shape[0]:
                    mismatch = max(mismatch, abs(float(per["mlp"][pos]) - value))
                else:
                    mismatch = float("inf")
                items.append({"text": ti, "tokens": self._token_cache[ti], "acts": per})
            out[side] = items
        out["mismatch"] = mismatch if np.isfinite(mismatch) else 1e30
        return out
