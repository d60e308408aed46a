"""ActivationAreas: pooling against a brute-force capture, counts, graphs, paths, errors."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from scipy.stats import spearmanr

from mri_widgets import ActivationAreas, Corpus
from mri_widgets.analysis.areas import pool_batch
from mri_widgets.datasets import emotions
from mri_widgets.testing import tiny_model


@pytest.fixture(scope="module")
def corpus():
    return emotions()[::10]  # 44 sentences, 11 per label


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def areas(gpt2, corpus):
    return ActivationAreas(gpt2, corpus, grid=4, batch_size=5, progress=False)


def brute_pool(cap, pool):
    acts, mask = cap["resid"].numpy(), cap.mask.numpy()
    out = np.zeros((acts.shape[0], acts.shape[1], acts.shape[3]), np.float64)
    for i in range(acts.shape[0]):
        real = np.flatnonzero(mask[i])
        if pool == "mean":
            out[i] = acts[i][:, real, :].mean(1)
        elif pool == "last":
            out[i] = acts[i][:, real[-1], :]
        else:
            out[i] = acts[i][:, 0, :]
    return out


@pytest.mark.parametrize("pool", ["mean", "last", "first"])
def test_pooling_matches_brute_force(gpt2, corpus, pool):
    sub = corpus[:13]
    a = ActivationAreas(gpt2, sub, pool=pool, grid=3, batch_size=4, progress=False)
    cap = gpt2.capture(sub.texts, ("resid",), batch_size=13, progress=False)
    ref = brute_pool(cap, pool)
    assert a.pooled.shape == (13, gpt2.n_layers + 1, gpt2.d_model)
    assert a.pooled.dtype == np.float32
    np.testing.assert_allclose(a.pooled, ref, rtol=1e-4, atol=1e-5)
    if pool != "first":  # texts of different lengths pool differently from position 0
        assert not np.allclose(a.pooled, brute_pool(cap, "first"), atol=1e-3)


def test_pool_batch_hand_computed():
    import torch
    acts = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(pool_batch(acts, mask, "mean")[:, 0].numpy(), [[1, 2], [8, 9]])
    np.testing.assert_allclose(pool_batch(acts, mask, "last")[:, 0].numpy(), [[2, 3], [10, 11]])
    np.testing.assert_allclose(pool_batch(acts, mask, "first")[:, 0].numpy(), [[0, 1], [6, 7]])


def test_layer_counts_sum_to_each_label(areas, corpus):
    assert areas.layers == ["embeddings", "layer 1", "layer 2", "layer 3"]
    assert areas.layer_ids == [0, 1, 2, 3]
    for layer in areas.layer_ids:
        g = areas.grid(layer)
        assert g.shape == (4, 4) and g.sum() == len(corpus)
        for name, n in corpus.counts.items():
            assert areas.grid(layer, label=name).sum() == n
        assert areas.grid(layer, label=["joy", "fear"]).sum() == corpus.counts["joy"] + corpus.counts["fear"]
        # region ids agree with the grid: id = row * grid + col
        reg = areas.regions(layer)
        brute = np.zeros((4, 4), int)
        for r in reg:
            brute[r // 4, r % 4] += 1
        np.testing.assert_array_equal(brute, g)
    C = areas.counts()
    assert C.shape == (4, 4, 4, 4)
    np.testing.assert_array_equal(C[2, corpus.label_id("anger")], areas.grid(2, "anger"))


def test_region_graph_weights(areas, corpus):
    G = areas.graph()
    n = len(corpus)
    for l in areas.layer_ids[:-1]:
        out = sum(w for u, v, w in G.edges(data="weight") if u[0] == l)
        assert out == n, f"weights leaving layer {l} sum to {out}, not {n}"
        assert all(v[0] == l + 1 for u, v in G.edges if u[0] == l)
    # brute force: every edge weight = documents in a at l and b at l+1
    R = areas.region_ids
    for (la, a), (lb, b), d in G.edges(data=True):
        docs = [i for i in range(n) if R[la, i] == a and R[lb, i] == b]
        assert d["weight"] == len(docs)
        assert sum(d["counts"].values()) == d["weight"]
        assert d["counts"]["joy"] == sum(corpus.labels[i] == "joy" for i in docs)
    for node, d in G.nodes(data=True):
        assert d["layer"] == node[0] and d["total"] == areas.grid(node[0]).ravel()[node[1]]
    # a subset of labels: weights leaving a layer sum to their documents
    H = areas.graph(labels=["sadness", "anger"])
    assert sum(w for u, v, w in H.edges(data="weight") if u[0] == 1) == 22
    assert set(next(iter(H.nodes.values()))["counts"]) == {"sadness", "anger"}
    # min_weight drops edges
    K = areas.graph(min_weight=3)
    assert all(w >= 3 for _, _, w in K.edges(data="weight"))
    assert K.number_of_edges() == sum(1 for _, _, w in G.edges(data="weight") if w >= 3)


def test_nd_mode_edges_only_above_threshold(gpt2, corpus):
    a = ActivationAreas(gpt2, corpus, n_components=4, threshold=0.3, progress=False)
    assert a.mode == "nd" and a.coords.shape == (4, len(corpus), 4)
    G = a.graph()
    assert G.graph["mode"] == "nd"
    expected = set()
    for l in range(3):
        for i, j in itertools.product(range(4), range(4)):
            rho = spearmanr(a.coords[l][:, i], a.coords[l + 1][:, j]).statistic
            if rho > 0.3:
                expected.add(((l, i), (l + 1, j)))
                assert G.edges[(l, i), (l + 1, j)]["weight"] == pytest.approx(rho)
    assert set(G.edges) == expected
    assert expected, "the test needs some correlated components"
    assert all(w > 0.3 for _, _, w in G.edges(data="weight"))
    # regions still exist (first two components), and per-label metrics work
    assert a.grid(2).sum() == len(corpus)
    table = a.compare_labels()
    assert list(table.columns) == corpus.label_names


def test_paths_follow_the_documents(areas):
    layer = 2
    region = int(np.bincount(areas.regions(layer)).argmax())
    p = areas.paths(layer, region)
    docs = areas.docs(layer, region)
    np.testing.assert_array_equal(p["docs"], docs)
    R = areas.region_ids
    for l in areas.layer_ids:
        want = {}
        for d in docs:
            want[(l, int(R[l, d]))] = want.get((l, int(R[l, d])), 0) + 1
        assert {k: v for k, v in p["nodes"].items() if k[0] == l} == want
    assert p["nodes"][(layer, region)] == len(docs)
    assert sum(v for (u, _), v in p["edges"].items() if u[0] == 0) == len(docs)
    G = areas.graph()
    for (u, v), c in p["edges"].items():
        assert G.edges[u, v]["weight"] >= c


def test_examples_come_from_the_region(areas, corpus):
    region = int(areas.regions(1)[0])
    ex = areas.examples(1, region, k=2)
    assert 1 <= len(ex) <= 2
    members = set(areas.docs(1, region).tolist())
    for e in ex:
        assert e["index"] in members
        assert e["text"] == corpus.texts[e["index"]] and e["label"] == corpus.labels[e["index"]]
    empty = [r for r in range(16) if r not in set(areas.regions(1).tolist())]
    if empty:
        assert areas.examples(1, empty[0]) == []


def test_compare_labels_table(areas, corpus):
    from mri_widgets import graph_metrics
    table = areas.compare_labels()
    assert list(table.columns) == corpus.label_names
    G = areas.graph(labels="joy")
    m = graph_metrics(G)
    assert table.loc["n_edges", "joy"] == m["n_edges"]
    assert table.loc["mean_degree", "joy"] == pytest.approx(m["mean_degree"])
    assert list(areas.compare_labels(["fear", "joy"]).columns) == ["fear", "joy"]


def test_with_options_reuses_the_pooled_vectors(gpt2, corpus, areas):
    nd = areas.with_options(n_components=3, threshold=0.2)
    assert nd.pooled is areas.pooled and nd.mode == "nd" and areas.mode == "2d"
    fresh = ActivationAreas(gpt2, corpus, n_components=3, threshold=0.2, grid=4, batch_size=5, progress=False)
    np.testing.assert_allclose(nd.coords, fresh.coords, atol=1e-4)
    assert set(nd.graph().edges) == set(fresh.graph().edges)
    coarse = areas.with_options(grid=2)
    assert coarse.grid(1).shape == (2, 2) and coarse.grid(1).sum() == len(corpus)
    with pytest.raises(ValueError, match="grid"):
        areas.with_options(grid=0)


def test_layer_subset_and_mlp_site(gpt2, corpus):
    a = ActivationAreas(gpt2, corpus, layers=[0, 2], grid=3, progress=False)
    assert a.layer_ids == [0, 2] and a.layers == ["embeddings", "layer 2"]
    assert a.pooled.shape[1] == 2
    with pytest.raises(IndexError, match="captured layers"):
        a.grid(1)
    G = a.graph()
    assert {n[0] for n in G.nodes} == {0, 2}
    assert all(u[0] == 0 and v[0] == 2 for u, v in G.edges)
    assert a.compare_labels().loc["n_nodes"].sum() > 0  # positions 0, 1 for the metrics
    m = ActivationAreas(gpt2, corpus, site="mlp", grid=3, progress=False)
    assert m.layer_ids == [0, 1, 2] and m.pooled.shape[2] == gpt2.d_mlp
    assert m.layers[0] == "mlp 0"


def test_encoder_tiny_bert(corpus):
    bert = tiny_model("bert")
    a = ActivationAreas(bert, corpus, pool="first", grid=3, progress=False)
    assert len(a.layer_ids) == bert.n_layers + 1
    for l in a.layer_ids:
        assert a.grid(l, "sadness").sum() == 11
    assert a.graph().number_of_edges() > 0


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(pool="max"), ValueError, "pool"),
    (dict(site="attn"), ValueError, "site"),
    (dict(reduction="tsne"), ValueError, "reduction"),
    (dict(grid=0), ValueError, "grid"),
    (dict(n_components=1), ValueError, "n_components"),
])
def test_bad_arguments(gpt2, corpus, kwargs, err, match):
    with pytest.raises(err, match=match):
        ActivationAreas(gpt2, corpus, **kwargs)


def test_bad_inputs_and_lookups(gpt2, areas):
    with pytest.raises(TypeError, match="Corpus"):
        ActivationAreas(gpt2, ["a", "b", "c"])
    with pytest.raises(TypeError, match="LoadedModel"):
        ActivationAreas(object(), Corpus(["a b", "c d", "e f"], [0, 1, 0]))
    with pytest.raises(IndexError, match="0..3"):
        areas.grid(4)
    with pytest.raises(IndexError, match="region"):
        areas.docs(1, 16)
    with pytest.raises(KeyError, match="love"):
        areas.grid(1, label="love")
    with pytest.raises(KeyError, match="love"):
        areas.graph(labels=["joy", "love"])
    with pytest.raises(KeyError, match="love"):
        areas.compare_labels(["love"])
    with pytest.raises(TypeError, match="integer"):
        areas.regions("1")


@pytest.mark.slow
def test_demo_encoder_and_decoder():
    from mri_widgets import load
    corpus = emotions()[::11]  # 40 sentences
    enc = load("demo-encoder")
    a = ActivationAreas(enc, corpus, pool="first", grid=5, max_length=32, progress=False)
    assert len(a.layer_ids) == enc.n_layers + 1
    assert all(a.grid(l).sum() == len(corpus) for l in a.layer_ids)
    G = a.graph()
    assert sum(w for u, _, w in G.edges(data="weight") if u[0] == 3) == len(corpus)
    dec = load("demo")
    b = ActivationAreas(dec, corpus, pool="last", layers=[0, 10, 20, 30], grid=5, batch_size=10, max_length=32,
                        progress=False)
    assert b.layers == ["embeddings", "layer 10", "layer 20", "layer 30"]
    assert all(b.grid(l, "joy").sum() == corpus.counts["joy"] for l in b.layer_ids)
    assert nx.is_directed_acyclic_graph(b.graph())
    assert b.compare_labels().shape[1] == 4


def test_default_batching_by_tokens_keeps_the_corpus_order(gpt2, monkeypatch):
    import mri_widgets.models.capture as C
    from mri_widgets.corpus import Corpus

    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while the dog slept by the warm fire".split()
    texts = [" ".join(rng.choice(words, n)) for n in (2, 30, 5, 17, 1, 24, 9, 3, 28, 12)]
    corpus = Corpus(texts, ["a", "b"] * 5)
    monkeypatch.setattr(C, "BATCH_TOKENS", 60)  # several batches, regrouped by length
    for pool in ("mean", "last"):
        a = ActivationAreas(gpt2, corpus, grid=3, pool=pool, progress=False)
        one = ActivationAreas(gpt2, corpus, grid=3, pool=pool, batch_size=1, progress=False)  # no padding
        np.testing.assert_allclose(a.pooled, one.pooled, rtol=1e-4, atol=1e-5)
        ref = np.stack([brute_pool(gpt2.capture([t], ("resid",), progress=False), pool)[0] for t in texts])
        np.testing.assert_allclose(a.pooled, ref, rtol=1e-4, atol=1e-5)
