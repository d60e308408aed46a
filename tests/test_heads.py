"""Attention-head distances (JS divergence), per-head scores and classical MDS."""

import math

import numpy as np
import pytest
import torch

from mri_widgets.analysis.heads import (
    JS_SMOOTHING, HeadAnalysisError, attention_score_sums, classical_mds, head_distances, head_stats,
    js_divergence, pairwise_head_js, smooth_attention,
)
from mri_widgets.testing import SAMPLE_TEXTS, tiny_model


def clark_reference(attn_flat, eps=JS_SMOOTHING):
    """Clark et al.'s loop (attention-analysis notebook), float64: (heads, n, n) -> (heads, heads)."""
    n_heads, n = attn_flat.shape[0], attn_flat.shape[-1]
    out = np.zeros((n_heads, n_heads))
    for a in range(n_heads):
        pa = eps / n + attn_flat[a] * (1 - eps)
        for b in range(n_heads):
            pb = eps / n + attn_flat[b] * (1 - eps)
            m = (pa + pb) / 2
            js = -pa * np.log(m / pa) - pb * np.log(m / pb)
            out[a, b] = (js / 2).sum()
    return out


def causal_rows(n, rng):
    x = rng.random((n, n)) * np.tril(np.ones((n, n)))
    return x / x.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------- pure functions
def test_js_hand_computed():
    # p = (1, 0), q = (0.5, 0.5), no smoothing: m = (0.75, 0.25)
    # KL(p||m) = log(1/0.75); KL(q||m) = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25)
    want = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert js_divergence([1, 0], [0.5, 0.5], eps=0) == pytest.approx(want, abs=1e-12)
    # disjoint distributions reach log 2
    assert js_divergence([1, 0], [0, 1], eps=0) == pytest.approx(math.log(2), abs=1e-12)
    # with smoothing: p -> (1 - eps/2, eps/2)
    eps = 0.01
    p, q = np.array([1 - eps / 2, eps / 2]), np.array([0.5, 0.5])
    m = (p + q) / 2
    want = 0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum()
    assert js_divergence([1, 0], [0.5, 0.5], eps=eps) == pytest.approx(want, abs=1e-12)


def test_pairwise_matches_clark_loop_and_is_a_symmetric_zero_diagonal_matrix():
    rng = np.random.default_rng(0)
    n = 7
    attn = np.stack([causal_rows(n, rng) for _ in range(6)])
    got = pairwise_head_js(attn, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, clark_reference(attn), atol=1e-12)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0)
    # chunking (one head per chunk) gives the same values, float32 close to float64
    small = pairwise_head_js(attn, max_elements=1, dtype=torch.float64).numpy()
    np.testing.assert_allclose(small, got, atol=1e-12)
    f32 = pairwise_head_js(torch.tensor(attn, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(f32, got, atol=1e-5)
    # row-wise js_divergence summed over queries is the same quantity
    assert got[1, 4] == pytest.approx(js_divergence(attn[1], attn[4]).sum(), abs=1e-12)


def test_identical_heads_are_at_distance_zero_uniform_vs_first_token_far_apart():
    n = 10
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]  # causal uniform
    first = np.zeros((n, n))
    first[:, 0] = 1
    prev = np.zeros((n, n))
    prev[0, 0] = 1
    prev[np.arange(1, n), np.arange(n - 1)] = 1
    attn = np.stack([uniform, first, uniform.copy(), prev])
    D = pairwise_head_js(attn).numpy()
    assert D[0, 2] == 0.0
    assert D[0, 1] > 1.0  # several rows each contribute a sizeable divergence
    # uniform-first rows: row q has JS(uniform over q+1, one-hot) -> grows with q; first and prev
    # agree on rows 0 and 1 only
    assert D[1, 3] > D[0, 1] * 0.5
    ref = sum(js_divergence(uniform[q], first[q]) for q in range(n))
    assert D[0, 1] == pytest.approx(ref, rel=1e-5)


def test_score_sums_hand_made():
    n = 4
    prev = np.zeros((n, n))
    prev[0, 0] = 1
    prev[np.arange(1, n), np.arange(n - 1)] = 1
    first = np.zeros((n, n))
    first[:, 0] = 1
    selfh = np.eye(n)
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    s = attention_score_sums(np.stack([prev, first, selfh, uniform]))
    assert s["rows"] == 3
    np.testing.assert_allclose(s["previous"], [3, 1, 0, 1 / 2 + 1 / 3 + 1 / 4])
    np.testing.assert_allclose(s["first"], [1, 3, 0, 1 / 2 + 1 / 3 + 1 / 4])
    np.testing.assert_allclose(s["self"], [0, 0, 3, 1 / 2 + 1 / 3 + 1 / 4])
    np.testing.assert_allclose(s["entropy"], [0, 0, 0, math.log(2) + math.log(3) + math.log(4)])


def test_bad_inputs():
    with pytest.raises(HeadAnalysisError, match="shape"):
        pairwise_head_js(np.zeros((2, 3, 4)))
    with pytest.raises(HeadAnalysisError, match="same shape"):
        js_divergence([1, 0], [1, 0, 0])
    with pytest.raises(HeadAnalysisError, match="eps"):
        smooth_attention(np.ones(3), 1.5)
    with pytest.raises(HeadAnalysisError, match="square"):
        classical_mds(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="LoadedModel"):
        head_distances(object(), ["x"])


# ---------------------------------------------------------------------------- MDS
def test_mds_recovers_a_2d_configuration_up_to_rotation():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 2)) * [3, 1]
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    Y = classical_mds(D)
    assert Y.shape == (12, 2)
    DY = np.sqrt(((Y[:, None] - Y[None]) ** 2).sum(-1))
    np.testing.assert_allclose(DY, D, atol=1e-9)
    # orthogonal Procrustes: Y = (X - mean) R with R orthogonal
    Xc = X - X.mean(0)
    U, _, Vt = np.linalg.svd(Xc.T @ Y)
    R = U @ Vt
    np.testing.assert_allclose(Xc @ R, Y, atol=1e-9)
    np.testing.assert_allclose(R.T @ R, np.eye(2), atol=1e-12)
    # squared input, deterministic signs (largest-magnitude coordinate of each axis positive)
    np.testing.assert_allclose(classical_mds(D ** 2, squared=True), Y, atol=1e-9)
    idx = np.abs(Y).argmax(0)
    assert (Y[idx, [0, 1]] > 0).all()
    # k larger than the number of points is padded with zeros
    assert classical_mds(np.array([[0.0, 1.0], [1.0, 0.0]]), 3).shape == (2, 3)


# ---------------------------------------------------------------------------- on a model
def test_head_distances_on_tiny_gpt2_match_per_text_reference(tiny):
    lm = tiny("gpt2")
    texts = SAMPLE_TEXTS[:3]
    D = head_distances(lm, texts, batch_size=2)  # padding inside batches
    LH = lm.n_layers * lm.n_heads
    assert D.shape == (LH, LH)
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0)
    assert (D[~np.eye(LH, dtype=bool)] > 0).all()
    # brute force: one text at a time, no padding, Clark's loop, averaged
    ref = np.zeros((LH, LH))
    for t in texts:
        cap = lm.capture([t], ("attn",))
        a = cap["attn"][0].double().numpy().reshape(LH, *cap["attn"].shape[-2:])
        ref += clark_reference(a)
    ref /= len(texts)
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(D, ref, rtol=1e-4, atol=1e-5)
    # batch size does not matter (padding excluded), nor batches by a token budget (the default)
    np.testing.assert_allclose(head_distances(lm, texts, batch_size=1), D, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head_distances(lm, texts), D, rtol=1e-5, atol=1e-6)


def test_head_stats_default_batches_of_mixed_lengths(tiny, monkeypatch):
    import mri_widgets.models.capture as C

    lm = tiny("llama")
    texts = ["Hi there.", " ".join(SAMPLE_TEXTS[:3]), "Ok then", SAMPLE_TEXTS[3], "A b."]
    monkeypatch.setattr(C, "BATCH_TOKENS", 30)
    st = head_stats(lm, texts)
    one = head_stats(lm, texts, batch_size=1)
    assert st.n_examples == one.n_examples == len(texts) and st.n_rows == one.n_rows
    np.testing.assert_allclose(st.distances, one.distances, rtol=1e-5, atol=1e-6)
    for k in one.scores:
        np.testing.assert_allclose(st.scores[k], one.scores[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_head_scores_match_per_text_reference(tiny):
    lm = tiny("gpt2")
    texts = SAMPLE_TEXTS[:3]
    st = head_stats(lm, texts, batch_size=2)
    sums = {k: 0.0 for k in ("entropy", "previous", "first", "self")}
    rows = 0
    for t in texts:
        a = lm.capture([t], ("attn",))["attn"][0].double().numpy()  # (L, H, n, n)
        n = a.shape[-1]
        for q in range(1, n):
            r = a[:, :, q]
            sums["entropy"] = sums["entropy"] - np.where(r > 0, r * np.log(np.where(r > 0, r, 1)), 0).sum(-1)
            sums["previous"] = sums["previous"] + r[..., q - 1]
            sums["first"] = sums["first"] + r[..., 0]
            sums["self"] = sums["self"] + r[..., q]
            rows += 1
    assert st.n_rows == rows and st.n_examples == 3
    for k, v in sums.items():
        np.testing.assert_allclose(st.scores[k], v / rows, rtol=1e-5, atol=1e-6, err_msg=k)
    xy = st.embedding()
    assert xy.shape == (lm.n_layers * lm.n_heads, 2) and np.isfinite(xy).all()
    assert st.index(2, 1) == 2 * lm.n_heads + 1
    with pytest.raises(IndexError):
        st.index(lm.n_layers, 0)


def test_copied_query_key_weights_give_identical_heads():
    lm = tiny_model("gpt2")  # fresh: we edit weights
    d, H = lm.d_model, lm.n_heads
    dh = d // H
    attn = lm.model.transformer.h[1].attn.c_attn  # Conv1D: weight (d, 3d), columns q | k | v
    with torch.no_grad():
        attn.weight[:, :2 * d] *= 4  # sharper attention than the random init's near-uniform one
        for off in (0, d):  # q and k blocks
            src = slice(off + 0 * dh, off + 1 * dh)
            dst = slice(off + 2 * dh, off + 3 * dh)
            attn.weight[:, dst] = attn.weight[:, src]
            attn.bias[dst] = attn.bias[src]
    D = head_distances(lm, SAMPLE_TEXTS[:3])
    i, j = 1 * H + 0, 1 * H + 2
    assert D[i, j] == pytest.approx(0.0, abs=1e-6)
    others = D[i][np.arange(D.shape[0]) != i]
    assert np.sort(others)[1] > 1e-2  # every other head is measurably different


def test_head_distances_on_encoder(tiny):
    lm = tiny("bert")
    D = head_distances(lm, SAMPLE_TEXTS[:3], batch_size=2)
    D1 = head_distances(lm, SAMPLE_TEXTS[:3], batch_size=1)
    np.testing.assert_allclose(D, D1, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- HeadMap widget
def test_head_map_widget(tiny):
    from mri_widgets.widgets.head_map import HeadMap
    from mri_widgets.widgets.selection import Selection

    lm = tiny("gpt2")
    texts = SAMPLE_TEXTS[:3]
    sel = Selection()
    w = HeadMap(lm, texts, selection=sel)
    LH = lm.n_layers * lm.n_heads
    d = w.data
    assert d["x"].shape == (LH,) and d["layer"].tolist() == [l for l in range(lm.n_layers) for _ in range(lm.n_heads)]
    assert d["head"].tolist() == list(range(lm.n_heads)) * lm.n_layers
    np.testing.assert_allclose(d["scores"]["first"], w.stats.scores["first"].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(np.c_[d["x"], d["y"]], w.coords, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w.stats.distances, head_distances(lm, texts), rtol=1e-5, atol=1e-7)
    # the pattern is that head's attention on that example
    p = w.pattern(2, 1, example=1)
    cap = lm.capture([texts[1]], ("attn",))
    np.testing.assert_allclose(p["attn"], cap["attn"][0, 2, 1].numpy(), atol=1e-6)
    assert p["tokens"] == cap.tokens[0] and p["truncated"] is False
    w.example = 2
    assert w.pattern(0, 0)["example"] == 2
    # picked: validated, deduplicated, sorted
    w.picked = [[2, 1], (0, 3), [2, 1]]
    assert w.picked == [[0, 3], [2, 1]] and w.picked_heads() == [(0, 3), (2, 1)]
    import traitlets
    with pytest.raises(traitlets.TraitError, match="out of range"):
        w.picked = [[lm.n_layers, 0]]
    with pytest.raises(traitlets.TraitError, match="example"):
        w.example = len(texts)
    with pytest.raises(traitlets.TraitError, match="color_by"):
        w.color_by = "nope"
    with pytest.raises(IndexError, match="head"):
        w.pattern(0, lm.n_heads)
    with pytest.raises(TypeError):
        w.pattern("0", 0)
    assert w.selection is sel
