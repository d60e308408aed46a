"""GraphView: the shared Cytoscape graph widget (regions, flow graphs, trace graphs).

Python computes everything about the drawing (node positions, colours, sizes, labels, edge
colours and widths) and ships it as binary arrays; the view (``js/src/views/graph_view.js``,
cytoscape.js bundled) draws it with a preset layout, filters edges by weight and top-k, shows
tooltips, and links to the shared selection: each node may carry a selection *patch*
(e.g. ``{"layer": 3, "region": 12}``) that a click sets, and the node whose patch matches the
current selection is outlined. Python can highlight nodes and edges (e.g. paths) with
:meth:`GraphView.set_highlight`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import traitlets as t

from .base import MRIWidget
from .._checks import check_choice, check_int
from .selection import SELECTION_KEYS, Selection
from .transport import NDArray, array_serialization

__all__ = ["GraphView", "CATEGORICAL", "to_rgb", "blend", "EDGE_BUDGET"]

#: edges drawn at most by default: above it the view shows the heaviest edges and a notice
EDGE_BUDGET = 5000
_NODE_COLS = ("x", "y", "size", "color", "label", "node_tooltip", "shape", "parts", "select", "parent")
_EDGE_COLS = ("edge_source", "edge_target", "edge_weight", "edge_color", "edge_width", "edge_parts", "edge_tooltip")

#: categorical palette (Okabe-Ito), the same as ``CATEGORICAL`` in js/src/lib/colors.js
CATEGORICAL = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: selection patch value meaning "this node does not set that key"
NO_VALUE = np.iinfo(np.int32).min

_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
_NAMED = {"black": "#000000", "white": "#ffffff", "grey": "#888888", "gray": "#888888", "red": "#d62728",
          "blue": "#1f77b4", "green": "#2ca02c", "orange": "#ff7f0e", "purple": "#9467bd"}

NODE_COLUMNS = ("x", "y", "size", "color", "label", "tooltip", "parts", "select", "parent", "shape")
EDGE_COLUMNS = ("source", "target", "weight", "color", "width", "parts", "tooltip")
SHAPES = ("ellipse", "rectangle", "round-rectangle", "triangle", "diamond", "hexagon")
LABEL_POSITIONS = ("bottom", "right")


class GraphError(ValueError):
    """Bad nodes / edges given to a GraphView."""


def _hex_to_rgb(s: str) -> tuple[int, int, int]:
    s = _NAMED.get(s.lower(), s) if isinstance(s, str) else s
    m = _HEX.match(s) if isinstance(s, str) else None
    if not m:
        raise GraphError(f"colour {s!r} is not '#rrggbb', '#rgb' or one of {sorted(_NAMED)}")
    h = m.group(1)
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def to_rgb(colors, n: int, what: str = "color") -> np.ndarray:
    """Colours as a (n, 3) uint8 array.

    ``colors``: one colour string for all, a list of ``"#rrggbb"`` strings, or an (n, 3) array of
    0..255 integers (or 0..1 floats).
    """
    if isinstance(colors, str):
        return np.tile(np.array(_hex_to_rgb(colors), np.uint8), (n, 1))
    if isinstance(colors, np.ndarray) and colors.dtype.kind in "fiu" or (
            isinstance(colors, Sequence) and len(colors) and not isinstance(colors[0], str)):
        a = np.asarray(colors)
        if a.shape != (n, 3):
            raise GraphError(f"{what} array must have shape ({n}, 3) (RGB per item), got {a.shape}")
        if a.dtype.kind == "f":
            a = np.round(np.clip(a, 0, 1) * 255) if a.size and a.max() <= 1.0 else np.clip(a, 0, 255)
        return a.astype(np.uint8)
    colors = list(colors)
    if len(colors) != n:
        raise GraphError(f"{what} has {len(colors)} entries for {n} items; pass one colour per item")
    return np.array([_hex_to_rgb(c) for c in colors], np.uint8).reshape(n, 3)


def blend(weights, palette: Sequence[str]) -> np.ndarray:
    """Mix palette colours by weights: (n, K) weights -> (n, 3) uint8 RGB (rows of zeros give grey)."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 2 or w.shape[1] > len(palette):
        raise GraphError(f"weights must be (n, K) with K <= {len(palette)} palette colours, got {w.shape}")
    P = np.array([_hex_to_rgb(c) for c in palette[:w.shape[1]]], np.float64)
    tot = w.sum(1, keepdims=True)
    out = np.where(tot > 0, (w @ P) / np.where(tot > 0, tot, 1), 150.0)
    return np.round(out).astype(np.uint8)


def _column(cols: Mapping, name: str):
    v = cols.get(name)
    if v is None:
        return None
    if hasattr(v, "to_numpy"):  # pandas Series
        v = v.to_numpy()
    return v


def _table(obj, what: str) -> dict:
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
        return {c: obj[c].to_numpy() for c in obj.columns}
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a dict of columns (or a pandas DataFrame), got {type(obj).__name__}")
    return dict(obj)


def _floats(v, n: int, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1) if not np.isscalar(v) else np.full(n, float(v))
    if a.shape != (n,):
        raise GraphError(f"{name} has {a.size} values for {n} items")
    if not np.isfinite(a).all():
        raise GraphError(f"{name} contains NaN or inf")
    return a.astype(np.float32)


def _positive(v, name: str, kind=float, zero: bool = False):
    """A finite number > 0 (>= 0 with ``zero``) as ``kind``, else a GraphError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
            or v < 0 or (v == 0 and not zero):
        raise GraphError(f"{name} must be a {'non-negative' if zero else 'positive'} number, got {v!r}")
    return kind(v)


def _choice(v, name: str, options) -> str:
    if v not in options:
        raise GraphError(f"{name} must be one of {options}, got {v!r}")
    return str(v)


def _strings(v, n: int, name: str) -> list[str]:
    if isinstance(v, str):
        return [v] * n
    v = ["" if x is None else str(x) for x in v]
    if len(v) != n:
        raise GraphError(f"{name} has {len(v)} entries for {n} items")
    return v


def _parts(v, n: int, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != n:
        raise GraphError(f"{name} must be (n, K) with one row per item; got shape {a.shape} for {n} items")
    if (a < 0).any() or not np.isfinite(a).all():
        raise GraphError(f"{name} must hold finite non-negative values (shares or counts)")
    return a.astype(np.float32)


def encode_select(patches, n: int) -> tuple[list[str], np.ndarray]:
    """Selection patches (one dict or None per node) -> (keys, int32 (n, len(keys)) values)."""
    patches = list(patches)
    if len(patches) != n:
        raise GraphError(f"select has {len(patches)} entries for {n} nodes; pass one dict (or None) per node")
    keys: list[str] = []
    for i, p in enumerate(patches):
        if p is None:
            continue
        if not isinstance(p, Mapping):
            raise GraphError(f"select[{i}] must be a dict such as {{'layer': 3, 'region': 12}} or None")
        for k, v in p.items():
            if k not in SELECTION_KEYS or k == "label":
                raise GraphError(f"select[{i}] has key {k!r}; use integer selection keys "
                                 f"{[s for s in SELECTION_KEYS if s != 'label']}")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise GraphError(f"select[{i}][{k!r}] must be an int, got {v!r}")
            if k not in keys:
                keys.append(k)
    keys = [k for k in SELECTION_KEYS if k in keys]
    vals = np.full((n, len(keys)), NO_VALUE, np.int32)
    for i, p in enumerate(patches):
        for k, v in (p or {}).items():
            vals[i, keys.index(k)] = int(v)
    return keys, vals


class GraphView(MRIWidget):
    """A graph drawn with cytoscape.js at positions computed in Python.

    Parameters
    ----------
    nodes : dict of columns (or a pandas DataFrame), one row per node:
        ``x``, ``y`` (required, layout units: about 1 per node spacing; the view fits them),
        ``size`` (diameter in px, default 12), ``color`` (``"#rrggbb"`` strings or (n, 3) RGB),
        ``label`` (text drawn under the node when zoomed in), ``tooltip`` (text shown on hover),
        ``parts`` ((n, K) non-negative shares drawn as a pie, with ``part_names`` /
        ``part_colors``), ``select`` (a dict of integer selection keys or None per node: clicking
        the node sets it; the node whose patch matches the selection is outlined), ``parent``
        (index into ``groups`` or -1), ``shape`` (one of ellipse, rectangle, round-rectangle,
        triangle, diamond, hexagon).
    edges : dict of columns: ``source``, ``target`` (node indices, required), ``weight``
        (default 1; the filters act on it), ``color``, ``width`` (px; default from weight),
        ``parts`` ((m, K) breakdown shown in the tooltip), ``tooltip``.
    groups : list of ``{"label": str}``: compound parent boxes around the nodes that name them in
        ``parent``; double-click a box to collapse / expand it.
    annotations : list of ``{"x", "y", "text"}`` (optional ``"select"``, ``"size"``: font size
        in px at zoom 1, default 13, ``"align"``: ``"center"`` (default: centred on x, y) or
        ``"left"`` (starting at x), ``"color"``: a colour for text that is not clickable,
        ``"bold"``: default True): free text, e.g. column headers.
    part_names, part_colors : names and colours of the ``parts`` columns (labels, ...).
    title : text above the graph.
    directed : draw arrows (slower for thousands of edges).
    weight_name : what an edge weight counts, for tooltips and the toolbar.
    min_weight, top_k : initial edge filters (also synced traits: show edges with weight >=
        ``min_weight``, and only the ``top_k`` heaviest when ``top_k`` > 0). Highlighted edges are
        always shown.
    height : height of the drawing in px.
    label_size : font size of node labels in px at zoom 1 (default 8).
    label_position : ``"bottom"`` (default: under the node, centred) or ``"right"`` (beside the
        node, on a light background: suits rows of nodes with long labels).
    label_width : longest node label in layout units; longer labels end with an ellipsis
        (default None: no limit).
    edge_budget : most edges drawn (default :data:`EDGE_BUDGET`; 0: no limit). A larger graph
        shows its ``edge_budget`` heaviest edges (by ``|weight|``), the highlighted ones, and the
        nodes they join, with a notice and a control that raises the budget; Python keeps the
        whole graph (indices in :meth:`set_highlight` are always those of the whole graph).
    min_zoom : the first view fits the whole graph, but never zooms out further than this
        (default 0: no limit); a larger graph then starts at its top (centred when it is
        narrower than the canvas, else from its left edge) and the user pans; the toolbar's
        "fit" shows it all, "start" comes back.
    selection : the shared :class:`Selection`.

    Notes
    -----
    Subclasses can add a toolbar row by putting ``controls`` in the data (override
    ``_encode``): a list of ``{"name", "label", "type", "value", "options", "placeholder"}``
    where ``type`` is ``"select"`` (``options`` = ``[[value, text], ...]``), ``"text"`` or
    ``"number"``; each control sets the synced trait ``name`` (a text field on Enter or blur),
    so the subclass observes that trait and redraws. Elements get the class
    ``mri-control-<name>``.
    """

    _view = "graph_view"
    #: name of a @command method ``(index) -> list of str`` whose lines are added to a node's tooltip
    _details_rpc: Optional[str] = None

    # ---- parameters (set from Python or from the view's toolbar) ----------------------------
    #: show edges with weight >= min_weight
    min_weight = t.Float(0.0).tag(sync=True)
    #: show only the top_k heaviest edges (0: all)
    top_k = t.Int(0).tag(sync=True)
    #: emphasised nodes and edges: ``{nodes, edges, node_weight?, edge_weight?}`` (see :meth:`set_highlight`)
    highlight = t.Dict().tag(sync=True, **array_serialization)

    # ---- the drawing (set by Python with :meth:`set_graph`); one row per node ----------------
    x = NDArray("float32", ndim=1).tag(sync=True)
    y = NDArray("float32", ndim=1).tag(sync=True)
    #: node diameters in px at zoom 1
    size = NDArray("float32", ndim=1).tag(sync=True)
    #: (n, 3) uint8 RGB
    color = NDArray("uint8", ndim=2).tag(sync=True)
    label = t.List(t.Unicode()).tag(sync=True)
    #: hover text of each node (None: its label); not ``tooltip``, the DOM widget's own title trait
    node_tooltip = t.List(t.Unicode(), default_value=None, allow_none=True).tag(sync=True)
    #: node shapes (:data:`SHAPES`), None: ellipses
    shape = t.List(t.Unicode(), default_value=None, allow_none=True).tag(sync=True)
    #: (n, K) shares drawn as pies, or None
    parts = NDArray("float32", ndim=2, allow_none=True).tag(sync=True)
    #: selection keys set by a click on a node, and (n, len(select_keys)) int32 values (int32 min: unset)
    select_keys = t.List(t.Unicode()).tag(sync=True)
    select = NDArray("int32", ndim=2).tag(sync=True)
    #: index into ``groups`` of each node's box, -1 for none; or None
    parent = NDArray("int32", ndim=1, allow_none=True).tag(sync=True)
    #: compound boxes ``[{"label": str}]``
    groups = t.List(t.Dict()).tag(sync=True)
    # ---- one row per edge ----
    edge_source = NDArray("int32", ndim=1).tag(sync=True)
    edge_target = NDArray("int32", ndim=1).tag(sync=True)
    edge_weight = NDArray("float32", ndim=1).tag(sync=True)
    edge_color = NDArray("uint8", ndim=2).tag(sync=True)
    edge_width = NDArray("float32", ndim=1, allow_none=True).tag(sync=True)
    edge_parts = NDArray("float32", ndim=2, allow_none=True).tag(sync=True)
    edge_tooltip = t.List(t.Unicode(), default_value=None, allow_none=True).tag(sync=True)
    # ---- the rest of the drawing ----
    part_names = t.List(t.Unicode()).tag(sync=True)
    part_colors = t.List(t.Unicode()).tag(sync=True)
    #: free text ``[{x, y, text, size, align, bold, color?, select?}]``
    annotations = t.List(t.Dict()).tag(sync=True)
    #: toolbar controls of subclasses ``[{name, label, type, value, options?, placeholder?}]``
    controls = t.List(t.Dict()).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    directed = t.Bool(False).tag(sync=True)
    weight_name = t.Unicode("weight").tag(sync=True)
    #: height of the drawing in px
    height = t.Int(520).tag(sync=True)
    #: the @command giving extra tooltip lines of a node, or None
    details_command = t.Unicode(None, allow_none=True).tag(sync=True)
    label_size = t.Float(8.0).tag(sync=True)
    label_position = t.Unicode("bottom").tag(sync=True)
    label_width = t.Float(None, allow_none=True).tag(sync=True)
    min_zoom = t.Float(0.0).tag(sync=True)
    #: most edges drawn (0: all); set by the view's "more edges" control too
    edge_budget = t.Int(EDGE_BUDGET).tag(sync=True)
    #: when over budget: index in the whole graph of each node / edge drawn (else None: all of them)
    node_ids = NDArray("int32", ndim=1, allow_none=True).tag(sync=True)
    edge_ids = NDArray("int32", ndim=1, allow_none=True).tag(sync=True)
    #: ``{"nodes", "edges"}``: sizes of the whole graph when only a part is drawn (else empty)
    budget_info = t.Dict().tag(sync=True)

    def __init__(self, nodes, edges=None, *, groups=None, annotations=None, part_names=None, part_colors=None,
                 title: str = "", directed: bool = False, weight_name: str = "weight", min_weight: float = 0.0,
                 top_k: int = 0, height: int = 520, label_size: float = 8.0, label_position: str = "bottom",
                 label_width: Optional[float] = None, min_zoom: float = 0.0, edge_budget: int = EDGE_BUDGET,
                 selection: Optional[Selection] = None):
        super().__init__(selection=selection)
        from .._checks import check_int as _ci
        self._full = None
        self.edge_budget = _ci(edge_budget, "edge_budget", min=0, error=GraphError, hint=" (0 draws every edge)")
        self.set_graph(nodes, edges, groups=groups, annotations=annotations, part_names=part_names,
                       part_colors=part_colors, title=title, directed=directed, weight_name=weight_name,
                       height=height, label_size=label_size, label_position=label_position,
                       label_width=label_width, min_zoom=min_zoom)
        self.min_weight = float(min_weight)
        from .._checks import check_int
        self.top_k = check_int(top_k, "top_k", min=0, error=GraphError, hint=" (0 shows every edge)")

    # ---- building ----------------------------------------------------------------------------
    def set_graph(self, nodes, edges=None, *, groups=None, annotations=None, part_names=None, part_colors=None,
                  title: str = "", directed: bool = False, weight_name: str = "weight", height: int = 520,
                  label_size: float = 8.0, label_position: str = "bottom", label_width: Optional[float] = None,
                  min_zoom: float = 0.0) -> None:
        """Replace the graph drawn (same arguments as the constructor); clears the highlight."""
        data = self._encode(nodes, edges, groups, annotations, part_names, part_colors)
        from .._checks import check_bool
        data.update(title=str(title), directed=check_bool(directed, "directed"), weight_name=str(weight_name),
                    height=_positive(height, "height", int), details_command=self._details_rpc,
                    label_size=_positive(label_size, "label_size"),
                    label_position=_choice(label_position, "label_position", LABEL_POSITIONS),
                    label_width=None if label_width is None else _positive(label_width, "label_width"),
                    min_zoom=_positive(min_zoom, "min_zoom", zero=True))
        self._n_nodes = int(data["x"].shape[0])
        self._n_edges = int(data["edge_source"].shape[0])
        self._full = data
        self._hl_syncing = True
        try:
            self.highlight = {}
        finally:
            self._hl_syncing = False
        self._set_data(self._budgeted())

    # ---- edge budget -------------------------------------------------------------------------
    def _budgeted(self) -> dict:
        """The data drawn: the whole graph, or its heaviest ``edge_budget`` edges (plus highlighted ones)."""
        data = dict(self._full)
        m, budget = self._n_edges, int(self.edge_budget)
        if not budget or m <= budget:
            data.update(node_ids=None, edge_ids=None, budget_info={})
            return data
        w = np.abs(data["edge_weight"])
        keep = np.zeros(m, bool)
        keep[np.argsort(-w, kind="stable")[:budget]] = True
        hl = self.highlight or {}
        if len(hl.get("edges", ())):
            keep[np.asarray(hl["edges"])] = True
        eids = np.flatnonzero(keep)
        nkeep = np.zeros(self._n_nodes, bool)
        nkeep[data["edge_source"][eids]] = True
        nkeep[data["edge_target"][eids]] = True
        if len(hl.get("nodes", ())):
            nkeep[np.asarray(hl["nodes"])] = True
        nids = np.flatnonzero(nkeep)
        where = np.full(self._n_nodes, -1, np.int64)
        where[nids] = np.arange(nids.size)
        for k in _NODE_COLS:
            v = data[k]
            if v is not None:
                data[k] = [v[i] for i in nids.tolist()] if isinstance(v, list) else v[nids]
        for k in _EDGE_COLS:
            v = data[k]
            if v is not None:
                data[k] = [v[j] for j in eids.tolist()] if isinstance(v, list) else v[eids]
        data["edge_source"] = where[data["edge_source"]].astype(np.int32)
        data["edge_target"] = where[data["edge_target"]].astype(np.int32)
        data.update(node_ids=nids.astype(np.int32), edge_ids=eids.astype(np.int32),
                    budget_info={"nodes": self._n_nodes, "edges": m})
        return data

    @t.observe("edge_budget")
    def _on_budget(self, change):
        if self._full is not None:
            self._set_data(self._budgeted())

    @t.observe("highlight")
    def _on_highlight_budget(self, change):
        # highlighted edges and nodes are always drawn: bring in those the budget left out
        if self._full is None or getattr(self, "_hl_syncing", False) or self.node_ids is None:
            return
        hl = change["new"] or {}
        have_e = np.zeros(self._n_edges, bool)
        have_e[self.edge_ids] = True
        have_n = np.zeros(self._n_nodes, bool)
        have_n[self.node_ids] = True
        if not have_e[np.asarray(hl.get("edges", []), np.int64)].all() \
                or not have_n[np.asarray(hl.get("nodes", []), np.int64)].all():
            self._set_data(self._budgeted())

    @property
    def whole(self) -> dict:
        """The whole graph's data (``data`` holds what is drawn: a part of it above ``edge_budget``)."""
        return dict(self._full) if self._full is not None else self.data

    def _encode(self, nodes, edges, groups, annotations, part_names, part_colors) -> dict:
        cols = _table(nodes, "nodes")
        unknown = set(cols) - set(NODE_COLUMNS)
        if unknown:
            raise GraphError(f"unknown node columns {sorted(unknown)}; known: {NODE_COLUMNS}")
        if _column(cols, "x") is None or _column(cols, "y") is None:
            raise GraphError("nodes need 'x' and 'y' columns (positions computed in Python)")
        x = np.asarray(_column(cols, "x"), dtype=np.float64).reshape(-1)
        n = x.shape[0]
        out: dict[str, Any] = {"x": _floats(x, n, "nodes['x']"), "y": _floats(_column(cols, "y"), n, "nodes['y']")}
        size = _column(cols, "size")
        out["size"] = _floats(12.0 if size is None else size, n, "nodes['size']")
        color = _column(cols, "color")
        out["color"] = to_rgb("#888888" if color is None else color, n, "nodes['color']")
        label = _column(cols, "label")
        out["label"] = _strings([""] * n if label is None else label, n, "nodes['label']")
        tip = _column(cols, "tooltip")
        out["node_tooltip"] = None if tip is None else _strings(tip, n, "nodes['tooltip']")
        shape = _column(cols, "shape")
        if shape is not None:
            shape = _strings(shape, n, "nodes['shape']")
            bad = sorted(set(shape) - set(SHAPES))
            if bad:
                raise GraphError(f"unknown node shapes {bad}; choose among {SHAPES}")
        out["shape"] = shape
        K = None
        parts = _column(cols, "parts")
        out["parts"] = None if parts is None else _parts(parts, n, "nodes['parts']")
        if out["parts"] is not None:
            K = out["parts"].shape[1]
        sel = _column(cols, "select")
        if hasattr(sel, "select_keys") and hasattr(sel, "select_values"):  # already as columns
            keys, vals = list(sel.select_keys), np.asarray(sel.select_values, np.int32).reshape(n, -1)
        else:
            keys, vals = encode_select([None] * n if sel is None else sel, n)
        out["select_keys"], out["select"] = keys, vals
        groups = list(groups or [])
        for i, g in enumerate(groups):
            if not isinstance(g, Mapping):
                raise GraphError(f"groups[{i}] must be a dict like {{'label': 'layer 3'}}")
        out["groups"] = [{"label": str(g.get("label", ""))} for g in groups]
        parent = _column(cols, "parent")
        if parent is not None:
            p = np.asarray(parent).reshape(-1)
            if p.shape != (n,) or p.dtype.kind not in "iu":
                raise GraphError("nodes['parent'] must hold one integer per node (group index or -1)")
            if p.size and (p.min() < -1 or p.max() >= len(groups)):
                raise GraphError(f"nodes['parent'] must lie in -1..{len(groups) - 1} (indices into groups)")
            out["parent"] = p.astype(np.int32)
        else:
            out["parent"] = None

        ecols = _table(edges if edges is not None else {"source": [], "target": []}, "edges")
        unknown = set(ecols) - set(EDGE_COLUMNS)
        if unknown:
            raise GraphError(f"unknown edge columns {sorted(unknown)}; known: {EDGE_COLUMNS}")
        if _column(ecols, "source") is None or _column(ecols, "target") is None:
            raise GraphError("edges need 'source' and 'target' columns (node indices)")
        src = np.asarray(_column(ecols, "source")).reshape(-1)
        dst = np.asarray(_column(ecols, "target")).reshape(-1)
        m = src.shape[0]
        if dst.shape != (m,):
            raise GraphError(f"edges have {m} sources but {dst.size} targets")
        for name, a in (("source", src), ("target", dst)):
            if m and (a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= n):
                raise GraphError(f"edges['{name}'] must be integer node indices in 0..{n - 1}")
        out["edge_source"], out["edge_target"] = src.astype(np.int32), dst.astype(np.int32)
        w = _column(ecols, "weight")
        out["edge_weight"] = _floats(1.0 if w is None else w, m, "edges['weight']")
        ec = _column(ecols, "color")
        out["edge_color"] = to_rgb("#999999" if ec is None else ec, m, "edges['color']")
        ew = _column(ecols, "width")
        out["edge_width"] = None if ew is None else _floats(ew, m, "edges['width']")
        ep = _column(ecols, "parts")
        out["edge_parts"] = None if ep is None else _parts(ep, m, "edges['parts']")
        if out["edge_parts"] is not None:
            K = out["edge_parts"].shape[1] if K is None else K
            if out["edge_parts"].shape[1] != K:
                raise GraphError("nodes['parts'] and edges['parts'] must have the same number of columns")
        et = _column(ecols, "tooltip")
        out["edge_tooltip"] = None if et is None else _strings(et, m, "edges['tooltip']")

        if K is not None:
            names = [f"part {i}" for i in range(K)] if part_names is None else [str(s) for s in part_names]
            if len(names) != K:
                raise GraphError(f"part_names has {len(names)} names for {K} parts columns")
            pal = CATEGORICAL if part_colors is None else list(part_colors)
            if len(pal) < K:
                raise GraphError(f"part_colors has {len(pal)} colours for {K} parts columns")
            out["part_names"] = names
            out["part_colors"] = ["#%02x%02x%02x" % _hex_to_rgb(c) for c in pal[:K]]
        else:
            out["part_names"], out["part_colors"] = [], []

        ann = []
        for i, a in enumerate(annotations or []):
            if not isinstance(a, Mapping) or "x" not in a or "y" not in a or "text" not in a:
                raise GraphError(f"annotations[{i}] must be a dict with 'x', 'y' and 'text'")
            item = {"x": float(a["x"]), "y": float(a["y"]), "text": str(a["text"]),
                    "size": _positive(a.get("size", 13.0), f"annotations[{i}]['size']"),
                    "align": _choice(a.get("align", "center"), f"annotations[{i}]['align']", ("center", "left")),
                    "bold": bool(a.get("bold", True))}
            if a.get("color") is not None:
                item["color"] = "#%02x%02x%02x" % _hex_to_rgb(a["color"])
            if a.get("select") is not None:
                k, v = encode_select([a["select"]], 1)
                item["select"] = {kk: int(vv) for kk, vv in zip(k, v[0])}
            ann.append(item)
        out["annotations"] = ann
        out["controls"] = []
        return out

    @classmethod
    def from_networkx(cls, G, pos=None, **kwargs) -> "GraphView":
        """A GraphView of a networkx graph.

        Node attributes ``x``, ``y`` (or ``pos`` = {node: (x, y)}), ``size``, ``color``,
        ``label`` (default ``str(node)``), ``tooltip``, ``select`` and edge attributes
        ``weight``, ``color``, ``width``, ``tooltip`` are used when present; other keyword
        arguments go to the constructor.
        """
        order = list(G.nodes)
        if not order:
            raise GraphError("the graph has no nodes")
        index = {v: i for i, v in enumerate(order)}
        nd = G.nodes
        if pos is None:
            if not all("x" in nd[v] and "y" in nd[v] for v in order):
                raise GraphError("pass pos={node: (x, y)} or give every node 'x' and 'y' attributes "
                                 "(e.g. pos=networkx.multipartite_layout(G, subset_key='layer'))")
            xy = np.array([[nd[v]["x"], nd[v]["y"]] for v in order], np.float64)
        else:
            missing = [v for v in order if v not in pos]
            if missing:
                raise GraphError(f"pos lacks {len(missing)} nodes, e.g. {missing[0]!r}")
            xy = np.array([pos[v] for v in order], np.float64)
        nodes: dict = {"x": xy[:, 0], "y": xy[:, 1], "label": [str(nd[v].get("label", v)) for v in order]}
        for key in ("size", "color", "tooltip", "select"):
            if all(key in nd[v] for v in order):
                nodes[key] = [nd[v][key] for v in order]
        E = list(G.edges(data=True))
        edges: dict = {"source": np.array([index[u] for u, _, _ in E], np.int64),
                       "target": np.array([index[v] for _, v, _ in E], np.int64),
                       "weight": np.array([float(d.get("weight", 1.0)) for _, _, d in E], np.float64)}
        for key in ("color", "width", "tooltip"):
            if E and all(key in d for _, _, d in E):
                edges[key] = [d[key] for _, _, d in E]
        kwargs.setdefault("directed", G.is_directed())
        return cls(nodes, edges, **kwargs)

    # ---- highlight ---------------------------------------------------------------------------
    def set_highlight(self, nodes=(), edges=(), *, edge_weight=None, node_weight=None) -> None:
        """Emphasise some nodes and edges (by index); the rest is dimmed.

        ``edge_weight`` (one value per highlighted edge) sets their drawn width, e.g. the number of
        selected documents that take the edge; ``node_weight`` likewise for node tooltips.
        """
        nodes = np.asarray(list(nodes), dtype=np.int64).reshape(-1)
        edges = np.asarray(list(edges), dtype=np.int64).reshape(-1)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= self._n_nodes):
            raise GraphError(f"highlighted node indices must lie in 0..{self._n_nodes - 1}")
        if edges.size and (edges.min() < 0 or edges.max() >= self._n_edges):
            raise GraphError(f"highlighted edge indices must lie in 0..{self._n_edges - 1}")
        hl: dict = {"nodes": nodes.astype(np.int32), "edges": edges.astype(np.int32)}
        for name, vals, idx in (("edge_weight", edge_weight, edges), ("node_weight", node_weight, nodes)):
            if vals is not None:
                hl[name] = _floats(vals, idx.size, name)
        self.highlight = hl

    def clear_highlight(self) -> None:
        """Remove the highlight."""
        self.highlight = {}

    @t.validate("min_weight")
    def _check_min_weight(self, proposal):
        v = float(proposal["value"])
        if not np.isfinite(v):
            raise t.TraitError("min_weight must be a finite number")
        return v

    @t.validate("edge_budget")
    def _check_edge_budget(self, proposal):
        return check_int(proposal["value"], "edge_budget", min=0, error=t.TraitError, hint=" (0 draws every edge)")

    @t.validate("top_k")
    def _check_top_k(self, proposal):
        v = int(proposal["value"])
        if v < 0:
            raise t.TraitError("top_k must be >= 0 (0 shows every edge)")
        return v

    @t.validate("height")
    def _check_height(self, proposal):
        return check_int(proposal["value"], "height", min=1, error=t.TraitError, hint=" (px)")

    @t.validate("label_position")
    def _check_label_position(self, proposal):
        return check_choice(proposal["value"], LABEL_POSITIONS, "label_position", error=t.TraitError)
