"""trace_graph: computation graphs of torch modules (fx, export, recorded functions, modules)."""

import re

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mri_widgets.models.trace import (
    TraceError, TraceGraph, fetch_activations, find_attention, graph_view_args, to_cytoscape, to_dot, trace_graph,
)
from mri_widgets.testing import tiny_model


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Sequential(nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        h = self.a(x) * 2
        return F.softmax(self.b(h), dim=-1)


@pytest.fixture(scope="module")
def eager_gpt2():
    lm = tiny_model("gpt2")  # fresh: we switch its attention implementation
    lm.model.set_attn_implementation("eager")
    return lm


def ids_of(lm, text):
    return lm.encode(text)["input_ids"]


def check_attention_graph(G, lm, method):
    assert isinstance(G, TraceGraph) and isinstance(G, nx.DiGraph)
    assert G.graph["method"] == method
    assert nx.is_directed_acyclic_graph(G)
    soft = find_attention(G)
    assert len(soft) == lm.n_layers  # one attention softmax per layer
    assert [G.nodes[n]["module"] for n in soft] == [f"transformer.h.{l}.attn" for l in range(lm.n_layers)]
    n = ids_of(lm, "The cat sat on the mat").shape[1]
    assert all(G.nodes[s]["shape"] == (1, lm.n_heads, n, n) for s in soft)
    # each softmax depends on the input ids through the graph
    assert all(nx.has_path(G, "input_ids", s) for s in soft)
    # fetch on another, longer text: equals the attention probabilities of a hooked capture
    text = "A quick brown fox jumps over the lazy dog."
    acts = G.fetch(soft, ids_of(lm, text))
    ref = lm.capture([text], ("attn",))["attn"][0]  # (L, H, n, n)
    for l, s in enumerate(soft):
        torch.testing.assert_close(acts[s][0].float(), ref[l], atol=1e-5, rtol=1e-4)
    return soft


def test_gpt2_auto_traces_with_export_and_finds_one_softmax_per_layer(eager_gpt2):
    lm = eager_gpt2
    G = trace_graph(lm.model, ids_of(lm, "The cat sat on the mat"))
    check_attention_graph(G, lm, "export")
    assert G.graph["dynamic_shapes"] is True
    # the logits: output node reached from everything upstream
    assert G.nodes["output"]["kind"] == "output"
    assert G.nodes["output"]["shape"][-1] == lm.vocab_size


def test_gpt2_recorded_functions_and_text_inputs(eager_gpt2):
    lm = eager_gpt2
    G = trace_graph(lm, "The cat sat on the mat", method="functions")
    soft = check_attention_graph(G, lm, "functions")
    # a LoadedModel-traced graph fetches from text too
    a = G.fetch(soft[:1], "The cat sat")[soft[0]]
    assert a.shape[-1] == ids_of(lm, "The cat sat").shape[1]
    # softmax reads the attention scores computed in the same attention module
    pred = list(G.predecessors(soft[0]))
    assert pred and all(G.nodes[p]["module"].startswith("transformer.h.0") for p in pred)


def test_fused_attention_hides_the_softmax(tiny):
    lm = tiny("gpt2")  # default sdpa attention
    if lm.model.config._attn_implementation == "eager":
        pytest.skip("this transformers version defaults to eager attention")
    G = trace_graph(lm.model, ids_of(lm, "The cat sat"), method="functions")
    assert find_attention(G) == []
    assert len(G.find(op="scaled_dot_product_attention")) == lm.n_layers


def test_fx_plain_module_and_fetch():
    torch.manual_seed(0)
    net = Net().eval()
    G = trace_graph(net, torch.randn(2, 4))
    assert G.graph["method"] == "fx"
    ops = {n: (d["op"], d["module"], d["shape"]) for n, d in G.nodes(data=True)}
    assert ops["a"] == ("Linear", "a", (2, 8))
    assert ops["mul"] == ("mul", "", (2, 8))
    assert ops["b_1"] == ("Linear", "b.1", (2, 3))
    assert ops["softmax"] == ("softmax", "", (2, 3))
    assert list(nx.topological_sort(G)) == ["x", "a", "mul", "b_0", "b_1", "softmax", "output"]
    x = torch.randn(5, 4)
    got = fetch_activations(G, ["a", "b_0", "softmax"], x)
    with torch.no_grad():
        h = net.a(x)
        torch.testing.assert_close(got["a"], h)
        torch.testing.assert_close(got["b_0"], torch.relu(h * 2))
        torch.testing.assert_close(got["softmax"], net(x))


def test_modules_method_gives_leaf_module_calls(tiny):
    torch.manual_seed(0)
    net = Net().eval()
    G = trace_graph(net, torch.randn(2, 4), method="modules")
    assert G.graph["method"] == "modules"
    assert [n for n in nx.topological_sort(G)] == ["x", "a", "b.0", "b.1", "output"]
    assert G.nodes["b.1"]["op"] == "Linear" and G.nodes["b.1"]["shape"] == (2, 3)
    x = torch.randn(3, 4)
    got = G.fetch(["a", "b.1"], x)
    with torch.no_grad():
        torch.testing.assert_close(got["b.1"], net.b(net.a(x) * 2))
    lm = tiny("gpt2")
    G = trace_graph(lm.model, ids_of(lm, "The cat sat"), method="modules")
    assert nx.has_path(G, "transformer.h.0.attn.c_attn", "lm_head")
    assert G.nodes["transformer.h.1.mlp.c_fc"]["shape"][-1] == 4 * lm.d_model


def test_recorded_functions_on_other_families(tiny):
    for arch in ("llama", "bert"):
        lm = tiny(arch)
        G = trace_graph(lm.model, ids_of(lm, "The cat sat"), method="functions")
        assert nx.is_directed_acyclic_graph(G)
        lin = G.find(op="linear")
        assert len(lin) >= 4 * lm.n_layers  # q, k, v, o at least per layer
        first = lin[0]
        v = G.fetch([first], ids_of(lm, "Another text here"))[first]
        assert v.shape[1] == ids_of(lm, "Another text here").shape[1]


def test_to_dot_is_well_formed():
    net = Net().eval()
    G = trace_graph(net, torch.randn(2, 4))
    dot = to_dot(G)
    assert dot == G.to_dot()
    assert dot.startswith("digraph trace {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    edges = re.findall(r'^\s*"([^"]+)" -> "([^"]+)";$', dot, flags=re.M)
    assert sorted(edges) == sorted(G.edges)
    declared = re.findall(r'^\s*"([^"]+)" \[label=', dot, flags=re.M)
    assert sorted(declared) == sorted(G.nodes)
    assert 'subgraph "cluster_b"' in dot and 'subgraph "cluster_b.1"' in dot
    flat = to_dot(G, clusters=False)
    assert "subgraph" not in flat
    # quotes in ids are escaped
    G2 = TraceGraph()
    G2.add_node('we"ird', op="x", module="", order=0)
    assert r'"we\"ird"' in to_dot(G2)


def test_to_cytoscape_collapses_and_expands(eager_gpt2):
    lm = eager_gpt2
    G = trace_graph(lm.model, ids_of(lm, "The cat sat"), method="functions")

    def check(els):
        nodes = {e["data"]["id"]: e["data"] for e in els if e["group"] == "nodes"}
        for d in nodes.values():
            if "parent" in d:
                assert nodes[d["parent"]]["kind"] == "module"
        for e in els:
            if e["group"] == "edges":
                assert e["data"]["source"] in nodes and e["data"]["target"] in nodes
                assert nodes[e["data"]["source"]]["kind"] != "module"
        return nodes

    full = check(to_cytoscape(G))
    assert all(n in full for n in G.nodes)
    assert full["softmax"]["parent"] == "mod:transformer.h.0.attn"
    assert full["mod:transformer.h.0.attn"]["parent"] == "mod:transformer.h.0"

    col = check(G.to_cytoscape(collapse_depth=2))
    inner = [n for n, d in G.nodes(data=True) if d["module"].startswith("transformer.h.0")]
    assert col["mod:transformer.h.0"]["kind"] == "collapsed"
    assert col["mod:transformer.h.0"]["n_ops"] == len(inner)
    assert col["mod:transformer.h.0"]["parent"] == "mod:transformer.h"
    assert "softmax" not in col
    edges = {(e["data"]["source"], e["data"]["target"]) for e in G.to_cytoscape(collapse_depth=2) if e["group"] == "edges"}
    assert ("mod:transformer.h.0", "mod:transformer.h.1") in edges

    opened = check(to_cytoscape(G, collapse_depth=2, expanded=["transformer.h.0", "transformer.h.0.attn"]))
    assert opened["softmax"]["parent"] == "mod:transformer.h.0.attn"
    assert opened["mod:transformer.h.0.mlp"]["kind"] == "collapsed"
    assert opened["mod:transformer.h.1"]["kind"] == "collapsed"


def test_graph_view_args_draw_in_graph_view(eager_gpt2):
    lm = eager_gpt2
    G = trace_graph(lm.model, ids_of(lm, "The cat sat"), method="functions")
    args = graph_view_args(G, collapse_depth=2)
    n = len(args["nodes"]["x"])
    assert n == len(args["nodes"]["label"]) == len(args["nodes"]["parent"])
    assert max(args["edges"]["source"] + args["edges"]["target"]) < n
    labels = args["nodes"]["label"]
    i0, i1 = labels.index("0 (GPT2Block)"), labels.index("1 (GPT2Block)")
    assert args["nodes"]["x"][i0] < args["nodes"]["x"][i1]  # execution order left to right
    assert args["nodes"]["y"][i0] == args["nodes"]["y"][i1]  # the residual stream stays in its lane
    tb = graph_view_args(G, collapse_depth=2, direction="TB")
    assert tb["nodes"]["y"][i0] < tb["nodes"]["y"][i1]
    pos = set(zip(args["nodes"]["x"], args["nodes"]["y"]))
    assert len(pos) == n  # no two nodes on the same spot
    from mri_widgets.widgets.graph_view import GraphView
    view = GraphView(**args)
    assert view.data["x"].shape == (n,)


def test_errors(tiny):
    net = Net()
    with pytest.raises(TraceError, match="example inputs"):
        trace_graph(net)
    with pytest.raises(TraceError, match="method"):
        trace_graph(net, torch.randn(1, 4), method="magic")
    with pytest.raises(TypeError, match="Module"):
        trace_graph(object(), torch.randn(1, 4))
    with pytest.raises(TypeError, match="LoadedModel"):
        trace_graph(net, "some text")
    with pytest.raises(TraceError, match="could not trace"):
        trace_graph(net, torch.randn(1, 5), method="functions")  # wrong width: the module fails
    G = trace_graph(net, torch.randn(1, 4))
    with pytest.raises(KeyError, match="not in the graph"):
        G.fetch(["nope"], torch.randn(1, 4))
    with pytest.raises(TraceError, match="not given when tracing|do not fit"):
        G.fetch(["a"], torch.randn(1, 4), torch.randn(1, 4))
    assert net.training  # trace_graph restores the training flag
