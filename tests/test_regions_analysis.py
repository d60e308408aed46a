"""Per-layer reduction, grid binning and region graphs (mri_widgets.analysis.regions)."""

import importlib.util
from collections import Counter

import numpy as np
import pytest
from scipy.stats import spearmanr

from mri_widgets.analysis import regions as rg
from mri_widgets.analysis.regions import (
    bin_regions,
    correlation_graph,
    grid_counts,
    reduce,
    region_graph,
    spearman_matrix,
)


def _data(n=40, d=7, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5
    X[:, 3] = 2.5  # a zero-variance column
    return X


def _match_up_to_sign(A, B):
    for j in range(A.shape[1]):
        s = np.sign(A[:, j] @ B[:, j])
        np.testing.assert_allclose(A[:, j], s * B[:, j], atol=1e-9)


# ---------------------------------------------------------------- reduce
def test_pca_matches_covariance_eigendecomposition():
    X = _data()
    Y = reduce(X, "pca", n_components=3)
    keep = X.std(axis=0) > 0
    Z = (X[:, keep] - X[:, keep].mean(0)) / X[:, keep].std(0)
    evals, evecs = np.linalg.eigh(np.cov(Z, rowvar=False))
    top = evecs[:, np.argsort(evals)[::-1][:3]]
    assert Y.shape == (40, 3)
    _match_up_to_sign(Y, Z @ top)
    # scores are uncorrelated with decreasing variance (the eigenvalues)
    np.testing.assert_allclose(Y.var(axis=0, ddof=1), np.sort(evals)[::-1][:3], rtol=1e-9)


def test_svd_is_uncentred_scaled_svd():
    X = _data()
    Y = reduce(X, "svd", n_components=2)
    keep = X.std(axis=0) > 0
    Z = X[:, keep] / X[:, keep].std(0)
    evals, evecs = np.linalg.eigh(Z.T @ Z)
    top = evecs[:, np.argsort(evals)[::-1][:2]]
    _match_up_to_sign(Y, Z @ top)
    assert not np.allclose(Y, reduce(X, "pca"), atol=1e-6)  # differs from PCA


@pytest.mark.parametrize("method", ["pca", "svd"])
def test_reduction_is_deterministic_with_fixed_signs(method):
    X = _data()
    Y = reduce(X, method, seed=0)
    np.testing.assert_array_equal(Y, reduce(X.copy(), method, seed=0))
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(reduce(X[perm], method), Y[perm], atol=1e-9)
    # flipping the data flips the scores: the sign rule depends on loadings only
    np.testing.assert_allclose(reduce(-X, method), -Y, atol=1e-9)


def test_reduce_rejects_bad_input():
    X = _data()
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce(X, "tsne")
    with pytest.raises(ValueError, match="exceeds"):
        reduce(X[:3], "pca", n_components=5)
    with pytest.raises(ValueError, match="2-D"):
        reduce(X[0])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reduce(bad)
    with pytest.raises(ValueError, match=">= 1"):
        reduce(X, n_components=0)


def test_umap_missing_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        rg.importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a)
    )
    with pytest.raises(ImportError, match="pip install umap-learn"):
        reduce(_data(), "umap")


@pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="umap-learn not installed")
def test_umap_runs_and_is_seeded():
    X = _data(n=60)
    Y = reduce(X, "umap", seed=3)
    assert Y.shape == (60, 2) and np.isfinite(Y).all()
    np.testing.assert_allclose(reduce(X, "umap", seed=3), Y)


# ---------------------------------------------------------------- binning
def test_bin_regions_hand_computed():
    # x over 0..4 in 4 bins of width 1 (max -> last bin); y constant -> row 0
    Y2 = [[0, 10], [1, 10], [2.5, 10], [4, 10], [3.99, 10]]
    np.testing.assert_array_equal(bin_regions(Y2, 4), [0, 1, 2, 3, 3])
    # x over -1..1 (width 2/3), y over 0..3 (width 1), grid 3: id = row*3 + col
    Y2 = [[-1, 0], [1, 3], [0, 1.4], [0.2, 2.9]]
    np.testing.assert_array_equal(bin_regions(Y2, 3), [0, 8, 4, 7])
    # everything constant -> one cell
    np.testing.assert_array_equal(bin_regions(np.ones((3, 2)), 5), [0, 0, 0])


def test_bin_regions_matches_brute_force():
    rng = np.random.default_rng(2)
    Y2 = rng.normal(size=(300, 2))
    g = 7
    expect = []
    for x, y in Y2:
        col = row = None
        for b in range(g):  # bins [lo + b w, lo + (b+1) w), the last one closed
            lo, w = Y2[:, 0].min(), np.ptp(Y2[:, 0]) / g
            if lo + b * w <= x < lo + (b + 1) * w or (b == g - 1 and x == Y2[:, 0].max()):
                col = b
            lo, w = Y2[:, 1].min(), np.ptp(Y2[:, 1]) / g
            if lo + b * w <= y < lo + (b + 1) * w or (b == g - 1 and y == Y2[:, 1].max()):
                row = b
        expect.append(row * g + col)
    np.testing.assert_array_equal(bin_regions(Y2, g), expect)


def test_bin_regions_rejects_bad_input():
    with pytest.raises(ValueError, match="n_docs, 2"):
        bin_regions(np.zeros((4, 3)), 3)
    with pytest.raises(ValueError, match="positive integer"):
        bin_regions(np.zeros((4, 2)), 0)
    with pytest.raises(ValueError, match="NaN"):
        bin_regions([[np.nan, 0], [1, 1]], 2)


def test_grid_counts_hand_computed():
    regions = [0, 8, 4, 7, 4]
    labels = [0, 1, 1, 0, 1]
    np.testing.assert_array_equal(grid_counts(regions, 3), [[1, 0, 0], [0, 2, 0], [0, 1, 1]])
    np.testing.assert_array_equal(
        grid_counts(regions, 3, labels, label=1), [[0, 0, 0], [0, 2, 0], [0, 0, 1]]
    )
    np.testing.assert_array_equal(grid_counts(regions, 3, labels, label=[0, 1]), grid_counts(regions, 3))
    with pytest.raises(ValueError, match="label_ids"):
        grid_counts(regions, 3, label=1)
    with pytest.raises(ValueError, match=r"\[0, 9\)"):
        grid_counts([9], 3)


# ---------------------------------------------------------------- region graph
REG = np.array([[0, 0, 1, 1], [2, 2, 2, 3], [5, 4, 5, 5]])  # 3 layers x 4 docs
LAB = np.array([0, 1, 0, 1])
NAMES = ["a", "b"]


def test_region_graph_hand_computed():
    G = region_graph(REG, LAB, NAMES)
    assert G.graph["n_layers"] == 3 and G.graph["labels"] == ["a", "b"]
    nodes = {n: (d["counts"], d["total"], d["layer"], d["region"]) for n, d in G.nodes(data=True)}
    assert nodes == {
        (0, 0): ({"a": 1, "b": 1}, 2, 0, 0),
        (0, 1): ({"a": 1, "b": 1}, 2, 0, 1),
        (1, 2): ({"a": 2, "b": 1}, 3, 1, 2),
        (1, 3): ({"a": 0, "b": 1}, 1, 1, 3),
        (2, 4): ({"a": 0, "b": 1}, 1, 2, 4),
        (2, 5): ({"a": 2, "b": 1}, 3, 2, 5),
    }
    edges = {(u, v): (d["weight"], d["counts"]) for u, v, d in G.edges(data=True)}
    assert edges == {
        ((0, 0), (1, 2)): (2, {"a": 1, "b": 1}),
        ((0, 1), (1, 2)): (1, {"a": 1, "b": 0}),
        ((0, 1), (1, 3)): (1, {"a": 0, "b": 1}),
        ((1, 2), (2, 5)): (2, {"a": 2, "b": 0}),
        ((1, 2), (2, 4)): (1, {"a": 0, "b": 1}),
        ((1, 3), (2, 5)): (1, {"a": 0, "b": 1}),
    }


def test_region_graph_label_filter_and_min_weight():
    Gb = region_graph(REG, LAB, NAMES, labels="b")
    assert Gb.graph["labels"] == ["b"]
    assert all(d["counts"] == {"b": 1} for _, d in Gb.nodes(data=True))
    assert {(u, v): d["weight"] for u, v, d in Gb.edges(data=True)} == {
        ((0, 0), (1, 2)): 1,
        ((0, 1), (1, 3)): 1,
        ((1, 2), (2, 4)): 1,
        ((1, 3), (2, 5)): 1,
    }
    G2 = region_graph(REG, LAB, NAMES, min_weight=2)
    assert set(G2.edges()) == {((0, 0), (1, 2)), ((1, 2), (2, 5))}
    assert G2.number_of_nodes() == 6  # nodes are kept
    with pytest.raises(KeyError, match="labels are"):
        region_graph(REG, LAB, NAMES, labels=["c"])
    with pytest.raises(ValueError, match="entries for 4 documents"):
        region_graph(REG, LAB[:3], NAMES)


def test_region_graph_conservation_and_brute_force():
    rng = np.random.default_rng(5)
    n_layers, n_docs, names = 6, 250, ["w", "x", "y", "z"]
    R = rng.integers(0, 16, size=(n_layers, n_docs))
    lab = rng.integers(0, 4, size=n_docs)
    chosen = ["x", "z", "w"]
    G = region_graph(R, lab, names, labels=chosen)
    sel = np.isin(lab, [0, 1, 3])
    for layer in range(n_layers):
        layer_nodes = [d for _, d in G.nodes(data=True) if d["layer"] == layer]
        for name in chosen:  # per-layer counts sum to that label's documents
            assert sum(d["counts"][name] for d in layer_nodes) == (lab == names.index(name)).sum()
        assert sum(d["total"] for d in layer_nodes) == sel.sum()
        if layer < n_layers - 1:  # weights leaving each layer sum to the documents
            out = [d["weight"] for u, _, d in G.edges(data=True) if u[0] == layer]
            assert sum(out) == sel.sum()
    brute = Counter()
    for doc in np.flatnonzero(sel):
        for layer in range(n_layers - 1):
            brute[((layer, R[layer, doc]), (layer + 1, R[layer + 1, doc]), names[lab[doc]])] += 1
    for u, v, d in G.edges(data=True):
        for name in chosen:
            assert d["counts"][name] == brute[(u, v, name)]
        assert d["weight"] == sum(d["counts"].values())
    assert G.number_of_edges() == len({(u, v) for u, v, _ in brute})


# ---------------------------------------------------------------- N-D mode
def test_spearman_matrix_matches_scipy_with_ties():
    rng = np.random.default_rng(7)
    A = rng.integers(0, 5, size=(30, 3)).astype(float)  # many ties
    B = np.column_stack([A[:, 0] + rng.normal(size=30) * 0.5, rng.normal(size=30)])
    rho = spearman_matrix(A, B)
    for i in range(3):
        for j in range(2):
            assert rho[i, j] == pytest.approx(spearmanr(A[:, i], B[:, j])[0], abs=1e-12)


def test_correlation_graph_edges_only_above_threshold():
    rng = np.random.default_rng(3)
    n_layers, n_docs, k = 4, 80, 3
    C = np.empty((n_layers, n_docs, k))
    C[0] = rng.normal(size=(n_docs, k))
    for layer in range(1, n_layers):  # each layer partly inherits the previous one
        C[layer] = 0.6 * C[layer - 1][:, ::-1] + rng.normal(size=(n_docs, k))
    C[2, :, 1] = 1.0  # constant component: rho undefined -> never an edge
    thr = 0.3
    G = correlation_graph(C, threshold=thr)
    assert G.number_of_nodes() == n_layers * k
    assert all(d["layer"] == n[0] and d["component"] == n[1] for n, d in G.nodes(data=True))
    expected = {}
    for layer in range(n_layers - 1):
        for i in range(k):
            for j in range(k):
                a, b = C[layer][:, i], C[layer + 1][:, j]
                if np.ptp(a) == 0 or np.ptp(b) == 0:
                    continue
                r = spearmanr(a, b)[0]
                if r > thr:
                    expected[((layer, i), (layer + 1, j))] = r
    got = {(u, v): d["weight"] for u, v, d in G.edges(data=True)}
    assert set(got) == set(expected) and len(got) > 0
    for e, r in expected.items():
        assert got[e] == pytest.approx(r, abs=1e-12)
    assert all(w > thr for w in got.values())
    assert not any(u == (2, 1) or v == (2, 1) for u, v in G.edges())


def test_correlation_graph_rejects_bad_shape():
    with pytest.raises(ValueError, match="n_layers"):
        correlation_graph(np.zeros((3, 4)))
