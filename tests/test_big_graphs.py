"""The vectorised region graph and layout against brute-force references; the edge budget."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

import mri_widgets as mw
from mri_widgets.analysis.regions import region_graph, region_graph_arrays
from mri_widgets.testing import synthetic_areas
from mri_widgets.widgets.coactivation import column_slots, layered_positions


def brute_force_graph(R, lab, n_labels, chosen, min_weight):
    """The old construction, one document at a time: {(layer, region): counts}, {(u, v): counts}."""
    nodes = defaultdict(lambda: np.zeros(len(chosen), np.int64))
    edges = defaultdict(lambda: np.zeros(len(chosen), np.int64))
    col = {c: i for i, c in enumerate(chosen)}
    for d in range(R.shape[1]):
        if lab[d] not in col:
            continue
        for l in range(R.shape[0]):
            nodes[(l, int(R[l, d]))][col[lab[d]]] += 1
            if l + 1 < R.shape[0]:
                edges[((l, int(R[l, d])), (l + 1, int(R[l + 1, d])))][col[lab[d]]] += 1
    edges = {k: v for k, v in edges.items() if v.sum() >= min_weight}
    return dict(nodes), edges


@pytest.mark.parametrize("seed,labels,min_weight", [(0, None, 1), (1, [0, 2], 1), (2, None, 3), (3, [1], 2)])
def test_vectorised_graph_equals_brute_force(seed, labels, min_weight):
    rng = np.random.default_rng(seed)
    L, n, n_reg, K = 5, 300, 9, 4
    R = rng.integers(0, n_reg, (L, n))
    lab = rng.integers(0, K, n)
    A = region_graph_arrays(R, lab, K, labels=labels, min_weight=min_weight)
    chosen = list(range(K)) if labels is None else labels
    nodes, edges = brute_force_graph(R, lab, K, chosen, min_weight)
    keys = list(zip(A["node_layer"].tolist(), A["node_region"].tolist()))
    assert keys == sorted(nodes)
    for i, k in enumerate(keys):
        assert A["node_counts"][i].tolist() == nodes[k].tolist()
    got = {(keys[a], keys[b]): A["edge_counts"][j].tolist()
           for j, (a, b) in enumerate(zip(A["edge_source"], A["edge_target"]))}
    assert got == {k: v.tolist() for k, v in edges.items()}
    assert A["edge_weight"].tolist() == [sum(v) for v in got.values()]
    # and the networkx construction says the same
    G = region_graph(R, lab, [f"l{i}" for i in range(K)], labels=labels, min_weight=min_weight)
    assert set(G.nodes) == set(keys) and G.number_of_edges() == len(got)


@pytest.mark.parametrize("seed", range(4))
def test_column_slots_equal_layered_positions(seed):
    import networkx as nx

    rng = np.random.default_rng(seed)
    A = region_graph_arrays(rng.integers(0, 12, (4, 80)), rng.integers(0, 3, 80), 3)
    keys = list(zip(A["node_layer"].tolist(), A["node_region"].tolist()))
    G = nx.DiGraph()
    G.add_nodes_from(keys)
    for a, b, w in zip(A["edge_source"], A["edge_target"], A["edge_weight"]):
        G.add_edge(keys[a], keys[b], weight=float(w))
    pos = layered_positions(G, [0, 1, 2, 3], column_spacing=1, row_spacing=1, sweeps=2)
    slot = column_slots(A["node_layer"], A["edge_source"], A["edge_target"], A["edge_weight"], sweeps=2)
    for i, k in enumerate(keys):
        size = int((A["node_layer"] == k[0]).sum())
        assert pos[k][1] == slot[i] - (size - 1) / 2


def test_coactivation_graph_50000_documents_builds_in_seconds():
    areas = synthetic_areas(50_000, 31, 30)
    t0 = time.perf_counter()
    w = mw.CoactivationGraph(areas)
    took = time.perf_counter() - t0
    print(f"50,000 documents, grid 30: {w._n_nodes} nodes, {w._n_edges} edges, built in {took:.1f} s")
    assert w._n_edges > 500_000
    # was about 2 minutes; the time is printed, not asserted (benchmarks hold the speed targets)


def _chain(m=50, seed=0):
    rng = np.random.default_rng(seed)
    n = m + 1
    nodes = {"x": np.arange(n, dtype=float), "y": np.zeros(n), "label": [f"n{i}" for i in range(n)]}
    edges = {"source": np.arange(m), "target": np.arange(1, n), "weight": rng.permutation(m).astype(float) + 1}
    return nodes, edges


def test_edge_budget_draws_the_heaviest_edges():
    nodes, edges = _chain()
    g = mw.GraphView(nodes, edges, edge_budget=10)
    d = g.data
    heaviest = np.sort(np.argsort(-edges["weight"])[:10])
    assert d["edge_ids"].tolist() == heaviest.tolist()
    assert d["budget_info"] == {"nodes": 51, "edges": 50}
    # drawn edges join the drawn copies of the right nodes, with their weights
    ids = d["node_ids"]
    for j, full in enumerate(d["edge_ids"]):
        assert ids[d["edge_source"][j]] == edges["source"][full] and ids[d["edge_target"][j]] == edges["target"][full]
        assert d["edge_weight"][j] == edges["weight"][full]
        assert d["label"][d["edge_source"][j]] == f"n{edges['source'][full]}"
    assert set(ids.tolist()) == set(edges["source"][heaviest]) | set(edges["target"][heaviest])
    # a highlighted edge outside the budget is brought in; indices stay those of the whole graph
    light = int(np.argmin(edges["weight"]))
    g.set_highlight([light], [light])
    assert light in g.data["edge_ids"].tolist() and g.highlight["edges"].tolist() == [light]
    # raising the budget (the view's control sets the trait) draws everything again
    g.edge_budget = 0
    assert g.data["edge_ids"] is None and g.data["budget_info"] == {} and g.data["edge_source"].shape == (50,)
    g.edge_budget = 100
    assert g.data["edge_ids"] is None
    with pytest.raises(Exception, match="edge_budget"):
        g.edge_budget = -1
    assert mw.GraphView(nodes, edges).data["edge_ids"] is None  # under the default budget: all drawn


def test_coactivation_budget_follows_selection_and_exports_whole_graph():
    areas = synthetic_areas(600, 6, 12)
    w = mw.CoactivationGraph(areas, edge_budget=40)
    assert w.data["budget_info"]["edges"] == w._n_edges > 40
    assert len(w.to_networkx()) == w._n_nodes
    layer, region = w.nodes[0]
    w.selection.update(layer=layer, region=region)
    p = w.paths(layer, region)
    drawn = set(w.data["edge_ids"].tolist())
    assert set(p["edges"]) <= drawn and set(w.highlight["edges"].tolist()) == set(p["edges"])
