"""bqplot charts on the shared selection: thin code from analysis results to bqplot marks.

Each chart is an ``ipywidgets.VBox`` of bqplot figures with its own ``layer`` / ``position`` /
``neuron`` / ``label`` traits, joined to a :class:`~mri_widgets.Selection` by ordinary
``traitlets.link`` objects (kept in ``chart.links``), exactly what an ipywidgets user would write.
Clicking a point sets the chart's trait and so the selection; the arrays a chart shows are in
``chart.data``.

bqplot is an optional dependency: ``pip install "mri_widgets[charts]"`` (or ``pip install bqplot``).
"""

from __future__ import annotations

from typing import Optional

import ipywidgets as ipw
import numpy as np
import traitlets as t

from .selection import Selection

__all__ = ["LayerTrace", "AreaMetrics", "NeuronHistogram", "require_bqplot", "histogram_bin_labels"]

#: line colours, one per token / label (d3's category10)
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]
#: colour of the rule marking the selected layer
RULE_COLOR = "#888888"


def require_bqplot():
    """Import bqplot, or raise an ImportError that says how to install it."""
    try:
        import bqplot
    except ImportError:
        raise ImportError("the mri_widgets charts need bqplot: pip install \"mri_widgets[charts]\" "
                          "(or pip install bqplot), then restart the kernel") from None
    return bqplot


def _check_selection(selection) -> Selection:
    if selection is None:
        return Selection()
    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a mri_widgets.Selection, got {type(selection).__name__}")
    return selection


def _click_index(content) -> Optional[int]:
    data = (content or {}).get("data") or {}
    index = data.get("index")
    return None if index is None else int(index)


def _ticks(layers) -> np.ndarray:
    layers = np.asarray(layers, np.int64)
    step = max(1, int(np.ceil(len(layers) / 16)))
    return layers[::step].astype(np.float64)


class _Chart(ipw.VBox):
    """Base: a VBox of bqplot figures holding a Selection and the links to it."""

    #: the shared selection this chart is linked to
    selection = t.Instance(Selection)

    def __init__(self, selection, keys, css):
        super().__init__()
        self._bq = require_bqplot()
        self.selection = _check_selection(selection)
        self.add_class("mri-chart")
        self.add_class(css)
        #: the ``traitlets.link`` objects joining this chart's traits to the selection
        self.links = []
        self._keys = keys

    def _link(self):
        self.links = [t.link((self.selection, k), (self, k)) for k in self._keys]

    def unlink(self) -> None:
        """Stop following the selection (the chart keeps what it shows)."""
        for link in self.links:
            link.unlink()
        self.links = []

    def _layer_axis(self, scale, layers):
        """An x axis with integer ticks at (at most about 16 of) the given layers."""
        return self._bq.Axis(scale=scale, label="layer", grid_lines="none", tick_format="d",
                             tick_values=_ticks(layers))

    def _figure(self, marks, x_scale, y_scale, x_label, y_label, title="", height=200, x_axis=None):
        bq = self._bq
        axes = [x_axis or bq.Axis(scale=x_scale, label=x_label, grid_lines="none"),
                bq.Axis(scale=y_scale, orientation="vertical", label=y_label, grid_lines="dashed",
                        label_offset="40px")]
        return bq.Figure(marks=marks, axes=axes, title=title, fig_margin={"top": 30, "bottom": 40, "left": 60,
                                                                          "right": 20},
                         layout=ipw.Layout(width="100%", height=f"{int(height)}px"), padding_y=0.05)


# ---------------------------------------------------------------------------------- LayerTrace
class LayerTrace(_Chart):
    """The tracked target's probability, rank and entropy across layers, for the selected token.

    One figure per metric, layers on the x axis (``0`` = embeddings, ``l`` = after block ``l``, as
    in :class:`~mri_widgets.LensTable`), one line per shown position: the pinned positions and the
    selected one (the last position when nothing is selected). A grey rule marks the selected
    layer. Clicking a point sets ``layer`` (and ``position``, the line's token) and so the shared
    selection. The rank axis is logarithmic and plots ``rank + 1`` (1 = the target is the top-1).

    Parameters
    ----------
    source : LensResult or LensTable
        A table is followed: when it recomputes (new prompt, interventions) the chart redraws; its
        selection is used when ``selection`` is not given.
    selection : Selection, optional
        Linked with ``traitlets.link`` on ``layer`` and ``position``.
    pinned : list of int
        Positions always shown (negative counts from the end).
    metrics : tuple
        Some of ``("prob", "rank", "entropy")``, one figure each.
    height : int
        Pixels per figure.

    Examples
    --------
    >>> sel = mw.Selection()
    >>> table = mw.LensTable(lm, "The capital of France is", selection=sel)
    >>> trace = mw.LayerTrace(table, selection=sel, pinned=[-1])
    >>> sel.position = 2              # the chart shows token 2 beside the last one
    >>> trace.data["prob"]            # (shown positions, layers) = table.result.target_probs[:, shown].T
    """

    METRICS = ("prob", "rank", "entropy")

    #: the selected layer (linked to ``selection.layer``)
    layer = t.Int(None, allow_none=True)
    #: the selected position (linked to ``selection.position``)
    position = t.Int(None, allow_none=True)
    #: positions shown besides the selected one
    pinned = t.List(t.Int())

    def __init__(self, source, selection: Optional[Selection] = None, *, pinned=(), metrics=METRICS,
                 height: int = 180):
        from ..analysis.lens import LensResult
        from .lens_table import LensTable

        self._table = None
        if isinstance(source, LensTable):
            self._table = source
            if selection is None:
                selection = source.selection
        elif not isinstance(source, LensResult):
            raise TypeError("LayerTrace takes a LensResult (mw.logit_lens(...)) or a LensTable, "
                            f"got {type(source).__name__}")
        metrics = tuple(metrics)
        bad = [m for m in metrics if m not in self.METRICS]
        if bad or not metrics:
            raise ValueError(f"metrics must be some of {self.METRICS}, got {metrics}")
        super().__init__(selection, ("layer", "position"), "mri-layer-trace")
        self._result = source if self._table is None else source.result
        self._metrics = metrics
        bq = self._bq
        self._x = bq.LinearScale()
        self._marks = {}
        self._x_axes = []
        figures = []
        labels = {"prob": "p(target)", "rank": "rank + 1 (log)", "entropy": "entropy (nats)"}
        for m in metrics:
            y = bq.LogScale() if m == "rank" else bq.LinearScale(min=0.0) if m != "prob" else \
                bq.LinearScale(min=0.0, max=1.0)
            lines = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": self._x, "y": y}, stroke_width=2,
                             display_legend=(m == metrics[0]), labels=[])
            points = bq.Scatter(x=np.zeros(0), y=np.zeros(0), scales={"x": self._x, "y": y}, default_size=40,
                                colors=[COLORS[0]], stroke="white")
            points.on_element_click(self._on_click)
            rule = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": self._x, "y": y}, colors=[RULE_COLOR],
                            line_style="dashed", stroke_width=1)
            self._marks[m] = (lines, points, rule, y)
            x_axis = self._layer_axis(self._x, np.arange(len(self._result.layer_names)))
            figures.append(self._figure([rule, lines, points], self._x, y, "layer", labels[m], height=height,
                                        x_axis=x_axis))
            self._x_axes.append(x_axis)
        self.figures = figures
        self.children = figures
        with self.hold_trait_notifications():
            self.pinned = [int(p) for p in pinned]
        self._link()
        if self._table is not None:
            self._table.observe(self._table_changed, names=["target_probs", "tokens"])
        self.observe(self._redraw, names=["position", "pinned"])
        self.observe(self._move_rule, names=["layer"])
        self._redraw()

    # ---- data ------------------------------------------------------------------------------
    @property
    def result(self):
        """The LensResult shown (the table's current one when following a table)."""
        return self._result

    def shown_positions(self) -> list:
        """The positions drawn, in line order: the pinned ones, then the selected one."""
        n = len(self._result.tokens)
        out = []
        for p in list(self.pinned) + ([self.position] if self.position is not None else []):
            if -n <= p < n and (p % n) not in out:
                out.append(p % n)
        return out or [n - 1]

    @property
    def data(self) -> dict:
        """What the chart shows: ``layers`` (x), ``positions`` (one per line), ``tokens``, ``targets``
        and per metric a (lines, layers) array (``rank``: the rank, 0 = top; the axis plots rank + 1)."""
        r, pos = self._result, self.shown_positions()
        return {"layers": np.arange(r.target_probs.shape[0]), "positions": pos,
                "tokens": [r.tokens[p] for p in pos], "targets": [r.target_tokens[p] for p in pos],
                "prob": np.asarray(r.target_probs, np.float64)[:, pos].T,
                "rank": np.asarray(r.target_ranks, np.int64)[:, pos].T,
                "entropy": np.asarray(r.entropy, np.float64)[:, pos].T}

    def _table_changed(self, change=None):
        self._result = self._table.result
        for axis in self._x_axes:  # the model may have changed
            axis.tick_values = _ticks(np.arange(len(self._result.layer_names)))
        self._redraw()

    def _redraw(self, change=None):
        d = self.data
        x = d["layers"].astype(np.float64)
        colors = [COLORS[i % len(COLORS)] for i in range(len(d["positions"]))]
        labels = [f"{p}: {tok!r} \u2192 {tgt!r}" for p, tok, tgt in zip(d["positions"], d["tokens"], d["targets"])]
        for m in self._metrics:
            lines, points, _, _ = self._marks[m]
            y = d[m] + 1.0 if m == "rank" else d[m]
            with lines.hold_sync():
                lines.x, lines.y, lines.colors, lines.labels = x, y, colors, labels
            with points.hold_sync():
                points.x, points.y = np.tile(x, len(colors)), y.reshape(-1)
                points.colors = [c for c in colors for _ in x]
        self._move_rule()

    def _move_rule(self, change=None):
        d = None
        for m in self._metrics:
            _, _, rule, _ = self._marks[m]
            if self.layer is None or not 0 <= self.layer < len(self._result.layer_names):
                rule.x, rule.y = np.zeros(0), np.zeros(0)
                continue
            d = d or self.data
            y = d[m] + 1.0 if m == "rank" else d[m]
            lo, hi = (0.0, 1.0) if m == "prob" else (1.0 if m == "rank" else 0.0, float(np.nanmax(y)) or 1.0)
            with rule.hold_sync():
                rule.x, rule.y = np.array([self.layer, self.layer], np.float64), np.array([lo, hi])

    def _on_click(self, mark, content):
        i = _click_index(content)
        if i is None:
            return
        n_layers = len(self._result.layer_names)
        pos = self.shown_positions()
        if not 0 <= i < n_layers * len(pos):
            return
        with self.selection.hold_sync():
            self.position = pos[i // n_layers]
            self.layer = i % n_layers


# ---------------------------------------------------------------------------------- AreaMetrics
class AreaMetrics(_Chart):
    """:meth:`ActivationAreas.compare_labels` per label across layers: one line per label.

    The metric is ``degree_by_layer`` (the mean degree of each layer's regions in that label's
    region graph), x is the captured layer index (``areas.layer_ids``). The selected label's line
    is drawn thick and the others faded; a grey rule marks the selected layer. Clicking a point
    sets ``layer`` and ``label`` and so the shared selection.

    Parameters
    ----------
    areas : ActivationAreas
    labels : list of str, optional
        Labels to draw (default: all).
    selection : Selection, optional
        Linked with ``traitlets.link`` on ``layer`` and ``label``.
    """

    #: the selected layer (linked to ``selection.layer``)
    layer = t.Int(None, allow_none=True)
    #: the selected label (linked to ``selection.label``)
    label = t.Unicode(None, allow_none=True)

    def __init__(self, areas, labels=None, selection: Optional[Selection] = None, *, height: int = 260):
        from ..analysis.areas import ActivationAreas

        if not isinstance(areas, ActivationAreas):
            raise TypeError(f"AreaMetrics takes an ActivationAreas, got {type(areas).__name__}")
        super().__init__(selection, ("layer", "label"), "mri-area-metrics")
        table = areas.compare_labels(labels)
        rows = [r for r in table.index if str(r).startswith("degree_by_layer[")]
        self._labels = [str(c) for c in table.columns]
        self._layers = np.asarray(areas.layer_ids, np.int64)
        self._values = table.loc[rows].to_numpy(np.float64).T  # (labels, layers)
        bq = self._bq
        x, y = bq.LinearScale(), bq.LinearScale()
        colors = [COLORS[i % len(COLORS)] for i in range(len(self._labels))]
        self._lines = bq.Lines(x=self._layers.astype(np.float64), y=self._values, scales={"x": x, "y": y},
                               colors=colors, labels=self._labels, display_legend=True, stroke_width=2)
        self._points = bq.Scatter(x=np.tile(self._layers, len(self._labels)).astype(np.float64),
                                  y=self._values.reshape(-1), scales={"x": x, "y": y}, default_size=30,
                                  colors=[c for c in colors for _ in self._layers], stroke="white")
        self._points.on_element_click(self._on_click)
        self._rule = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": x, "y": y}, colors=[RULE_COLOR],
                              line_style="dashed", stroke_width=1)
        self.figures = [self._figure([self._rule, self._lines, self._points], x, y, "layer",
                                     "mean degree of the layer's regions", title="region graph per label",
                                     height=height, x_axis=self._layer_axis(x, self._layers))]
        self.children = self.figures
        self._link()
        self.observe(self._update, names=["layer", "label"])
        self._update()

    @property
    def data(self) -> dict:
        """``layers`` (x), ``labels`` (one per line) and ``degree_by_layer`` (labels, layers)."""
        return {"layers": self._layers.copy(), "labels": list(self._labels),
                "degree_by_layer": self._values.copy()}

    def _update(self, change=None):
        with self._lines.hold_sync():
            self._lines.opacities = [1.0 if self.label in (None, n) else 0.25 for n in self._labels]
            self._lines.stroke_width = 2 if self.label is None else 3
        if self.layer is None or self.layer not in set(self._layers.tolist()):
            self._rule.x, self._rule.y = np.zeros(0), np.zeros(0)
        else:
            finite = self._values[np.isfinite(self._values)]
            hi = float(finite.max()) if finite.size else 1.0
            with self._rule.hold_sync():
                self._rule.x, self._rule.y = np.array([self.layer] * 2, np.float64), np.array([0.0, hi])

    def _on_click(self, mark, content):
        i = _click_index(content)
        n = len(self._layers)
        if i is None or not 0 <= i < n * len(self._labels):
            return
        with self.selection.hold_sync():
            self.label = self._labels[i // n]
            self.layer = int(self._layers[i % n])


# ------------------------------------------------------------------------------ NeuronHistogram
def histogram_bin_labels() -> list:
    """Short labels of the :data:`~mri_widgets.analysis.neurons.HIST_EDGES` bins, low to high.

    An octave bin is named by its smaller magnitude with its sign: ``"2^-3"`` is [0.125, 0.25),
    ``"-4"`` is (-8, -4]; ``"0"`` is the central bin |x| < 2**HIST_LO, ``"<=-128"`` and
    ``">=128"`` the outer ones.
    """
    from ..analysis.neurons import HIST_EDGES

    def mag(v):
        e = int(round(np.log2(abs(v))))
        return str(2 ** e) if e >= 0 else f"2^{e}"

    out = []
    for lo, hi in zip(HIST_EDGES[:-1], HIST_EDGES[1:]):
        if np.isinf(lo):
            out.append("<=-" + mag(hi))
        elif np.isinf(hi):
            out.append(f">={mag(lo)}")
        elif lo < 0 < hi:
            out.append("0")
        elif hi <= 0:
            out.append("-" + mag(hi))
        else:
            out.append(mag(lo))
    return out


class NeuronHistogram(_Chart):
    """A neuron's activation distribution over the scanned corpus, following the selected neuron.

    Bars are the token counts of :attr:`NeuronScan.hist` over the fixed octave bins of
    :data:`~mri_widgets.analysis.neurons.HIST_EDGES` (one bin per power of two on each side of zero,
    a central bin around zero, open outer bins). ``layer`` and ``neuron`` are linked to the
    selection; when the selected layer was not scanned or no neuron is selected the chart says so
    in its title and shows no bars.

    Parameters
    ----------
    scan : NeuronScan
    selection : Selection, optional
        Linked with ``traitlets.link`` on ``layer`` and ``neuron``.
    layer, neuron : int, optional
        Start here (this also sets the linked selection).
    log : bool
        Logarithmic count axis (from 0.5, so empty bins have no bar).
    """

    #: the neuron's layer (linked to ``selection.layer``)
    layer = t.Int(None, allow_none=True)
    #: the neuron (linked to ``selection.neuron``)
    neuron = t.Int(None, allow_none=True)

    def __init__(self, scan, selection: Optional[Selection] = None, *, layer: Optional[int] = None,
                 neuron: Optional[int] = None, log: bool = False, height: int = 260):
        from ..analysis.neurons import NeuronScan

        if not isinstance(scan, NeuronScan):
            raise TypeError(f"NeuronHistogram takes a NeuronScan, got {type(scan).__name__}")
        super().__init__(selection, ("layer", "neuron"), "mri-neuron-histogram")
        self._scan = scan
        self._log = bool(log)
        bq = self._bq
        self._bins = histogram_bin_labels()
        x = bq.OrdinalScale(domain=self._bins)
        # a log axis starts at 0.5 (bars grow from there; an empty bin has no height)
        y = bq.LogScale(min=0.5) if self._log else bq.LinearScale(min=0.0)
        self._floor = 0.5 if self._log else 0.0
        self._bars = bq.Bars(x=self._bins, y=np.full(len(self._bins), self._floor), scales={"x": x, "y": y},
                             colors=[COLORS[0]], padding=0.1, base=self._floor)
        x_axis = bq.Axis(scale=x, label="activation (octave bins; 0: |x| < 2^-10)", tick_rotate=-45,
                         tick_style={"font-size": "10px"})
        self._fig = self._figure([self._bars], x, y, "activation", "tokens", height=height, x_axis=x_axis)
        self._fig.fig_margin = {"top": 30, "bottom": 60, "left": 60, "right": 20}
        if self._log:
            self._fig.axes[1].tick_format = "~g"
        self.figures = [self._fig]
        self.children = self.figures
        self._link()
        with self.selection.hold_sync():
            if layer is not None:
                self.layer = int(layer)
            if neuron is not None:
                self.neuron = int(neuron)
        self.observe(self._update, names=["layer", "neuron"])
        self._update()

    def counts(self) -> Optional[np.ndarray]:
        """Token counts per bin of the neuron shown, or None when none is (unscanned layer, no neuron)."""
        if self.layer is None or self.neuron is None or self.layer not in self._scan.layers:
            return None
        if not 0 <= self.neuron < self._scan.d_mlp:
            return None
        return self._scan.hist[self._scan.layers.index(self.layer), self.neuron].copy()

    @property
    def data(self) -> dict:
        """``bins`` (labels), ``edges`` (HIST_EDGES) and ``counts`` (None when no neuron is shown)."""
        from ..analysis.neurons import HIST_EDGES

        return {"bins": list(self._bins), "edges": HIST_EDGES.copy(), "counts": self.counts()}

    def _update(self, change=None):
        c = self.counts()
        if c is None:
            if self.layer is not None and self.layer not in self._scan.layers:
                title = f"layer {self.layer} was not scanned (scanned: {self._scan.layers})"
            else:
                title = "select a neuron"
            y = np.full(len(self._bins), self._floor)
        else:
            title = f"neuron {self.layer}.{self.neuron}: {int(c.sum())} tokens"
            y = np.maximum(c.astype(np.float64), self._floor)
        with self._bars.hold_sync():
            self._bars.y = y
        self._fig.title = title
