"""The one layered-graph layout (widgets/graph_layout.py) and its users."""

import itertools
import random

import networkx as nx
import pytest

from mri_widgets.widgets.graph_layout import layered_layout


def _crossings(pos, edges):
    """Brute force: pairs of edges between the same two layers whose ends swap order."""
    n = 0
    for (a, b), (c, d) in itertools.combinations(edges, 2):
        if pos[a][0] == pos[c][0] and pos[b][0] == pos[d][0] and len({a, b, c, d}) == 4:
            if (pos[a][1] - pos[c][1]) * (pos[b][1] - pos[d][1]) < 0:
                n += 1
    return n


def test_longest_path_layers_and_directions():
    # a -> b -> c, a -> c, d alone: layers a 0, b 1, c 2, d 0
    edges = [("a", "b"), ("b", "c"), ("a", "c")]
    pos = layered_layout(["a", "b", "c", "d"], edges, layer_gap=10, node_gap=3, align="start")
    assert {n: p[0] for n, p in pos.items()} == {"a": 0, "b": 10, "c": 20, "d": 0}
    # the skipping edge a -> c keeps a placeholder in layer 1: b and it take two slots
    assert pos["b"][1] in (0, 3)
    assert len(set(pos.values())) == 4
    tb = layered_layout(["a", "b", "c", "d"], edges, layer_gap=10, node_gap=3, align="start", direction="TB")
    assert all(tb[n] == (p[1], p[0]) for n, p in pos.items())
    with pytest.raises(ValueError, match="cycle"):
        layered_layout([1, 2], [(1, 2), (2, 1)])
    with pytest.raises(ValueError, match="not in nodes"):
        layered_layout([1], [(1, 2)])
    with pytest.raises(ValueError, match="align"):
        layered_layout([1], [], align="middle")


@pytest.mark.parametrize("seed", range(5))
def test_barycentre_sweeps_untangle_permuted_chains(seed):
    """Three layers of 8 nodes joined by random one-to-one matchings: an order without crossings
    exists, and one forward sweep finds it (checked by counting crossings by brute force)."""
    rng = random.Random(seed)
    nodes = [(l, i) for l in range(3) for i in range(8)]
    edges = []
    for l in range(2):
        perm = list(range(8))
        rng.shuffle(perm)
        edges += [((l, i), (l + 1, perm[i])) for i in range(8)]
    before = layered_layout(nodes, edges, layer={n: n[0] for n in nodes}, sweeps=0)
    after = layered_layout(nodes, edges, layer={n: n[0] for n in nodes}, sweeps=1)
    assert _crossings(before, edges) > 0
    assert _crossings(after, edges) == 0
    # centred columns
    for l in range(3):
        assert sum(after[(l, i)][1] for i in range(8)) == pytest.approx(0)


def test_region_graph_and_traced_graphs_use_it(monkeypatch):
    """CoactivationGraph's layered_positions and graph_view_args both go through layered_layout."""
    import mri_widgets.widgets.coactivation as co
    import mri_widgets.widgets.graph_layout as gl

    calls = []
    real = gl.layered_layout

    def spy(*a, **k):
        calls.append(k.get("direction"))
        return real(*a, **k)

    monkeypatch.setattr(co, "layered_layout", spy)
    G = nx.DiGraph()
    G.add_edge((0, 0), (1, 1), weight=5)
    G.add_edge((0, 1), (1, 0), weight=5)
    pos = co.layered_positions(G, [0, 1])
    assert calls == ["LR"] and pos[(1, 1)][1] < pos[(1, 0)][1]
    import torch
    from mri_widgets.models import trace

    monkeypatch.setattr(gl, "layered_layout", spy)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    G = trace.trace_graph(net, torch.zeros(1, 3), method="functions")
    args = trace.graph_view_args(G, direction="TB")  # the old import path still works
    assert trace.graph_view_args is gl.graph_view_args
    assert calls == ["LR", "TB"]
    ys = args["nodes"]["y"]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)  # a chain: one step per row, in order


def test_lanes_keep_chains_straight():
    # main chain a b c d, a side branch a -> e -> d: the chain stays in lane 0, the branch in lane 1
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "e"), ("e", "f"), ("f", "d")]
    pos = layered_layout(list("abcdef"), edges, order=dict(zip("abcdef", range(6))), align="start",
                         layer_gap=1, node_gap=1)
    assert [pos[n] for n in "abcd"] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert [pos[n] for n in "ef"] == [(1, 1), (2, 1)]


def test_edges_from_one_node_share_one_corridor():
    """Like rotary cos/sin read by every block: a node read by every step of a chain takes one
    extra lane, not one per edge."""
    chain = [f"c{i}" for i in range(8)]
    edges = [("s", "c0")] + list(zip(chain, chain[1:])) + [("s", c) for c in chain[1:]]
    pos = layered_layout(["s"] + chain, edges, order={n: i for i, n in enumerate(["s"] + chain)}, align="start")
    assert [pos[c][0] for c in chain] == list(range(1, 9))
    assert max(p[1] for p in pos.values()) <= 1
    per_edge = layered_layout(["s"] + chain, edges, order={n: i for i, n in enumerate(["s"] + chain)},
                              align="start", dummies=False)
    assert max(p[1] for p in per_edge.values()) == 0  # without placeholders: one lane, edges over nodes


def test_lanes_put_the_longest_chain_in_lane_zero():
    """A mask built first and read at the end must not push the residual stream off lane 0."""
    names = ["mask", "a", "b", "c", "d", "z"]
    edges = [("mask", "z"), ("a", "b"), ("b", "c"), ("c", "d"), ("d", "z")]
    pos = layered_layout(names, edges, order={n: i for i, n in enumerate(names)}, align="start")
    assert [pos[n][1] for n in "abcdz"] == [0, 0, 0, 0, 0]
    assert pos["mask"] == (0, 1)
