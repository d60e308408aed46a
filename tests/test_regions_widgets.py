"""GraphView, CoactivationGraph and LayerGrid (Python side): what they send and how they follow the selection."""

from __future__ import annotations

import importlib.util

import networkx as nx
import numpy as np
import pytest

from mri_widgets import ActivationAreas, CoactivationGraph, GraphView, LayerGrid, Selection
from mri_widgets.datasets import emotions
from mri_widgets.testing import tiny_model
from mri_widgets.widgets.graph_view import NO_VALUE, GraphError, blend, encode_select, to_rgb
from mri_widgets.widgets.coactivation import layered_positions


@pytest.fixture(scope="module")
def areas():
    return ActivationAreas(tiny_model("gpt2"), emotions()[::10], grid=4, progress=False)


# ---- GraphView ---------------------------------------------------------------------------------
def small_graph(**kw):
    nodes = {"x": [0, 0, 100], "y": [0, 20, 0], "label": ["a", "b", "c"],
             "select": [{"layer": 0, "region": 1}, {"layer": 0, "region": 2}, None]}
    edges = {"source": [0, 1], "target": [2, 2], "weight": [3.0, 1.0]}
    return GraphView(nodes, edges, **kw)


def test_graph_view_encodes_arrays():
    g = small_graph(title="t", min_weight=2, top_k=1)
    d = g.data
    assert d["x"].dtype == np.float32 and d["edge_source"].dtype == np.int32 and d["edge_weight"].dtype == np.float32
    assert d["color"].shape == (3, 3) and d["color"].dtype == np.uint8
    assert d["select_keys"] == ["layer", "region"]
    np.testing.assert_array_equal(d["select"], [[0, 1], [0, 2], [NO_VALUE, NO_VALUE]])
    assert g.min_weight == 2 and g.top_k == 1
    g.set_highlight([0, 2], [0], edge_weight=[5])
    np.testing.assert_array_equal(g.highlight["nodes"], [0, 2])
    assert g.highlight["edge_weight"].tolist() == [5.0]
    g.clear_highlight()
    assert g.highlight == {}


def test_graph_view_rejects_bad_input():
    with pytest.raises(GraphError, match="'x' and 'y'"):
        GraphView({"x": [0]}, None)
    with pytest.raises(GraphError, match="node indices"):
        GraphView({"x": [0, 1], "y": [0, 1]}, {"source": [0], "target": [2]})
    with pytest.raises(GraphError, match="2 values for 3"):
        GraphView({"x": [0, 1, 2], "y": [0, 1]})
    with pytest.raises(GraphError, match="unknown node columns"):
        GraphView({"x": [0], "y": [0], "colour": ["#fff"]})
    with pytest.raises(GraphError, match="colour"):
        GraphView({"x": [0], "y": [0], "color": ["not a colour"]})
    with pytest.raises(GraphError, match="integer selection keys"):
        GraphView({"x": [0], "y": [0], "select": [{"label": "joy"}]})
    with pytest.raises(GraphError, match="parts"):
        GraphView({"x": [0], "y": [0], "parts": [[1, 2]]}, part_names=["a"])
    g = small_graph()
    with pytest.raises(GraphError, match="0..2"):
        g.set_highlight([3])
    with pytest.raises(Exception, match="top_k"):
        g.top_k = -1
    assert isinstance(GraphError("x"), ValueError)


def test_graph_view_label_and_view_options():
    d = small_graph().data  # defaults: labels under the nodes, the first view fits the graph
    assert (d["label_size"], d["label_position"], d["label_width"], d["min_zoom"]) == (8.0, "bottom", None, 0.0)
    g = small_graph(label_size=12, label_position="right", label_width=100, min_zoom=0.8, height=300.0,
                    annotations=[{"x": 0, "y": -10, "text": "a", "align": "left", "color": "#777", "bold": False},
                                 {"x": 5, "y": -10, "text": "b", "select": {"layer": 1}}])
    d = g.data
    assert (d["label_size"], d["label_position"], d["label_width"], d["min_zoom"], d["height"]) == \
        (12.0, "right", 100.0, 0.8, 300)
    assert d["annotations"][0] == {"x": 0.0, "y": -10.0, "text": "a", "size": 13.0, "align": "left", "bold": False,
                                   "color": "#777777"}
    assert d["annotations"][1]["align"] == "center" and d["annotations"][1]["bold"] is True
    assert d["annotations"][1]["select"] == {"layer": 1}
    with pytest.raises(GraphError, match="label_position"):
        small_graph(label_position="left")
    with pytest.raises(GraphError, match="min_zoom"):
        small_graph(min_zoom=-1)
    with pytest.raises(GraphError, match="label_size"):
        small_graph(label_size=0)
    with pytest.raises(GraphError, match="height"):
        small_graph(height=float("nan"))
    with pytest.raises(GraphError, match="align"):
        small_graph(annotations=[{"x": 0, "y": 0, "text": "a", "align": "right"}])
    with pytest.raises(GraphError, match="colour"):
        small_graph(annotations=[{"x": 0, "y": 0, "text": "a", "color": "nope"}])


def test_colour_helpers():
    np.testing.assert_array_equal(to_rgb(["#ff0000", "#0f0"], 2), [[255, 0, 0], [0, 255, 0]])
    np.testing.assert_array_equal(to_rgb("#000000", 2), np.zeros((2, 3)))
    np.testing.assert_array_equal(to_rgb(np.array([[1.0, 0.0, 0.5]]), 1), [[255, 0, 128]])
    np.testing.assert_array_equal(blend([[1, 1], [0, 2], [0, 0]], ["#ff0000", "#0000ff"]),
                                  [[128, 0, 128], [0, 0, 255], [150, 150, 150]])
    keys, vals = encode_select([{"head": 2, "layer": 1}, None], 2)
    assert keys == ["layer", "head"] and vals.tolist() == [[1, 2], [NO_VALUE, NO_VALUE]]


def test_graph_view_from_networkx():
    G = nx.DiGraph()
    G.add_node("a", x=0, y=0, select={"layer": 1})
    G.add_node("b", x=10, y=5, select={"layer": 2})
    G.add_edge("a", "b", weight=2.5)
    g = GraphView.from_networkx(G)
    assert g.data["label"] == ["a", "b"] and g.data["edge_weight"].tolist() == [2.5] and g.data["directed"]
    with pytest.raises(GraphError, match="pos="):
        GraphView.from_networkx(nx.path_graph(3))
    g2 = GraphView.from_networkx(nx.path_graph(3), pos={0: (0, 0), 1: (1, 0), 2: (2, 0)})
    assert g2.data["edge_source"].tolist() == [0, 1]


# ---- CoactivationGraph ---------------------------------------------------------------------------
def test_coactivation_graph_matches_areas(areas):
    w = CoactivationGraph(areas)
    G = areas.graph()
    d = w.data
    assert len(w.nodes) == G.number_of_nodes() == d["x"].shape[0]
    assert d["edge_source"].shape[0] == G.number_of_edges()
    for j in range(d["edge_source"].shape[0]):
        u, v = w.nodes[d["edge_source"][j]], w.nodes[d["edge_target"][j]]
        assert G.edges[u, v]["weight"] == d["edge_weight"][j]
        assert d["edge_parts"][j].sum() == d["edge_weight"][j]
    # layers are columns, left to right
    for i, (l, r) in enumerate(w.nodes):
        assert d["x"][i] == pytest.approx(areas.layer_ids.index(l) * w._column_spacing)
        assert d["parts"][i].tolist() == [G.nodes[(l, r)]["counts"][n] for n in areas.corpus.label_names]
    assert d["select"][0].tolist() == [w.nodes[0][0], w.nodes[0][1]]
    assert [a["text"] for a in d["annotations"]] == areas.layers
    assert d["part_names"] == areas.corpus.label_names
    H = w.to_networkx()
    assert nx.utils.graphs_equal(nx.DiGraph(H.edges), nx.DiGraph(G.edges))
    assert all("x" in a and a["color"].startswith("#") for _, a in H.nodes(data=True))


def test_coactivation_graph_highlights_document_paths(areas):
    sel = Selection()
    w = CoactivationGraph(areas, selection=sel, min_weight=2, top_k=10)
    assert w.min_weight == 2 and w.top_k == 10
    assert w.highlight == {}
    layer = 2
    region = int(np.bincount(areas.regions(layer)).argmax())
    sel.update(layer=layer, region=region)
    docs = areas.docs(layer, region)
    hl_nodes = {w.nodes[i] for i in w.highlight["nodes"]}
    # brute force: every region any of those documents visits
    want = {(l, int(areas.regions(l)[d])) for l in areas.layer_ids for d in docs}
    assert hl_nodes == want
    counts = dict(zip((w.nodes[i] for i in w.highlight["nodes"]), w.highlight["node_weight"]))
    assert counts[(layer, region)] == len(docs)
    src, dst = w.data["edge_source"], w.data["edge_target"]
    hl_edges = {(w.nodes[src[j]], w.nodes[dst[j]]) for j in w.highlight["edges"]}
    want_edges = {((l, int(areas.regions(l)[d])), (l + 1, int(areas.regions(l + 1)[d])))
                  for l in areas.layer_ids[:-1] for d in docs}
    assert hl_edges == want_edges
    sel.region = None
    assert w.highlight == {}
    # a region with no documents clears it too
    empty = [r for r in range(areas.n_regions) if r not in set(areas.regions(1).tolist())]
    sel.update(layer=1, region=region)
    if empty:
        sel.region = empty[0]
        assert w.highlight == {}


def test_coactivation_graph_labels_and_details(areas):
    w = CoactivationGraph(areas, labels=["fear", "joy"])
    assert w.labels == ["joy", "fear"]  # corpus order keeps the colours stable
    assert w.data["part_colors"] == ["#0072b2", "#d55e00"]
    n_docs = 22
    assert sum(w.data["edge_weight"][j] for j in range(len(w.data["edge_weight"]))
               if w.nodes[w.data["edge_source"][j]][0] == 0) == n_docs
    lines = w.node_details(0)
    assert 1 <= len(lines) <= 3 and all(isinstance(s, str) for s in lines)
    with pytest.raises(KeyError, match="love"):
        CoactivationGraph(areas, labels=["love"])
    with pytest.raises(TypeError, match="ActivationAreas"):
        CoactivationGraph(object())


def test_coactivation_graph_nd_mode():
    a = ActivationAreas(tiny_model("gpt2"), emotions()[::20], n_components=3, progress=False)
    w = CoactivationGraph(a)
    assert w.min_weight == 0  # every edge above the threshold is shown
    assert len(w.nodes) == len(a.layer_ids) * 3
    assert w.nodes[:3] == [(0, 0), (0, 1), (0, 2)]  # components keep their order in a column
    assert list(w.data["y"][:3]) == sorted(w.data["y"][:3])
    assert w.data["weight_name"] == "Spearman rho"
    assert (w.data["edge_weight"] > a.threshold).all()
    w.selection.update(layer=1, region=0)
    assert w.highlight == {}


@pytest.mark.skipif(importlib.util.find_spec("ipycytoscape") is not None, reason="ipycytoscape installed")
def test_to_ipycytoscape_names_the_package(areas):
    with pytest.raises(ImportError, match="pip install ipycytoscape"):
        CoactivationGraph(areas).to_ipycytoscape()


def test_spacing_keeps_a_wide_drawing(areas):
    w = CoactivationGraph(areas)
    assert 60 <= w._column_spacing <= 160
    assert w.min_weight == 0
    many = CoactivationGraph(areas, column_spacing=50, row_spacing=10)
    assert many._column_spacing == 50 and many.data["x"].max() == pytest.approx(50 * (len(areas.layer_ids) - 1))
    assert all(a["size"] >= 13 for a in many.data["annotations"])
    assert [a["text"] for a in many.data["annotations"]] == ["emb", "1", "2", "3"]  # short names when narrow
    with pytest.raises(ValueError, match="positive"):
        CoactivationGraph(areas, column_spacing=-1)


def test_layered_positions_untangle_a_crossing():
    G = nx.DiGraph()
    G.add_edge((0, 0), (1, 1), weight=5)
    G.add_edge((0, 1), (1, 0), weight=5)
    pos = layered_positions(G, [0, 1])
    # barycentre ordering puts (1, 1) next to (0, 0): no crossing
    assert pos[(1, 1)][1] < pos[(1, 0)][1]
    assert pos[(0, 0)][0] == 0 and pos[(1, 0)][0] == 140


# ---- LayerGrid -------------------------------------------------------------------------------------
def test_layer_grid_data(areas):
    w = LayerGrid(areas, mode="all")
    d = w.data
    assert "regions" not in d and "counts" not in d  # sparse counts; regions on demand
    assert w.counts.shape == (4, 4, 4, 4)
    for l, lid in enumerate(areas.layer_ids):
        for k, name in enumerate(areas.corpus.label_names):
            np.testing.assert_array_equal(w.counts[l, k], areas.grid(lid, name))
            assert w.counts[l, k].sum() == areas.corpus.counts[name]
    np.testing.assert_array_equal(w.whole["regions"], areas.region_ids)
    assert d["layer_names"] == areas.layers and d["grid"] == 4
    assert w.labels == ["joy", "sadness"]
    ex = w.region_examples(1, int(areas.regions(1)[0]))
    assert ex and ex[0]["text"] in areas.corpus.texts


def test_layer_grid_sparse_counts_equal_the_dense_counts(areas):
    from mri_widgets.testing import synthetic_areas
    from mri_widgets.widgets.layer_grid import dense_counts, sparse_counts

    for a in (areas, synthetic_areas(400, 5, 30)):
        w = LayerGrid(a)
        dense = a.counts()
        L, K, g, _ = dense.shape
        cells, vals = w.cells, w.cell_counts
        # brute force: every non-empty (layer, region) once, in order, with its counts per label
        expect = [(l * g * g + r, [int(dense[l, k, r // g, r % g]) for k in range(K)])
                  for l in range(L) for r in range(g * g) if dense[l, :, r // g, r % g].any()]
        assert [int(c) for c in cells] == [c for c, _ in expect]
        assert vals.tolist() == [v for _, v in expect]
        assert vals.dtype == np.uint16 and cells.dtype == np.int32
        np.testing.assert_array_equal(dense_counts(cells, vals, L, g), dense)
    big = np.zeros((1, 2, 2, 2), dtype=np.int64)
    big[0, 1, 1, 0] = 70000
    c, v = sparse_counts(big)
    assert c.tolist() == [2] and v.tolist() == [[0, 70000]] and v.dtype == np.int32


def test_layer_grid_region_members_equal_pythons(areas):
    w = LayerGrid(areas)
    reg = areas.region_ids
    for li, lid in enumerate(areas.layer_ids):
        for region in sorted(set(reg[li].tolist()))[:3] + [15]:
            out = w.region_members(lid, region)
            docs = [d for d in range(reg.shape[1]) if reg[li, d] == region]
            assert out["docs"].tolist() == docs
            assert [r.tolist() for r in out["regions"]] == [sorted({int(reg[l, d]) for d in docs})
                                                            for l in range(reg.shape[0])]
    # the front end's path: the command protocol, arrays as buffers
    resp, bufs = LayerGrid.__dict__["region_members"](w, {"layer": int(areas.layer_ids[1]), "region": int(reg[1, 0])}, [])
    assert "result" in resp and len(bufs) == 1 + len(areas.layer_ids)
    with pytest.raises(ValueError, match="not shown"):
        w.region_members(99, 0)
    with pytest.raises(ValueError, match="region must be < 16"):
        w.region_members(int(areas.layer_ids[0]), 16)


def test_layer_grid_validates(areas):
    with pytest.raises(ValueError, match="mode"):
        LayerGrid(areas, mode="heat")
    with pytest.raises(KeyError, match="love"):
        LayerGrid(areas, label="love")
    with pytest.raises(ValueError, match="two label names"):
        LayerGrid(areas, mode="diff", labels=["joy"])
    w = LayerGrid(areas, mode="diff", labels=["fear", "joy"])
    with pytest.raises(Exception, match="unknown label"):
        w.label = "love"
    w.mode = "label"
    w.label = "fear"
    assert (w.mode, w.label) == ("label", "fear")


def test_layer_grid_and_graph_share_the_selection(areas):
    sel = Selection()
    grid = LayerGrid(areas, selection=sel)
    graph = CoactivationGraph(areas, selection=sel)
    region = int(areas.regions(3)[0])
    grid._sel = {**grid._sel, "layer": 3, "region": region}  # what a click in the view does (Colab path)
    assert (sel.layer, sel.region) == (3, region)
    assert len(graph.highlight["nodes"]) >= len(areas.layer_ids)
