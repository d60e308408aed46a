"""flow_graph (VISIT): structure, hand-checked node vectors and edges, all causal families."""

import networkx as nx
import numpy as np
import pytest
import torch

from mri_widgets.analysis.flow import (DEFAULT_LAYERS, NODE_KINDS, RESIDUAL_KINDS, capture_flow, flow_graph,
                                       flow_layout, head_weights)
from mri_widgets.models.adapters import AdapterError

PROMPT = "The capital of France is Paris. The capital of Italy is"
FAMILIES = ("gpt2", "gpt_neox", "llama", "gptj", "gpt_neo")


def _graph(lm, **kw):
    kw.setdefault("layers", [0, 1, 2])
    kw.setdefault("top_heads", 3)
    kw.setdefault("top_neurons", 5)
    kw.setdefault("bottom_neurons", 2)
    return flow_graph(lm, kw.pop("prompt", PROMPT), **kw)


@pytest.fixture(scope="module")
def graphs():
    from mri_widgets.testing import tiny_model
    cache = {}

    def get(arch, **kw):
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            lm = tiny_model(arch)
            cache[key] = (lm, _graph(lm, **kw))
        return cache[key]
    return get


def _nodes(G, kind, layer=None):
    return [n for n, a in G.nodes(data=True) if a["kind"] == kind and (layer is None or a["layer"] == layer)]


# ---- the attention weights the graph reads ----------------------------------------------------------

def test_flow_reads_the_engine_and_the_named_weights(tiny):
    """capture_flow is the engine's capture of the same prompt; head_weights are LoadedModel.W_Q & co."""
    lm = tiny("llama")
    cap = capture_flow(lm, PROMPT, [1, 2])
    eng = lm.capture(PROMPT, sites=("resid", "attn_in", "v", "z", "mlp_gate", "attn"), progress=False)
    for _i, l in enumerate((1, 2)):
        for got, site, j in ((cap.block_in, "resid", l), (cap.block_out, "resid", l + 1), (cap.attn_in, "attn_in", l),
                             (cap.values, "v", l), (cap.z, "z", l), (cap.gate, "mlp_gate", l), (cap.attn, "attn", l)):
            torch.testing.assert_close(got[l], eng[site][0, j], atol=1e-6, rtol=0)
    with torch.inference_mode():
        logits = lm.model(**lm.encode(PROMPT)).logits[0]
    torch.testing.assert_close(cap.logits, logits, atol=1e-4, rtol=0)
    m = head_weights(lm, [2])[2]
    for name in ("W_Q", "b_Q", "W_K", "b_K", "W_O"):
        assert torch.equal(getattr(m, name), getattr(lm, name)(2).float())


def test_flow_rejects_normalised_keys():
    import transformers as T

    from mri_widgets.models.loading import LoadedModel
    from mri_widgets.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    cfg = T.Qwen3Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                        intermediate_size=64, head_dim=8, vocab_size=len(tok), max_position_embeddings=64)
    torch.manual_seed(0)
    lm = LoadedModel(T.AutoModelForCausalLM.from_config(cfg), tok)  # Qwen3: RMS-normalised queries and keys
    assert lm.adapter.qk_normed(1)
    with pytest.raises(AdapterError, match="not a plain projection"):
        head_weights(lm, [1])
    with pytest.raises(AdapterError, match="not a plain projection"):
        flow_graph(lm, PROMPT)


# ---- prediction, structure, counts ------------------------------------------------------------------

@pytest.mark.parametrize("arch", FAMILIES)
def test_prediction_is_the_models_own(graphs, arch):
    lm, G = graphs(arch)
    enc = lm.encode(PROMPT)
    with torch.inference_mode():
        logits = lm.model(**enc).logits[0, -1]
    pred = int(logits.argmax())
    assert G.graph["prediction_id"] == pred
    assert G.graph["prediction"] == lm.token_str([pred])[0]
    last = G.nodes[f"L{lm.n_layers - 1}/block_out"]
    assert last["top_ids"][0] == pred and last["target_rank"] == 1
    assert G.graph["target_id"] == pred and G.graph["position"] == len(enc["input_ids"][0]) - 1
    assert abs(last["target_prob"] - float(torch.softmax(logits.float(), -1)[pred])) < 1e-4


@pytest.mark.parametrize("arch", FAMILIES)
def test_counts_weights_and_measures(graphs, arch):
    lm, G = graphs(arch)
    p = G.graph["position"]
    for l in (0, 1, 2):
        for k in RESIDUAL_KINDS:
            assert f"L{l}/{k}" in G
        assert len(_nodes(G, "query", l)) == len(_nodes(G, "head_out", l)) == 3
        assert len(_nodes(G, "key", l)) == len(_nodes(G, "value", l)) == 3 * 3  # top_keys=3 per head
        keys = _nodes(G, "neuron_key", l)
        assert len(keys) == len(_nodes(G, "neuron_value", l)) == 5 + 2
        assert sorted(G.nodes[n]["group"] for n in keys).count("bottom") == 2
    for _a, _b, e in G.edges(data=True):
        assert e["weight"] >= 0 and np.isfinite(e["weight"])
        assert e["measure"] in ("norm", "attention", "activation")
    for _n, a in G.nodes(data=True):
        assert a["kind"] in NODE_KINDS and isinstance(a["label"], str) and a["label"]
        assert len(a["top_tokens"]) == len(a["top_probs"]) == 5
        assert 1 <= a["target_rank"] <= lm.vocab_size and 0 <= a["target_prob"] <= 1
        assert np.isclose(a["norm"], np.linalg.norm(a["vector"]), rtol=1e-5)
        assert a["vector"].shape == (lm.d_model,) and a["vector"].dtype == np.float32
        if a["kind"] in ("key", "value"):
            assert 0 <= a["position"] <= p and a["token"] == G.graph["tokens"][a["position"]]
    assert nx.is_directed_acyclic_graph(G)
    # every head/neuron node is connected into the residual chain of its layer
    for n in G:
        assert nx.has_path(G, "L0/block_in", n) or G.nodes[n]["kind"] in ("block_in",)


def test_heads_are_the_largest_outputs_and_neurons_the_largest_scores(tiny, graphs):
    lm, G = graphs("gpt2")
    p = G.graph["position"]
    cap = lm.capture(PROMPT, sites=("head_out", "mlp"))
    for l in (0, 1, 2):
        norms = cap["head_out"][0, l, :, p].norm(dim=-1)
        want = set(torch.argsort(norms, descending=True)[:3].tolist())
        assert {G.nodes[n]["head"] for n in _nodes(G, "head_out", l)} == want
        act = cap["mlp"][0, l, p]
        score = act * lm.adapter.W_out(l).detach().float().norm(dim=0)
        order = torch.argsort(score, descending=True)
        top = {G.nodes[n]["neuron"] for n in _nodes(G, "neuron_key", l) if G.nodes[n]["group"] == "top"}
        bottom = {G.nodes[n]["neuron"] for n in _nodes(G, "neuron_key", l) if G.nodes[n]["group"] == "bottom"}
        assert top == set(order[:5].tolist()) and bottom == set(order[-2:].tolist())


def test_counts_are_clipped_and_zero_works(tiny):
    lm = tiny("llama")
    G = flow_graph(lm, "The cat", layers=1, top_heads=99, top_neurons=0, bottom_neurons=0, top_keys=10)
    assert len(_nodes(G, "query")) == lm.n_heads
    seq = len(G.graph["tokens"])
    assert len(_nodes(G, "key")) == lm.n_heads * seq  # every position of the short prompt
    assert not _nodes(G, "neuron_key")
    assert G.graph["layers"] == [1]


def test_default_layers_and_position(tiny):
    lm = tiny("gpt2")
    G = flow_graph(lm, PROMPT, position=3, top_heads=2, top_neurons=2, bottom_neurons=0)
    assert G.graph["layers"] == list(range(lm.n_layers - DEFAULT_LAYERS, lm.n_layers))
    assert G.graph["position"] == 3
    assert all(G.nodes[n]["position"] <= 3 for n in _nodes(G, "key"))
    enc = lm.encode(PROMPT)
    with torch.inference_mode():
        pred = int(lm.model(**enc).logits[0, 3].argmax())
    assert G.graph["prediction_id"] == pred


# ---- hand-checked vectors ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", FAMILIES)
def test_residual_nodes_match_captures(graphs, arch):
    lm, G = graphs(arch)
    p = G.graph["position"]
    cap = lm.capture(PROMPT, sites=("resid", "head_out", "mlp"))
    for l in (0, 1, 2):
        def v(k, l=l):
            return G.nodes[f"L{l}/{k}"]["vector"]

        np.testing.assert_allclose(v("block_in"), cap["resid"][0, l, p].numpy(), atol=1e-4)
        np.testing.assert_allclose(v("block_out"), cap["resid"][0, l + 1, p].numpy(), atol=1e-4)
        np.testing.assert_allclose(v("resid_mid"), v("block_in") + v("attn_out"), atol=1e-5)
        np.testing.assert_allclose(v("block_out"), v("resid_mid") + v("mlp_out"), atol=1e-5)
        for n in _nodes(G, "head_out", l):
            h = G.nodes[n]["head"]
            np.testing.assert_allclose(G.nodes[n]["vector"], cap["head_out"][0, l, h, p].numpy(), atol=1e-5)
        for n in _nodes(G, "neuron_key", l):
            a = G.nodes[n]
            assert abs(a["activation"] - float(cap["mlp"][0, l, p, a["neuron"]])) < 1e-4
            col = lm.adapter.W_out(l)[:, a["neuron"]].detach().float().numpy()
            np.testing.assert_allclose(G.nodes[n.replace("/key", "/value")]["vector"], col, atol=1e-6)
            assert np.isclose(a["score"], a["activation"] * np.linalg.norm(col), rtol=1e-4, atol=1e-7)
            assert np.isclose(G.edges[n.replace("/key", "/value"), f"L{l}/mlp_out"]["weight"], abs(a["score"]),
                              rtol=1e-5)
    if lm.adapter.spec.parallel:  # the MLP reads the block input: resid_mid is only block_in + attn_out
        assert G.has_edge("L0/block_in", "L0/mlp_in") and not G.has_edge("L0/resid_mid", "L0/mlp_in")
    else:
        assert G.has_edge("L0/resid_mid", "L0/mlp_in") and not G.has_edge("L0/block_in", "L0/mlp_in")
    if arch == "gptj":  # GPT-J's MLP reads ln_1's output: MLP input == attention input
        np.testing.assert_allclose(G.nodes["L1/mlp_in"]["vector"], G.nodes["L1/attn_in"]["vector"], atol=1e-6)


@pytest.mark.parametrize("arch", ("gpt2", "llama", "gpt_neox"))
def test_values_weighted_by_attention_sum_to_the_head_output(tiny, arch):
    lm = tiny(arch)
    G = flow_graph(lm, "The cat sat on", layers=[1], top_heads=lm.n_heads, top_neurons=0, bottom_neurons=0,
                   top_keys=100)
    for n in _nodes(G, "head_out"):
        h = G.nodes[n]["head"]
        vals = [G.nodes[v] for v in _nodes(G, "value") if G.nodes[v]["head"] == h]
        total = sum(a["attention"] * a["vector"] for a in vals)
        np.testing.assert_allclose(total, G.nodes[n]["vector"], atol=1e-5)
        assert abs(sum(a["attention"] for a in vals) - 1) < 1e-5


def test_query_and_key_nodes_reproduce_the_attention_scores(tiny):
    lm = tiny("gpt2")  # no rotary embeddings: scores are exactly q . k / sqrt(d_head)
    G = flow_graph(lm, "The cat sat on the", layers=[2], top_heads=4, top_neurons=0, bottom_neurons=0,
                   top_keys=100)
    cap = capture_flow(lm, "The cat sat on the", [2])
    m = head_weights(lm, [2])[2]
    p = G.graph["position"]
    x = cap.attn_in[2][: p + 1].numpy()
    for h in range(4):
        qvec = G.nodes[f"L2/h{h}/q"]["vector"]
        # q . k_j = qvec . x_j + q . b_K, and the last term is the same for every key
        s = x @ qvec / np.sqrt(lm.d_head)
        np.testing.assert_allclose(np.exp(s - s.max()) / np.exp(s - s.max()).sum(), cap.attn[2][h, p, : p + 1].numpy(),
                                   atol=1e-5)
        # k_j . q = kvec_j . x_p + k_j . b_Q
        q_bias = m.b_Q[h].numpy()
        s = []
        for j in range(p + 1):
            kvec = G.nodes[f"L2/h{h}/k{j}"]["vector"]
            k = (cap.attn_in[2][j] @ m.W_K[h] + m.b_K[h]).numpy()
            s.append((kvec @ x[p] + k @ q_bias) / np.sqrt(lm.d_head))
        s = np.array(s)
        np.testing.assert_allclose(np.exp(s - s.max()) / np.exp(s - s.max()).sum(), cap.attn[2][h, p, : p + 1].numpy(),
                                   atol=1e-5)
        att = {G.nodes[n]["position"]: G.nodes[n]["attention"] for n in _nodes(G, "key") if G.nodes[n]["head"] == h}
        for j, a in att.items():
            assert abs(a - float(cap.attn[2][h, p, j])) < 1e-6
            assert G.edges[f"L2/h{h}/q", f"L2/h{h}/k{j}"]["weight"] == pytest.approx(a)


def test_gated_neurons_key_is_gate_row_with_up_row(tiny, graphs):
    lm, G = graphs("llama")
    p = G.graph["position"]
    cap = lm.capture(PROMPT, sites=("mlp_gate", "mlp_up", "mlp"))
    for n in _nodes(G, "neuron_key", 1):
        a = G.nodes[n]
        j = a["neuron"]
        np.testing.assert_allclose(a["vector"], lm.adapter.W_gate(1)[j].detach().float().numpy(), atol=1e-7)
        assert abs(a["pre_activation"] - float(cap["mlp_gate"][0, 1, p, j])) < 1e-4
        assert abs(a["up"] - float(cap["mlp_up"][0, 1, p, j])) < 1e-4
        silu = a["pre_activation"] / (1 + np.exp(-a["pre_activation"]))
        assert abs(a["activation"] - silu * a["up"]) < 1e-4
        assert a["up_norm"] == pytest.approx(float(lm.adapter.W_in(1)[j].detach().norm()), rel=1e-5)
        up_logits = lm.unembed(lm.adapter.W_in(1)[j].detach()[None])[0]
        assert a["up_top_tokens"][0] == lm.token_str([int(up_logits.argmax())])[0]
        assert G.edges["L1/mlp_in", n]["weight"] == pytest.approx(abs(a["pre_activation"]))
        assert G.edges[n, n.replace("/key", "/value")]["weight"] == pytest.approx(abs(a["activation"]))


def test_plain_neuron_pre_activation(graphs):
    lm, G = graphs("gpt2")
    for n in _nodes(G, "neuron_key", 2):
        a = G.nodes[n]
        x = G.nodes["L2/mlp_in"]["vector"]
        b = lm.adapter.part(2, "mlp_in").bias.detach().numpy()[a["neuron"]]
        assert a["pre_activation"] == pytest.approx(float(a["vector"] @ x + b), abs=1e-4)
        gelu = torch.nn.functional.gelu(torch.tensor(a["pre_activation"]), approximate="tanh").item()
        assert a["activation"] == pytest.approx(gelu, abs=1e-4)


def test_node_readings_are_brute_force_unembeddings(tiny):
    lm = tiny("gpt_neox")
    G = flow_graph(lm, PROMPT, layers=[2], target=" capital", top_heads=2, top_neurons=2, bottom_neurons=1)
    tid = lm.token_id(" capital")
    assert G.graph["target_id"] == tid and G.graph["target"] == " capital"
    names = list(G)
    V = torch.from_numpy(np.stack([G.nodes[n]["vector"] for n in names]))
    logits = lm.unembed(V).float()
    probs = torch.softmax(logits, -1)
    for i, n in enumerate(names):
        a = G.nodes[n]
        assert a["top_ids"] == torch.topk(logits[i], 5).indices.tolist()
        np.testing.assert_allclose(a["top_probs"], torch.topk(probs[i], 5).values.numpy(), rtol=1e-4)
        assert a["target_rank"] == 1 + int((logits[i] > logits[i, tid]).sum())
        assert a["target_prob"] == pytest.approx(float(probs[i, tid]), rel=1e-4)


# ---- layout and errors ------------------------------------------------------------------------------

def _edge_kinds_ok(x, y, src, dst, names):
    """Every edge goes right into a branch, straight down the spine (x = 0), or writes back left on one row."""
    for a, b in zip(src, dst):
        right = x[a] < x[b]
        spine = x[a] == x[b] == 0 and y[a] < y[b]
        back = y[a] == y[b] and x[a] > x[b] and names[b].split("/")[-1] in ("resid_mid", "block_out")
        assert right or spine or back, (names[a], names[b])


@pytest.mark.parametrize("arch", ("gpt2", "gptj"))
def test_layout_stacks_layers_heads_above_neurons(graphs, arch):
    lm, G = graphs(arch)
    pos = flow_layout(G, dx=2.0, dy=4.0)  # powers of two: exact rows
    assert set(pos) == set(G)
    names = list(G)
    x = {n: pos[n][0] / 2.0 for n in G}
    y = {n: pos[n][1] / 4.0 for n in G}
    # brute force: two nodes less than a row apart are at least a column apart (labels right of nodes fit)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert abs(y[a] - y[b]) >= 1 - 1e-9 or abs(x[a] - x[b]) >= 1 - 1e-9, (a, b)
    assert {x[n] for n in G} <= set(range(7))  # narrow: 7 columns whatever the counts
    _edge_kinds_ok(x, y, [a for a, _ in G.edges()], [b for _, b in G.edges()], {n: n for n in G})
    layers = G.graph["layers"]
    for l, nxt in zip(layers, layers[1:]):  # one layer below the other
        assert max(y[n] for n in G if G.nodes[n]["layer"] == l) < min(y[n] for n in G if G.nodes[n]["layer"] == nxt)
    for l in layers:
        L = f"L{l}"
        heads = [n for n in G if G.nodes[n]["layer"] == l and "head" in G.nodes[n]]
        neurons = [n for n in G if G.nodes[n]["layer"] == l and "neuron" in G.nodes[n]]
        assert x[f"{L}/block_in"] == x[f"{L}/resid_mid"] == x[f"{L}/block_out"] == 0  # the spine
        assert y[f"{L}/block_in"] == y[f"{L}/attn_in"] <= min(y[n] for n in heads)
        assert max(y[n] for n in heads) < y[f"{L}/resid_mid"] == y[f"{L}/attn_out"]
        assert y[f"{L}/resid_mid"] < y[f"{L}/mlp_in"] == min(y[n] for n in neurons)
        assert max(y[n] for n in neurons) < y[f"{L}/block_out"] == y[f"{L}/mlp_out"]
        # heads in rank order, one block each; keys in attention order; query and output centred on them
        blocks = sorted({G.nodes[n]["head"] for n in heads}, key=lambda h: G.nodes[f"{L}/h{h}/q"]["rank"])
        spans = []
        for h in blocks:
            members = [n for n in heads if G.nodes[n]["head"] == h]
            keys = sorted((n for n in members if G.nodes[n]["kind"] == "key"), key=lambda n: G.nodes[n]["key_rank"])
            assert [y[k] for k in keys] == [y[keys[0]] + i for i in range(len(keys))]
            for k in keys:
                assert y[k.replace("/k", "/v")] == y[k]
            centre = (y[keys[0]] + y[keys[-1]]) / 2
            assert y[f"{L}/h{h}/q"] == y[f"{L}/h{h}/out"] == pytest.approx(centre)
            spans.append((min(y[n] for n in members), max(y[n] for n in members)))
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
        # neurons: top ones in rank order, then the most negative ones
        keys = [n for n in neurons if G.nodes[n]["kind"] == "neuron_key"]
        order = sorted(keys, key=lambda n: (G.nodes[n]["group"] != "top", G.nodes[n]["rank"]))
        assert sorted(keys, key=lambda n: y[n]) == order
        for k in keys:
            assert y[k.replace("/key", "/value")] == y[k]


def test_layout_rows_by_hand(graphs):
    lm, G = graphs("gpt2")  # 3 heads with 3 keys each, 5 top + 2 bottom neurons per layer
    pos = flow_layout(G)
    # heads on rows 0-2, 3.6-5.6, 7.2-9.2; the write-back line 1.4 rows lower
    assert pos["L0/resid_mid"] == (0, pytest.approx(10.6)) and pos["L0/attn_out"] == (6, pytest.approx(10.6))
    # neurons from 2.2 rows lower: top ones on 12.8-16.8, the bottom ones after a 0.8 gap: 18.6, 19.6
    assert pos["L0/mlp_in"] == (1, pytest.approx(12.8))
    assert sorted(p[1] for n, p in pos.items() if G.nodes[n]["kind"] == "neuron_key" and G.nodes[n]["layer"] == 0) \
        == pytest.approx([12.8, 13.8, 14.8, 15.8, 16.8, 18.6, 19.6])
    assert pos["L0/block_out"] == (0, pytest.approx(21.0)) and pos["L0/mlp_out"] == (4, pytest.approx(21.0))
    assert pos["L1/block_in"] == (0, pytest.approx(25.0))  # the next layer 4 rows lower


def test_layout_without_heads_or_neurons(tiny):
    lm = tiny("llama")
    G = flow_graph(lm, "The cat", layers=[1, 2], top_heads=0, top_neurons=0, bottom_neurons=0)
    pos = flow_layout(G)
    assert set(pos) == set(G) and len(set(pos.values())) == len(pos)
    assert pos["L1/resid_mid"][1] < pos["L1/mlp_in"][1] < pos["L1/block_out"][1] < pos["L2/block_in"][1]
    G1 = flow_graph(lm, "The cat", layers=[2], position=0, top_heads=2, top_neurons=1, bottom_neurons=0)
    pos = flow_layout(G1)  # one key per head (position 0)
    assert len(set(pos.values())) == len(pos)
    with pytest.raises(TypeError, match="DiGraph"):
        flow_layout({"a": 1})
    with pytest.raises(ValueError, match="flow_graph node"):
        flow_layout(nx.DiGraph([(1, 2)]))


def test_bad_input_gives_clear_errors(tiny):
    lm = tiny("gpt2")
    with pytest.raises(IndexError, match="out of range"):
        flow_graph(lm, PROMPT, layers=[7])
    with pytest.raises(ValueError, match="layers is empty"):
        flow_graph(lm, PROMPT, layers=[])
    with pytest.raises(IndexError, match="position 99"):
        flow_graph(lm, "The cat", position=99)
    with pytest.raises(TypeError, match="top_heads"):
        flow_graph(lm, PROMPT, top_heads=2.5)
    with pytest.raises(ValueError, match="top_neurons"):
        flow_graph(lm, PROMPT, top_neurons=-1)
    with pytest.raises(ValueError, match="tokens"):
        flow_graph(lm, PROMPT, target=" Paris is nice")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        flow_graph(lm, PROMPT, target=10**7)
    with pytest.raises(TypeError, match="target"):
        flow_graph(lm, PROMPT, target=1.5)
    with pytest.raises(TypeError, match="prompt"):
        flow_graph(lm, 42)
    with pytest.raises(ValueError, match="causal LM"):
        flow_graph(tiny("bert"), PROMPT)


@pytest.mark.slow
def test_demo_model_flow():
    import mri_widgets as mw
    lm = mw.load("demo")
    G = flow_graph(lm, "The capital of France is", target=" Paris")
    assert G.graph["layers"] == [28, 29]
    enc = lm.encode("The capital of France is")
    with torch.inference_mode():
        pred = int(lm.model(**enc).logits[0, -1].argmax())
    assert G.graph["prediction_id"] == pred == lm.token_id(" Paris")
    assert G.nodes["L29/block_out"]["target_rank"] == 1
    assert len(_nodes(G, "query", 29)) == 9 and len(_nodes(G, "neuron_key", 29)) == 25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ("gpt2", "llama", "gpt_neox"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_flow_on_cuda_matches_cpu(arch, dtype):
    from mri_widgets import load
    from mri_widgets.testing import tiny_model
    cpu = tiny_model(arch)
    gpu = load(tiny_model(arch).model, cpu.tokenizer, device="cuda", dtype=dtype)
    kw = dict(layers=[1, 2], top_heads=2, top_neurons=3, bottom_neurons=1)
    Gc, Gg = flow_graph(cpu, PROMPT, **kw), flow_graph(gpu, PROMPT, **kw)
    enc = gpu.encode(PROMPT)
    with torch.inference_mode():
        pred = int(gpu.model(**enc).logits[0, -1].argmax())
    assert Gg.graph["prediction_id"] == pred
    assert Gg.nodes["L2/block_out"]["top_ids"][0] == pred
    tol = 1e-4 if dtype == torch.float32 else 0.1
    for n in ("L1/attn_in", "L2/mlp_out", "L2/block_out"):
        np.testing.assert_allclose(Gg.nodes[n]["vector"], Gc.nodes[n]["vector"], atol=tol, rtol=tol)
    if dtype == torch.float32:
        assert set(Gg) == set(Gc)
        for n in Gc:
            np.testing.assert_allclose(Gg.nodes[n]["vector"], Gc.nodes[n]["vector"], atol=1e-4, rtol=1e-3)


# ---- the widget (Python side) ------------------------------------------------------------------------

def test_flow_graph_widget_data_and_traits(tiny):
    from mri_widgets import Selection
    from mri_widgets.widgets.flow_graph import FlowGraph, rank_colors
    lm = tiny("gpt2")
    sel = Selection()
    w = FlowGraph(lm, PROMPT, top_heads=2, top_neurons=3, bottom_neurons=1, selection=sel)
    G, d = w.graph, w.data
    assert w.layers == G.graph["layers"] == [1, 2] and w.position == -1 and w.target is None
    assert len(w.nodes) == G.number_of_nodes() == d["x"].shape[0] and set(w.nodes) == set(G)
    assert d["edge_source"].shape[0] == G.number_of_edges()
    assert (d["edge_weight"] >= 0).all() and (d["edge_weight"] <= 1).all()  # relative within each measure
    # clicks: heads -> layer + head, neurons -> layer + neuron, residual stages -> layer
    keys = d["select_keys"]
    for i, n in enumerate(w.nodes):
        a = G.nodes[n]
        patch = {k: int(v) for k, v in zip(keys, d["select"][i]) if v != np.iinfo(np.int32).min}
        if "head" in a:
            assert patch == {"layer": a["layer"], "head": a["head"]}
        elif "neuron" in a:
            assert patch == {"layer": a["layer"], "neuron": a["neuron"]}
        else:
            assert patch == {"layer": a["layer"]}
        assert f"rank {a['target_rank']}" in d["node_tooltip"][i] and a["top_tokens"][0].strip() in d["node_tooltip"][i]
    # colours: by target rank, green for rank 1, red for the last
    np.testing.assert_array_equal(d["color"], rank_colors([G.nodes[n]["target_rank"] for n in w.nodes], lm.vocab_size))
    assert tuple(rank_colors([1], 100)[0]) == (26, 152, 80) and tuple(rank_colors([100], 100)[0]) == (215, 48, 39)
    # drawn with flow_layout: edges go right, down the spine, or write back left on one row
    _edge_kinds_ok(d["x"], d["y"], d["edge_source"], d["edge_target"], w.nodes)
    # readable first view: labels beside the nodes, a minimum zoom, layer headers that select the layer
    assert d["label_position"] == "right" and d["label_size"] >= 11 and d["min_zoom"] >= 0.8
    assert all(len(lab) <= 24 for lab in d["label"])
    headers = [a for a in d["annotations"] if "select" in a]
    assert [(a["text"], a["select"]) for a in headers] == [("layer 1", {"layer": 1}), ("layer 2", {"layer": 2})]
    assert all(a["size"] >= 18 for a in headers)
    assert 360 <= d["height"] <= 720
    controls = {c["name"]: c for c in d["controls"]}
    assert controls["layers"]["value"] == "1-2" and controls["target"]["value"] == ""
    assert controls["position"]["value"] == G.graph["position"]
    assert [o[0] for o in controls["position"]["options"]] == list(range(len(G.graph["tokens"])))

    w.position = 2
    assert w.graph.graph["position"] == 2 and w.data["controls"][1]["value"] == 2
    w.target = " capital"
    assert w.graph.graph["target"] == " capital" and w.data["controls"][2]["value"] == " capital"
    w.layers = "0-1"  # also from the view's text field
    assert w.layers == [0, 1] and w.graph.graph["layers"] == [0, 1]
    assert w.graph.graph["position"] == 2 and w.graph.graph["target"] == " capital"
    w.layers = "2,0"
    assert w.layers == [0, 2]
    texts = [a["text"] for a in w.data["annotations"]]
    assert "layer 0" in texts and "layer 2" in texts and "(layer 1 not shown)" in texts


def test_flow_graph_widget_errors_keep_the_last_graph(tiny):
    from mri_widgets.widgets.flow_graph import FlowGraph
    lm = tiny("llama")
    w = FlowGraph(lm, PROMPT, layers=[2], top_heads=1, top_neurons=1, bottom_neurons=0)
    before = w.graph
    with pytest.raises(ValueError, match="not one"):
        w.target = " capital city"
    assert w.target is None and w.graph is before and "not one" in w.error
    with pytest.raises(IndexError, match="out of range"):
        w.layers = "5"
    assert w.layers == [2] and w.graph is before
    with pytest.raises(ValueError, match="cannot read layers"):
        w.layers = "a-b"
    with pytest.raises(IndexError, match="position"):
        w.position = 99
    assert w.position == -1
    # typed traits: layers hold integers (a range or numpy ints are read as such), target a token
    import traitlets
    with pytest.raises(traitlets.TraitError, match="integers"):
        w.layers = [1.7]
    with pytest.raises(traitlets.TraitError):
        w.target = 3.5
    assert w.layers == [2] and w.target is None and w.graph is before
    w.layers = range(1, 3)
    assert w.layers == [1, 2] and w.graph.graph["layers"] == [1, 2]
    w.layers = np.array([2])
    assert w.layers == [2]
    w.position = 0  # a good change clears the notice
    assert w.error == "" and w.graph.graph["position"] == 0
    with pytest.raises(ValueError, match="causal LM"):
        FlowGraph(tiny("bert"), PROMPT)
    with pytest.raises(TypeError, match="top_neurons"):
        FlowGraph(lm, PROMPT, top_neurons="many")
    with pytest.raises(ValueError, match="height"):
        FlowGraph(lm, PROMPT, layers=[2], height=0)
    fixed = FlowGraph(lm, PROMPT, layers=[2], top_heads=1, top_neurons=1, bottom_neurons=0, height=500)
    assert fixed.data["height"] == 500
    fixed.position = 0  # a redraw keeps the height asked for
    assert fixed.data["height"] == 500
