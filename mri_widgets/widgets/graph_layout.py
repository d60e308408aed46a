"""Positions and colours of drawn graphs: one layered-graph layout, and the drawing of traced graphs.

:func:`layered_layout` places any layered graph (Sugiyama style): each node in a layer (a column
for ``direction="LR"``, a row for ``"TB"``), given or computed as the longest path from the
sources; an edge that skips layers gets a placeholder in every layer it crosses, so that it runs
in a free corridor (edges leaving one node share it); within each layer nodes are ordered by weighted barycentre sweeps, which
keeps paths straight and crossings few. The region graph of
:class:`~mri_widgets.CoactivationGraph` (layers = model layers) and traced computation graphs
(:func:`graph_view_args`, layers = steps of the execution) both use it.

:func:`graph_view_args` turns a :class:`~mri_widgets.models.trace.TraceGraph` into the keyword
arguments of :class:`~mri_widgets.GraphView` (positions, colours, shapes, labels, group boxes);
it lived in ``models/trace.py`` before, which still re-exports it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Mapping, Optional, Sequence

from .._checks import check_choice, check_int

__all__ = ["layered_layout", "graph_view_args", "KIND_COLORS", "OP_COLORS"]

#: colours of traced-graph nodes by kind (Okabe-Ito)
KIND_COLORS = {"input": "#56B4E9", "output": "#D55E00", "module": "#999999", "collapsed": "#0072B2"}
#: colours of traced-graph operations
OP_COLORS = {"softmax": "#E69F00", "linear": "#009E73", "addmm": "#009E73", "matmul": "#CC79A7",
             "layer_norm": "#F0E442", "rms_norm": "#F0E442", "embedding": "#56B4E9"}

#: spacing of traced graphs: between steps, between lanes (px at zoom 1)
TRACE_STEP, TRACE_LANE = 64.0, 56.0


def layered_layout(nodes: Sequence[Hashable], edges: Iterable, *, layer: Optional[Mapping] = None,
                   order: Optional[Mapping] = None, weight: Optional[Mapping] = None, sweeps: int = 2,
                   layer_gap: float = 1.0, node_gap: float = 1.0, align: str = "center",
                   direction: str = "LR", dummies: bool = True) -> dict:
    """Positions ``{node: (x, y)}`` of a layered graph.

    Parameters
    ----------
    nodes : the nodes (any hashable).
    edges : ``(u, v)`` pairs between nodes.
    layer : ``{node: int}`` layer of each node; default: the longest path from a source
        (a DAG is required then), so every edge goes to a later layer.
    order : ``{node: sortable}`` first order within each layer (default: the node itself, then
        its position in ``nodes``); with ``sweeps=0`` it is the final order.
    weight : ``{(u, v): float}`` edge weights for the barycentres (absolute values; default 1).
    sweeps : forward-and-backward barycentre passes: a node moves to the weighted mean slot of
        its neighbours in the previous layer (forward), then of the next layer (backward).
    layer_gap, node_gap : distance between layers, and between neighbours in a layer.
    align : ``"center"``: each layer centred on 0; ``"start"``: lanes from 0 on: the path that
        spans the most layers runs straight in lane 0, and every other node takes the lane of
        its first predecessor when that lane is free (chains run straight).
    direction : ``"LR"``: layers are columns (x = layer), ``"TB"``: layers are rows (y = layer).
    dummies : give an edge that skips layers a placeholder slot in each layer it crosses (one
        per source node and layer: edges from one node share their corridor).

    Returns
    -------
    dict ``{node: (x, y)}``; layer ``i`` lies at ``i * layer_gap`` along the layer axis.
    """
    nodes = list(dict.fromkeys(nodes))
    known = set(nodes)
    edges = [(u, v) for u, v in edges]
    for u, v in edges:
        if u not in known or v not in known:
            raise ValueError(f"edge ({u!r}, {v!r}) joins a node that is not in nodes")
    check_choice(align, ("center", "start"), "align")
    check_choice(direction, ("LR", "TB"), "direction")
    sweeps = check_int(sweeps, "sweeps", min=0)
    index = {n: i for i, n in enumerate(nodes)}
    if layer is None:
        layer = _longest_path_layers(nodes, edges, order)
    else:
        missing = [n for n in nodes if n not in layer]
        if missing:
            raise ValueError(f"layer has no entry for {len(missing)} nodes, e.g. {missing[0]!r}")
    # dense layer indices 0..L-1 in the order of the given values
    values = sorted({layer[n] for n in nodes})
    dense = {v: i for i, v in enumerate(values)}
    lay = {n: dense[layer[n]] for n in nodes}
    w = {}
    for u, v in edges:
        w[(u, v)] = abs(float(weight.get((u, v), 1.0))) if weight is not None else 1.0

    # the layered graph: real nodes, and a chain of placeholders for each edge that skips layers
    key = {n: ((order[n] if order is not None else n), index[n]) for n in nodes}
    members: dict = defaultdict(list)
    for n in nodes:
        members[lay[n]].append(n)
    preds: dict = defaultdict(list)
    succs: dict = defaultdict(list)

    def link(a, b, wt):
        succs[a].append((b, wt))
        preds[b].append((a, wt))

    for _j, (u, v) in enumerate(edges):
        lu, lv = lay[u], lay[v]
        if lu == lv:
            continue  # an edge within a layer does not order anything
        a, b = (u, v) if lu < lv else (v, u)
        la, lb = min(lu, lv), max(lu, lv)
        prev = a
        if dummies:
            for k in range(la + 1, lb):
                # edges leaving the same node share their placeholders: one corridor per source
                d = ("__dummy__", a, k)
                if d not in lay:
                    key[d] = key[a] + (k,)  # next to its source at first
                    lay[d] = k
                    members[k].append(d)
                    link(prev, d, w[(u, v)])
                prev = d
        link(prev, b, w[(u, v)])
    L = len(values)
    # lanes: the path through the most layers is the spine, first in every layer (lane 0)
    spine = _spine(nodes, edges, lay, key) if align == "start" else set()
    first = lambda n: (n not in spine, _sortable(key[n]))  # noqa: E731
    rows = [sorted(members[i], key=first) for i in range(L)]
    rank = {n: i for r in rows for i, n in enumerate(r)}

    def reorder(i, neighbours):
        def bary(n):
            nb = [(m, wt) for m, wt in neighbours[n] if lay[m] != i]
            tot = sum(wt for _, wt in nb)
            return (n not in spine, sum(rank[m] * wt for m, wt in nb) / tot if tot else rank[n], rank[n])
        rows[i] = sorted(rows[i], key=bary)
        for s, n in enumerate(rows[i]):
            rank[n] = s

    for _ in range(sweeps):
        for i in range(1, L):
            reorder(i, preds)
        for i in range(L - 2, -1, -1):
            reorder(i, succs)
    slot: dict = {}
    for r in rows:
        if align == "center":
            for s, n in enumerate(r):
                slot[n] = s - (len(r) - 1) / 2
            continue
        # "start": lanes; a node keeps the lane of its first predecessor when it is free, so
        # chains (and placeholders of skipping edges) run straight; the order in the layer stays
        last = -1
        for n in r:
            lanes = [slot[m] for m, _ in preds[n] if m in slot]
            slot[n] = max(min(lanes) if lanes else 0, last + 1)
            last = slot[n]
    pos = {}
    for n in nodes:
        along, across = lay[n] * layer_gap, slot[n] * node_gap
        pos[n] = (along, across) if direction == "LR" else (across, along)
    return pos


def _sortable(k):
    """A sort key that never compares unlike types (node keys may mix ints, strings, tuples)."""
    if isinstance(k, tuple):
        return (2, tuple(_sortable(x) for x in k))
    if isinstance(k, (int, float)) and not isinstance(k, bool):
        return (0, k)
    return (1, str(k))


def _spine(nodes, edges, lay, key) -> set:
    """Nodes of the path with the most nodes, then spanning the most layers (ties: the earliest
    predecessors by ``key``): e.g. the residual stream of a traced model."""
    best: dict = {}  # node -> ((nodes, layers) of the best path ending here, its predecessor)
    into: dict = defaultdict(list)
    for u, v in edges:
        if lay[u] < lay[v]:
            into[v].append(u)
    for n in sorted(nodes, key=lambda n: (lay[n], _sortable(key[n]))):
        preds = sorted(into[n], key=lambda u: _sortable(key[u]))
        cands = [((best[u][0][0] + 1, best[u][0][1] + lay[n] - lay[u]), -i, u) for i, u in enumerate(preds)]
        best[n] = (max(cands)[0], max(cands)[2]) if cands else ((1, 0), None)
    if not best:
        return set()
    end = max(nodes, key=lambda n: (best[n][0], -lay[n]))
    out = set()
    while end is not None:
        out.add(end)
        end = best[end][1]
    return out


def _longest_path_layers(nodes, edges, order) -> dict:
    """Layer of each node: 0 for sources, else one more than its latest predecessor."""
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(nodes)
    G.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(G):
        raise ValueError("the graph has a cycle: pass layer={node: int} to place it")
    key = (lambda n: _sortable((order[n], n))) if order is not None else (lambda n: _sortable(n))
    out = {}
    for n in nx.lexicographical_topological_sort(G, key=key):
        out[n] = max((out[p] + 1 for p in G.predecessors(n)), default=0)
    return out


def _shape_str(shape) -> str:
    return "" if shape is None else "(" + ", ".join(str(s) for s in shape) + ")"


def graph_view_args(G, collapse_depth: Optional[int] = 2, expanded: Iterable[str] = (), *,
                    direction: str = "LR", height: Optional[int] = None) -> dict:
    """Keyword arguments for ``mri_widgets.GraphView(**args)`` drawing a traced graph.

    Nodes run in execution order, left to right (``direction="LR"``) or top to bottom
    (``"TB"``): each step of the computation is one layer of :func:`layered_layout`, independent
    computations share a step in parallel lanes; each shown node's innermost module is its group
    box (double-click a box to fold it), and modules deeper than ``collapse_depth`` are single
    nodes unless listed in ``expanded`` (see :func:`mri_widgets.models.trace.to_cytoscape`).
    ``height`` (px) defaults to one that suits the number of lanes.
    """
    from ..models.trace import TraceError, to_cytoscape

    if direction not in ("LR", "TB"):
        raise TraceError(f"direction must be 'LR' (left to right) or 'TB' (top to bottom), got {direction!r}")
    els = to_cytoscape(G, collapse_depth=collapse_depth, expanded=expanded)
    nodes = [e["data"] for e in els if e["group"] == "nodes" and e["data"]["kind"] != "module"]
    if not nodes:
        raise TraceError("nothing to draw: the graph has no nodes")
    idx = {d["id"]: i for i, d in enumerate(nodes)}
    edges = [e["data"] for e in els if e["group"] == "edges" and e["data"]["source"] in idx and e["data"]["target"] in idx]
    pairs = [(idx[e["source"]], idx[e["target"]]) for e in edges]
    pos = layered_layout(range(len(nodes)), pairs, order={i: d.get("order", 0) for i, d in enumerate(nodes)},
                         layer_gap=TRACE_STEP, node_gap=TRACE_LANE, align="start", direction=direction)
    x = [pos[i][0] for i in range(len(nodes))]
    y = [pos[i][1] for i in range(len(nodes))]
    if height is None:
        across = y if direction == "LR" else x
        n_lanes = int(max(across) / TRACE_LANE) + 1 if across else 1
        height = 640 if direction == "TB" else int(min(560, max(260, 160 + 40 * n_lanes)))
    group_paths = sorted({d.get("parent") for d in nodes if d.get("parent")})
    gidx = {p: i for i, p in enumerate(group_paths)}
    colors, labels, tips, shapes, sizes = [], [], [], [], []
    for d in nodes:
        kind = d["kind"]
        colors.append(KIND_COLORS.get(kind) if kind in ("input", "output", "collapsed")
                      else OP_COLORS.get(d.get("op"), "#888888"))
        shp = _shape_str(d.get("shape")) if d.get("shape") else ""
        labels.append(d["label"])
        if kind == "collapsed":
            tips.append(f"{d['module']}\n{d['n_ops']} ops inside\noutput {shp}")
            shapes.append("round-rectangle")
            sizes.append(22.0)
        else:
            tips.append(f"{d['id']} ({d.get('op')})\nmodule: {d.get('module') or '(root)'}\nshape: {shp}")
            shapes.append("ellipse" if kind == "op" else "diamond")
            sizes.append(12.0)
    return {
        "nodes": {"x": x, "y": y, "label": labels, "tooltip": tips, "color": colors, "shape": shapes, "size": sizes,
                  "parent": [gidx.get(d.get("parent"), -1) for d in nodes]},
        "edges": {"source": [p[0] for p in pairs], "target": [p[1] for p in pairs],
                  "weight": [float(e["count"]) for e in edges]},
        "groups": [{"label": p[len("mod:"):]} for p in group_paths],
        "directed": True,
        "title": f"{G.graph.get('module_type', '')} traced with {G.graph.get('method')}",
        "weight_name": "tensors",
        "height": height,
    }
