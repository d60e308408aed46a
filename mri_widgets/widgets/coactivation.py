"""CoactivationGraph: the region graph of ActivationAreas, drawn live with cytoscape.js.

Layers are columns (positions computed here); a node is a region of one layer, drawn as a pie of
its documents' labels and sized by their number; an edge joins regions of neighbouring layers,
as wide as the documents that take it and coloured by the blend of their labels. Selecting a
region (here, or in :class:`~mri_widgets.LayerGrid` through ``selection.layer`` and
``selection.region``) highlights it and the paths of its documents through every layer.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from typing import Optional

import networkx as nx
import numpy as np
import traitlets as t

from ..analysis.regions import region_graph_arrays
from .base import command
from .graph_layout import layered_layout
from .graph_view import CATEGORICAL, EDGE_BUDGET, GraphView, blend
from .selection import Selection

__all__ = ["CoactivationGraph", "layered_positions", "column_slots"]


class _SelectColumns:
    """Selection patches ``{"layer", "region"}`` of every node as two columns (no dict per node)."""

    def __init__(self, layer, region):
        self.select_keys = ["layer", "region"]
        self.select_values = np.stack([np.asarray(layer), np.asarray(region)], 1).astype(np.int32)

    def __len__(self):
        return self.select_values.shape[0]


def layered_positions(G: nx.DiGraph, layer_order, *, column_spacing: float = 140.0,
                      row_spacing: float = 22.0, sweeps: int = 2) -> dict:
    """Column layout of a region graph: x by layer, y by barycentre ordering within a layer.

    Nodes are ``(layer, region)`` pairs; columns follow ``layer_order``. The first order in a
    column is by node key; then :func:`~mri_widgets.widgets.graph_layout.layered_layout` sweeps
    ``sweeps`` times forward (mean rank of predecessors, weighted by ``|weight|``) and backward
    (successors); this keeps documents' paths fairly straight. Returns ``{node: (x, y)}``,
    columns centred on y = 0.
    """
    column = {l: i for i, l in enumerate(layer_order)}
    nodes = [n for n in G.nodes if n[0] in column]
    keep = set(nodes)
    edges = [(u, v) for u, v in G.edges if u in keep and v in keep]
    return layered_layout(nodes, edges, layer={n: column[n[0]] for n in nodes},
                          weight={(u, v): G.edges[u, v].get("weight", 1.0) for u, v in edges}, sweeps=sweeps,
                          layer_gap=column_spacing, node_gap=row_spacing, align="center", direction="LR")


def column_slots(col: np.ndarray, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, sweeps: int = 2) -> np.ndarray:
    """Slot (rank) of each node within its column after barycentre sweeps, vectorised.

    The same ordering as :func:`layered_positions` for a graph whose edges join neighbouring
    columns: nodes come sorted by (column, key), so the first rank is the position in the column;
    each sweep moves a node to the ``|weight|``-weighted mean rank of its predecessors (forward)
    then successors (backward), ties kept in the current order; nodes without neighbours keep
    their rank. ``src`` / ``dst`` are node indices with ``col[dst] == col[src] + 1``.
    """
    col = np.asarray(col, np.int64)
    n = col.size
    if n == 0:
        return np.zeros(0, np.int64)
    L = int(col.max()) + 1
    starts = np.searchsorted(col, np.arange(L + 1))
    rank = (np.arange(n) - starts[col]).astype(np.float64)
    w = np.abs(np.asarray(weight, np.float64))
    by = np.argsort(col[src], kind="stable")
    src, dst, w = np.asarray(src)[by], np.asarray(dst)[by], w[by]
    estart = np.searchsorted(col[src], np.arange(L + 1))

    def reorder(i, e, mine, other):
        a, b = starts[i], starts[i + 1]
        if b - a < 2:
            return
        local = mine[e] - a
        tot = np.bincount(local, weights=w[e], minlength=b - a)
        num = np.bincount(local, weights=rank[other[e]] * w[e], minlength=b - a)
        cur = rank[a:b]
        bary = np.where(tot > 0, num / np.where(tot > 0, tot, 1.0), cur)
        order = np.lexsort((cur, bary))
        new = np.empty(b - a)
        new[order] = np.arange(b - a)
        rank[a:b] = new

    for _ in range(int(sweeps)):
        for i in range(1, L):  # forward: predecessors in column i - 1
            e = slice(estart[i - 1], estart[i])
            reorder(i, e, dst, src)
        for i in range(L - 2, -1, -1):  # backward: successors in column i + 1
            e = slice(estart[i], estart[i + 1])
            reorder(i, e, src, dst)
    return rank.astype(np.int64)


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


class CoactivationGraph(GraphView):
    """Regions of every layer and the documents that flow between them.

    Parameters
    ----------
    areas : ActivationAreas
    labels : label name or list of names to draw (default: all labels of the corpus).
    min_weight : initial minimum edge weight shown (documents; Spearman rho in N-D mode; default:
        every edge). Every edge is sent to the view, so the toolbar can lower it again.
    top_k : initial number of heaviest edges shown (None or 0: all).
    column_spacing, row_spacing : layout in px at zoom 1 (default: chosen so that the drawing is
        about 1.7 times as wide as high).
    height : height of the drawing in px.
    edge_budget : most edges drawn (the heaviest; 0: all), see :class:`GraphView`.
    selection : the shared :class:`Selection`; a click on a region sets ``layer`` and
        ``region``, a click on a column header sets ``layer``.

    Attributes
    ----------
    graph : the networkx.DiGraph drawn (see :meth:`ActivationAreas.graph`).
    nodes : list of the graph's nodes in drawing order (index = node index in the view).
    """

    _details_rpc = "node_details"

    def __init__(self, areas, labels=None, *, min_weight: Optional[float] = None, top_k: Optional[int] = None,
                 column_spacing: Optional[float] = None, row_spacing: Optional[float] = None, height: int = 560,
                 edge_budget: int = EDGE_BUDGET, selection: Optional[Selection] = None):
        if not hasattr(areas, "graph") or not hasattr(areas, "paths"):
            raise TypeError(f"areas must be a mri_widgets.ActivationAreas, got {type(areas).__name__}")
        self.areas = areas
        names = areas.corpus.label_names
        if labels is None:
            self.labels = list(names)
        else:
            chosen = [labels] if isinstance(labels, str) else list(labels)
            for lab in chosen:
                areas.corpus.label_id(lab)  # KeyError naming the known labels
            if not chosen:
                raise ValueError("labels is empty; pass None for all labels")
            self.labels = [n for n in names if n in set(map(str, chosen))]
        self._label_cols = [names.index(n) for n in self.labels]
        self._graph = None
        if areas.mode == "2d":  # arrays, one sort for all layers (the networkx graph is built on demand)
            self._arrays = region_graph_arrays(areas.region_ids, areas.corpus.label_ids, len(names),
                                               labels=self._label_cols)
            per_layer = np.bincount(self._arrays["node_layer"], minlength=len(areas.layer_ids))
        else:
            self._arrays = None
            self._graph = areas.graph(None if labels is None else self.labels, min_weight=1)
            per_layer = np.array(list(Counter(n[0] for n in self._graph.nodes).values()) or [1])
        self._spacing(column_spacing, row_spacing, most=int(per_layer.max(initial=1)))
        nodes, edges, kw = self._drawing()
        self._updating = True
        super().__init__(nodes, edges, min_weight=float(min_weight or 0), top_k=int(top_k or 0), height=height,
                         edge_budget=edge_budget, selection=selection, **kw)
        self._updating = False
        self._follow_selection()

    # ---- drawing -----------------------------------------------------------------------------
    @property
    def graph(self) -> nx.DiGraph:
        """The networkx.DiGraph drawn (see :meth:`ActivationAreas.graph`; built on first use)."""
        if self._graph is None:
            self._graph = self.areas.graph(None if self.labels == self.areas.corpus.label_names else self.labels,
                                           min_weight=1)
        return self._graph

    @property
    def _edge_index(self) -> dict:
        if getattr(self, "_edge_index_", None) is None:
            src, dst = self._edge_ends
            self._edge_index_ = {(self.nodes[a], self.nodes[b]): j for j, (a, b) in enumerate(zip(src.tolist(),
                                                                                                  dst.tolist()))}
        return self._edge_index_

    def _spacing(self, column_spacing, row_spacing, aspect: float = 1.7, most: int = 1):
        """Column and row spacing: given, or chosen for a drawing about ``aspect`` times as wide as high."""
        most = max(1, most)
        gaps = max(1, len(self.areas.layer_ids) - 1)
        row = 22.0 if row_spacing is None else float(row_spacing)
        if column_spacing is None:
            column_spacing = float(np.clip(aspect * most * row / gaps, 60.0, 160.0))
        if row_spacing is None:  # few nodes per column (N-D mode): spread them out
            row = float(np.clip(gaps * column_spacing / (aspect * most), 22.0, 80.0))
        if column_spacing <= 0 or row <= 0:
            raise ValueError("column_spacing and row_spacing must be positive")
        self._column_spacing, self._row_spacing = float(column_spacing), row

    def _drawing(self):
        if self.areas.mode == "2d":
            return self._drawing_2d()
        return self._drawing_nd()

    def _drawing_2d(self):
        """Nodes and edges from the graph arrays (vectorised: 50,000 documents in seconds)."""
        areas, A = self.areas, self._arrays
        layer_ids = list(areas.layer_ids)
        names = dict(zip(layer_ids, areas.layers))
        col, reg = A["node_layer"], A["node_region"]
        slot = column_slots(col, A["edge_source"], A["edge_target"], A["edge_weight"], sweeps=2)
        size_col = np.bincount(col, minlength=len(layer_ids))
        # drawing order: by column, then by slot (top to bottom)
        order = np.lexsort((slot, col))
        where = np.empty_like(order)
        where[order] = np.arange(order.size)
        col, reg, slot = col[order], reg[order], slot[order]
        counts = A["node_counts"][order].astype(np.float64)
        ids = np.asarray(layer_ids, np.int64)
        self.nodes = list(zip(ids[col].tolist(), reg.tolist()))
        self._node_index = {n: i for i, n in enumerate(self.nodes)}
        src, dst = where[A["edge_source"]], where[A["edge_target"]]
        self._edge_ends = (src, dst)
        self._edge_index_ = None
        x = col * self._column_spacing
        y = (slot - (size_col[col] - 1) / 2) * self._row_spacing
        palette = [CATEGORICAL[i % len(CATEGORICAL)] for i in self._label_cols]
        g = areas.grid_size
        total = counts.sum(1)
        top = total.max() if total.size else 1.0
        layer_name = [names[l] for l in layer_ids]
        row, cc = (reg // g).tolist(), (reg % g).tolist()
        nodes = dict(
            x=x, y=y, size=6 + 22 * np.sqrt(total / max(top, 1)), color=blend(counts, palette), parts=counts,
            label=[f"{r},{c}" for r, c in zip(row, cc)],
            tooltip=[f"{layer_name[l]} \u00b7 region {r0} (row {r}, col {c})\n{int(t)} documents"
                     for l, r0, r, c, t in zip(col.tolist(), reg.tolist(), row, cc, total.tolist())],
            select=_SelectColumns(ids[col], reg),
        )
        ecounts = A["edge_counts"].astype(np.float64)
        edges = {"source": src, "target": dst, "weight": A["edge_weight"].astype(np.float64),
                 "color": blend(ecounts, palette), "parts": ecounts}
        kw = dict(part_names=self.labels, part_colors=palette, weight_name="documents")
        kw["title"] = f"Co-activation graph: {len(self.labels)} labels, {len(self.nodes)} regions"
        return nodes, edges, self._annotate(kw, float(y.min()) if y.size else 0.0)

    def _annotate(self, kw, top_y):
        areas = self.areas
        layer_ids = list(areas.layer_ids)
        names = dict(zip(layer_ids, areas.layers))
        wide = self._column_spacing >= 100
        font = 13.0 if wide else max(13.0, 0.3 * self._column_spacing)
        short = {l: ("emb" if areas.site == "resid" and l == 0 else str(l)) for l in layer_ids}
        kw["annotations"] = [{"x": i * self._column_spacing, "y": top_y - 2.5 * font, "size": font,
                              "text": names[l] if wide else short[l], "select": {"layer": int(l)}}
                             for i, l in enumerate(layer_ids)]
        kw["directed"] = False
        return kw

    def _drawing_nd(self):
        areas, G = self.areas, self.graph
        layer_ids = list(areas.layer_ids)
        names = dict(zip(layer_ids, areas.layers))
        # regions: barycentre order keeps paths straight; components (N-D) stay in their order
        pos = layered_positions(G, layer_ids, column_spacing=self._column_spacing, row_spacing=self._row_spacing,
                                sweeps=0)
        self.nodes = sorted(G.nodes, key=lambda n: (layer_ids.index(n[0]), pos[n][1]))
        self._node_index = {n: i for i, n in enumerate(self.nodes)}
        E = list(G.edges(data=True))
        self._edge_index_ = {(u, v): j for j, (u, v, _) in enumerate(E)}
        xy = np.array([pos[n] for n in self.nodes], np.float64).reshape(-1, 2)
        nodes: dict = {"x": xy[:, 0], "y": xy[:, 1]}
        edges: dict = {"source": np.array([self._node_index[u] for u, _, _ in E], np.int64),
                       "target": np.array([self._node_index[v] for _, v, _ in E], np.int64),
                       "weight": np.array([d["weight"] for _, _, d in E], np.float64)}
        nodes.update(size=14, color="#6a8caf", label=[f"c{c}" for _, c in self.nodes],
                     tooltip=[f"{names[l]} \u00b7 component {c}" for l, c in self.nodes],
                     select=[{"layer": int(l)} for l, _ in self.nodes])
        edges.update(color="#4a6fa5")
        kw = dict(weight_name="Spearman rho", title=f"Component correlation graph (rho > {areas.threshold:g})")
        return nodes, edges, self._annotate(kw, float(xy[:, 1].min()) if xy.size else 0.0)

    # ---- selection -> highlighted paths ------------------------------------------------------
    @t.observe("_sel")
    def _on_sel(self, change):
        if not getattr(self, "_updating", True):
            self._follow_selection()

    def _follow_selection(self):
        sel = self.selection
        if self.areas.mode != "2d" or sel.layer is None or sel.region is None \
                or sel.layer not in self.areas.layer_ids or not 0 <= sel.region < self.areas.n_regions:
            if self.highlight:
                self.clear_highlight()
            return
        p = self.areas.paths(sel.layer, sel.region, labels=self.labels)
        if not len(p["docs"]):
            self.clear_highlight()
            return
        nodes = [(self._node_index[k], c) for k, c in p["nodes"].items() if k in self._node_index]
        edges = [(self._edge_index[k], c) for k, c in p["edges"].items() if k in self._edge_index]
        self.set_highlight([i for i, _ in nodes], [j for j, _ in edges],
                           node_weight=[c for _, c in nodes], edge_weight=[c for _, c in edges])

    def paths(self, layer: int, region: int) -> dict:
        """Indices (in the view) of the nodes and edges the documents of a region go through."""
        p = self.areas.paths(layer, region, labels=self.labels)
        return {"docs": p["docs"],
                "nodes": {self._node_index[k]: c for k, c in p["nodes"].items() if k in self._node_index},
                "edges": {self._edge_index[k]: c for k, c in p["edges"].items() if k in self._edge_index}}

    @command
    def node_details(self, index: int) -> list:
        """Tooltip lines for node ``index``: a few example texts of the region."""
        if self.areas.mode != "2d":
            return []
        from .._checks import check_index

        layer, region = self.nodes[check_index(index, len(self.nodes), "node index")]
        return [f"[{e['label']}] {_short(e['text'])}" for e in self.areas.examples(layer, region, k=3)]

    # ---- export ------------------------------------------------------------------------------
    def to_networkx(self) -> nx.DiGraph:
        """A copy of the graph with the drawing's ``x``, ``y`` and ``color`` on every node."""
        H = self.graph.copy()
        d = self.whole
        x, y = np.asarray(d["x"]), np.asarray(d["y"])
        col = np.asarray(d["color"])
        for i, n in enumerate(self.nodes):
            H.nodes[n].update(x=float(x[i]), y=float(y[i]), color="#%02x%02x%02x" % tuple(int(c) for c in col[i]))
        return H

    def to_ipycytoscape(self):
        """The same graph as an ``ipycytoscape.CytoscapeWidget`` (preset positions).

        Needs the optional package ipycytoscape (one Python widget per node and edge: use it for
        small graphs, or for export).
        """
        if importlib.util.find_spec("ipycytoscape") is None:
            raise ImportError("to_ipycytoscape() needs the optional package ipycytoscape: pip install ipycytoscape")
        import ipycytoscape  # optional dependency

        H = self.to_networkx()
        U = nx.DiGraph()
        for n, a in H.nodes(data=True):
            U.add_node(f"{n[0]}:{n[1]}", layer=int(n[0]), region=int(n[1]), color=a["color"],
                       total=int(a.get("total", 0)))
        for u, v, a in H.edges(data=True):
            U.add_edge(f"{u[0]}:{u[1]}", f"{v[0]}:{v[1]}", weight=float(a["weight"]))
        w = ipycytoscape.CytoscapeWidget()
        w.graph.add_graph_from_networkx(U, directed=True)
        pos = {f"{n[0]}:{n[1]}": (H.nodes[n]["x"], H.nodes[n]["y"]) for n in H.nodes}
        for node in w.graph.nodes:
            x, y = pos[node.data["id"]]
            node.position = {"x": x, "y": y}
        w.set_layout(name="preset")
        w.set_style([{"selector": "node", "style": {"background-color": "data(color)", "width": 10, "height": 10}},
                     {"selector": "edge", "style": {"width": "mapData(weight, 0, 50, 0.5, 8)"}}])
        return w
