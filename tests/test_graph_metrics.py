"""graph_metrics / compare_graphs against a graph worked out by hand."""

import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from mri_widgets.analysis.graph_metrics import compare_graphs, graph_metrics, weighted_assortativity
from mri_widgets.analysis.regions import correlation_graph, region_graph

nan = float("nan")


def hand_graph():
    """3 layers, 5 nodes: A | B C | D E, as 3 documents A-B-D, A-B-E, A-C-E.

    degree   A2 B3 C2 D1 E2        strength A3 B4 C2 D1 E2
    out-str  A3 B2 C1 D0 E0        in-str   A0 B2 C1 D1 E2
    """
    G = nx.DiGraph(n_layers=3)
    for name, layer in {"A": 0, "B": 1, "C": 1, "D": 2, "E": 2}.items():
        G.add_node(name, layer=layer)
    G.add_weighted_edges_from([("A", "B", 2), ("A", "C", 1), ("B", "D", 1), ("B", "E", 1), ("C", "E", 1)])
    return G


def G1(m2, m3, n):
    return math.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5


def G2(m2, m4, n):
    return (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * m4 / m2**2 - 3 * (n - 1))


# Hand derivations (n = 5):
#   degree deviations from 2: 0, 1, 0, -1, 0 -> m2 = 2/5, m3 = 0, m4 = 2/5
#   strength deviations from 2.4: .6, 1.6, -.4, -1.4, -.4
#       sum d^2 = 5.2 (m2 1.04), sum d^3 = 1.44 (m3 .288), sum d^4 = 10.576 (m4 2.1152)
#   assortativity over edges (out u, in v): (3,2) (3,1) (2,1) (2,2) (1,2)
#       sum dxdy = -0.6, sum dx^2 = 2.8, sum dy^2 = 1.2
#   centre of mass: offsets layer - 1 = -1, 0, 0, 1, 1 -> 1/5
#   centre of strength: sd per layer 0 (one node), sd(4,2) = sqrt 2, sd(1,2) = sqrt .5
#       (0*-1 + sqrt2*0 + sqrt.5*1) / (sqrt2 + sqrt.5) = 1/3
#   even projection {A, D, E}: shared odd neighbours, weight 1/(k-1):
#       A-D via B (k=3): 1/2; A-E via B and C (k=2): 1/2 + 1 = 3/2; D-E via B: 1/2
#       strengths A 2, D 1, E 2; clustering: triangle of normalised weights
#       1/3, 1, 1/3 -> (1/9)^(1/3) at every node
#       assortativity pairs (2,1)(1,2)(2,2)(2,2)(1,2)(2,1): r = (-6/9) / (12/9) = -1/2
#   odd projection {B, C}: shared A (k=2) and E (k=2): weight 2, one edge
EXPECTED = {
    "n_nodes": 5,
    "n_edges": 5,
    "mean_degree": 2.0,
    "var_degree": 0.5,
    "skew_degree": 0.0,
    "kurt_degree": G2(0.4, 0.4, 5),  # = 2
    "mean_strength": 2.4,
    "var_strength": 1.3,
    "skew_strength": G1(1.04, 0.288, 5),
    "kurt_strength": G2(1.04, 2.1152, 5),
    "assortativity": -0.6 / math.sqrt(2.8 * 1.2),
    "density": 5 / 20,
    "center_of_mass": 0.2,
    "center_of_strength": 1 / 3,
    "even_n_nodes": 3,
    "even_mean_degree": 2.0,
    "even_var_degree": 0.0,
    "even_mean_strength": 5 / 3,
    "even_var_strength": 1 / 3,
    "even_clustering": (1 / 9) ** (1 / 3),
    "even_assortativity": -0.5,
    "even_density": 1.0,
    "even_avg_shortest_path": 1.0,
    "odd_n_nodes": 2,
    "odd_mean_degree": 1.0,
    "odd_var_degree": 0.0,
    "odd_mean_strength": 2.0,
    "odd_var_strength": 0.0,
    "odd_clustering": 0.0,
    "odd_assortativity": nan,  # both ends have strength 2: no variance
    "odd_density": 1.0,
    "odd_avg_shortest_path": 1.0,
    "degree_by_layer": [2.0, 2.5, 1.5],
}


def assert_metrics_equal(got, want):
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, list):
            np.testing.assert_allclose(got[k], v, err_msg=k)
        elif math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, abs=1e-12), k


def test_metrics_of_hand_computed_graph():
    assert G2(0.4, 0.4, 5) == pytest.approx(2.0)
    assert_metrics_equal(graph_metrics(hand_graph()), EXPECTED)


def test_estimators_agree_with_pandas_and_networkx():
    G = hand_graph()
    m = graph_metrics(G)
    s = pd.Series([d for _, d in G.degree(weight="weight")])
    assert m["skew_strength"] == pytest.approx(s.skew())
    assert m["kurt_strength"] == pytest.approx(s.kurt())
    assert m["var_strength"] == pytest.approx(s.var())
    assert m["assortativity"] == pytest.approx(nx.degree_assortativity_coefficient(G, weight="weight"))
    U = nx.Graph(G)
    assert weighted_assortativity(U) == pytest.approx(nx.degree_assortativity_coefficient(U, weight="weight"))
    assert m["density"] == pytest.approx(nx.density(G))


def test_centre_of_mass_uses_declared_layer_count():
    G = hand_graph()
    G.graph["n_layers"] = 5  # middle is layer 2; layers 3, 4 empty
    m = graph_metrics(G)
    assert m["center_of_mass"] == pytest.approx((0 + 1 + 1 + 2 + 2) / 5 - 2)
    assert m["degree_by_layer"][:3] == [2.0, 2.5, 1.5]
    assert all(math.isnan(v) for v in m["degree_by_layer"][3:])
    del G.graph["n_layers"]  # inferred from the largest layer
    assert graph_metrics(G)["center_of_mass"] == pytest.approx(0.2)


def test_degenerate_graphs_give_nan_not_errors():
    m = graph_metrics(nx.DiGraph())
    assert m["n_nodes"] == 0 and m["degree_by_layer"] == []
    assert all(math.isnan(v) for k, v in m.items() if k not in ("n_nodes", "n_edges", "even_n_nodes", "odd_n_nodes", "degree_by_layer"))
    one = nx.DiGraph(n_layers=2)
    one.add_node(0, layer=0)
    m = graph_metrics(one)
    assert m["mean_degree"] == 0 and math.isnan(m["var_degree"]) and math.isnan(m["density"])
    assert m["center_of_mass"] == -0.5 and math.isnan(m["center_of_strength"])
    assert math.isnan(m["degree_by_layer"][1])
    flat = nx.DiGraph()
    flat.add_nodes_from([(i, {"layer": i % 3}) for i in range(6)])  # no edges
    m = graph_metrics(flat)
    assert m["var_degree"] == 0 and math.isnan(m["skew_degree"]) and math.isnan(m["assortativity"])
    assert m["density"] == 0 and math.isnan(m["even_avg_shortest_path"])


def test_bad_graphs_are_rejected():
    G = nx.DiGraph()
    G.add_node("x")
    with pytest.raises(KeyError, match="layer"):
        graph_metrics(G)
    G = nx.DiGraph()
    G.add_node("a", layer=0)
    G.add_node("b", layer=2)
    G.add_edge("a", "b", weight=1)
    with pytest.raises(ValueError, match="parity"):
        graph_metrics(G)


def test_compare_graphs_table():
    small = nx.DiGraph()
    small.add_node("p", layer=0)
    small.add_node("q", layer=1)
    small.add_edge("p", "q", weight=4)
    df = compare_graphs({"hand": hand_graph(), "small": small})
    assert list(df.columns) == ["hand", "small"]
    assert df.loc["mean_degree", "hand"] == 2.0 and df.loc["mean_strength", "small"] == 4.0
    assert list(df.index[-3:]) == ["degree_by_layer[0]", "degree_by_layer[1]", "degree_by_layer[2]"]
    assert df.loc["degree_by_layer[1]", "hand"] == 2.5
    assert math.isnan(df.loc["degree_by_layer[2]", "small"])
    assert df.index[0] == "n_nodes"
    with pytest.raises(TypeError, match="dict"):
        compare_graphs([hand_graph()])


def test_metrics_run_on_built_graphs():
    rng = np.random.default_rng(0)
    R = rng.integers(0, 9, size=(5, 60))
    lab = rng.integers(0, 3, size=60)
    G = region_graph(R, lab, ["a", "b", "c"], labels=["a", "c"])
    m = graph_metrics(G)
    assert m["n_nodes"] == G.number_of_nodes() and len(m["degree_by_layer"]) == 5
    # every document adds 1 to a first/last-layer node's strength, 2 in the middle
    n_docs = np.isin(lab, [0, 2]).sum()
    assert m["mean_strength"] * m["n_nodes"] == pytest.approx(2 * n_docs * (5 - 1))
    C = rng.normal(size=(4, 50, 3))
    C[1] = C[0] + 0.1 * rng.normal(size=(50, 3))
    m = graph_metrics(correlation_graph(C, threshold=0.3))
    assert m["n_edges"] >= 3 and m["n_nodes"] == 12


def test_projection_metrics_match_networkx_reference():
    from networkx.algorithms import bipartite

    rng = np.random.default_rng(11)
    R = rng.integers(0, 12, size=(6, 50))
    G = region_graph(R, rng.integers(0, 2, size=50), ["a", "b"])
    m = graph_metrics(G)
    U = nx.Graph(G)
    for side, parity in (("even", 0), ("odd", 1)):
        P = bipartite.collaboration_weighted_projected_graph(
            U, [n for n, d in G.nodes(data=True) if d["layer"] % 2 == parity]
        )
        comps = sorted(nx.connected_components(P), key=len, reverse=True)
        assert len(comps) == 1 or len(comps[0]) > len(comps[1])  # unique largest
        strength = np.array([d for _, d in P.degree(weight="weight")])
        assert m[f"{side}_n_nodes"] == P.number_of_nodes()
        assert m[f"{side}_mean_degree"] == pytest.approx(np.mean([d for _, d in P.degree()]))
        assert m[f"{side}_mean_strength"] == pytest.approx(strength.mean())
        assert m[f"{side}_var_strength"] == pytest.approx(strength.var(ddof=1))
        assert m[f"{side}_clustering"] == pytest.approx(nx.average_clustering(P, weight="weight"))
        assert m[f"{side}_assortativity"] == pytest.approx(
            nx.degree_assortativity_coefficient(P, weight="weight")
        )
        assert m[f"{side}_density"] == pytest.approx(nx.density(P))
        assert m[f"{side}_avg_shortest_path"] == pytest.approx(
            nx.average_shortest_path_length(P.subgraph(comps[0]))
        )
