"""Bounded attention memory: attention recomputed from queries and keys in blocks of rows equals the
model's own output_attentions on every family; the streamed head analyses equal the eager ones; a
request that would not fit is refused before it runs, naming a max_length that fits; HeadMap's
pattern of a long text is an overview plus exact tiles."""

import numpy as np
import pytest
import torch

import mri_widgets.analysis.heads as heads
import mri_widgets.models.attention as A
from mri_widgets.models.attention import AttentionMemoryError, attention_rows, attention_rules
from mri_widgets.testing import SAMPLE_TEXTS, tiny_model

FAMILIES = ["gpt2", "gpt_neox", "llama", "gptj", "gpt_neo", "bert"]
LONG = " ".join(SAMPLE_TEXTS * 3)


@pytest.fixture(scope="module")
def models():
    return {}


def _lm(models, arch):
    if arch not in models:
        models[arch] = tiny_model(arch)
    return models[arch]


@pytest.mark.parametrize("arch", FAMILIES)
def test_rows_from_queries_and_keys_equal_output_attentions(models, arch):
    lm = _lm(models, arch)
    texts = [LONG, SAMPLE_TEXTS[1]]  # padding in the batch
    cap = lm.capture(texts, ("q", "k", "attn"), batch_size=2, max_length=120)
    rules = attention_rules(lm.adapter)
    assert len(rules) == lm.n_layers
    if arch == "gpt_neo":  # the tiny GPT-Neo alternates global and local (window 8) layers
        assert rules[0].window is None and rules[1].window == 8 and rules[0].scale == 1.0
    assert all(r.causal for r in rules) == (arch != "bert")
    for t in range(2):
        n = int(cap.mask[t].sum())
        for l, rule in enumerate(rules):
            q, k, want = cap["q"][t, l, :, :n], cap["k"][t, l, :, :n], cap["attn"][t, l, :, :n, :n]
            full = attention_rows(q, k, rule, 0, n, n)
            torch.testing.assert_close(full, want, atol=1e-6, rtol=0)
            for q0, q1 in ((0, 3), (3, n - 2), (n - 2, n)):  # blocks of rows: later keys left out are zero
                rows = attention_rows(q, k, rule, q0, q1)
                kk = rows.shape[-1]
                assert kk == (q1 if rule.causal else n)
                torch.testing.assert_close(rows, want[:, q0:q1, :kk], atol=1e-6, rtol=0)
                assert float(want[:, q0:q1, kk:].abs().sum()) == 0.0


@pytest.mark.parametrize("arch", FAMILIES)
def test_streamed_head_stats_equal_the_eager_reduction(models, arch, monkeypatch):
    lm = _lm(models, arch)
    texts = [LONG, "Hi there.", SAMPLE_TEXTS[2]]
    # the eager path: every layer's probabilities from the model, reduced per text
    eager = heads._HeadReducer(lm.n_layers, lm.n_heads, heads.JS_SMOOTHING)
    lm.capture(texts, ("attn",), max_length=100, reducer=eager, progress=False)
    want = eager.result()
    # the streamed path in blocks of a few rows (many blocks per text)
    monkeypatch.setattr(heads, "BLOCK_BYTES", 4 * lm.n_layers * lm.n_heads * 100 * 5)
    got = heads.head_stats(lm, texts, max_length=100)
    assert got.n_examples == 3 and got.n_rows == want.n_rows
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-5)
    for k in heads.SCORE_NAMES:
        np.testing.assert_allclose(got.scores[k], want.scores[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_block_score_sums_add_up_to_the_full_sums():
    g = torch.Generator().manual_seed(0)
    n = 11
    a = torch.rand(2, 3, n, n, generator=g).tril()
    a = a / a.sum(-1, keepdim=True)
    full = heads.attention_score_sums(a)
    acc = {k: 0 for k in heads.SCORE_NAMES}
    rows = 0
    for q0, q1 in ((0, 1), (1, 4), (4, 11)):
        s = heads.block_score_sums(a[..., q0:q1, :q1], q0)
        for k in heads.SCORE_NAMES:
            acc[k] = acc[k] + s[k]
        rows += s["rows"]
    assert rows == full["rows"] == n - 1
    for k in heads.SCORE_NAMES:
        np.testing.assert_allclose(acc[k], full[k], rtol=1e-6, err_msg=k)
    with pytest.raises(heads.HeadAnalysisError, match="keys"):
        heads.block_score_sums(a[..., 4:8, :5], 4)


def test_pairwise_js_of_row_blocks_sums_to_the_whole():
    g = torch.Generator().manual_seed(1)
    n = 9
    a = torch.rand(5, n, n, generator=g, dtype=torch.float64).tril()
    a = a / a.sum(-1, keepdim=True)
    whole = heads.pairwise_head_js(a, dtype=torch.float64)
    parts = sum(heads.pairwise_head_js(a[:, q0:q1, :q1], n_keys=n, dtype=torch.float64)
                for q0, q1 in ((0, 3), (3, 4), (4, 9)))
    torch.testing.assert_close(parts, whole, atol=1e-12, rtol=1e-10)
    with pytest.raises(heads.HeadAnalysisError, match="n_keys"):
        heads.pairwise_head_js(a[:, :3, :], n_keys=5)


# ---------------------------------------------------------------------------- memory checks
def _small_memory(monkeypatch, nbytes):
    monkeypatch.setattr(A, "available_memory", lambda device=None: nbytes)


def test_attn_capture_refused_before_it_runs_naming_a_max_length_that_fits(models, monkeypatch):
    lm = _lm(models, "gpt2")
    calls = []
    monkeypatch.setattr(lm.adapter.model, "forward", lambda *a, **k: calls.append(1))  # must never run
    # room for ~ 3 x 36 heads x 60^2 probabilities, not for 200^2
    _small_memory(monkeypatch, 3 * 12 * 4 * 60 * 60 * 4 * 3)
    with pytest.raises(AttentionMemoryError, match=r"pass max_length=\d+") as e:
        lm.capture([LONG], ("attn",), max_length=200)
    assert calls == []
    m = e.value.max_length
    assert 20 < m < 200 and isinstance(e.value, MemoryError) and isinstance(e.value, ValueError)
    assert "available" in str(e.value) and "site 'attn'" in str(e.value)
    # the named max_length passes the check, one token more does not
    from mri_widgets.models.capture import _attention_estimate, normalise_layers

    est = _attention_estimate(lm.adapter, ["attn"], normalise_layers(lm.adapter, ["attn"], None),
                              [200], None, None, True)
    assert est(m)["cpu"] <= A.MEMORY_FRACTION * e.value.available < est(m + 1)["cpu"]
    monkeypatch.undo()
    cap = lm.capture([LONG], ("attn",), max_length=m)
    assert cap["attn"].shape[-1] == m


def test_head_stats_refused_when_even_streaming_does_not_fit(models, monkeypatch):
    lm = _lm(models, "llama")
    _small_memory(monkeypatch, 1000)
    with pytest.raises(AttentionMemoryError, match="head_stats"):
        heads.head_stats(lm, [LONG])
    _small_memory(monkeypatch, None)  # unknown: no check
    assert heads.head_stats(lm, ["Hi there."]).n_examples == 1


def test_streamed_head_stats_need_far_less_than_the_eager_capture(models):
    lm = _lm(models, "llama")
    from mri_widgets.models.capture import _attention_estimate, normalise_layers

    eager = _attention_estimate(lm.adapter, ["attn"], normalise_layers(lm.adapter, ["attn"], None), [4096],
                                None, None, False)
    streamed = heads._stream_estimate(lm, [4096], None)
    # quadratic vs (mostly) linear: at 4k tokens the stream needs a fraction of the eager memory
    assert sum(streamed(4096).values()) * 4 < sum(eager(4096).values())


def test_available_memory_reads_the_system():
    a = A.available_memory()
    assert a is None or a > 0
    assert A.fmt_bytes(3 * 2 ** 30) == "3.0 GiB"


# ---------------------------------------------------------------------------- HeadMap pattern
@pytest.mark.parametrize("arch", ["gpt_neo", "llama", "bert"])
def test_pattern_of_a_long_text_overview_and_tiles_equal_the_full_pattern(models, arch):
    from mri_widgets.widgets.head_map import MAX_PATTERN_TOKENS, HeadMap

    lm = _lm(models, arch)
    w = HeadMap(lm, [SAMPLE_TEXTS[0], LONG], max_length=200)
    full = lm.capture([LONG], ("attn",), max_length=200)
    n = int(full.mask[0].sum())
    assert n > MAX_PATTERN_TOKENS
    A_ = full["attn"][0, 1, 2, :n, :n].numpy()
    p = w.pattern(1, 2, example=1)
    assert p["attn"] is None and p["n_tokens"] == n and p["tokens"] == full.tokens[0] and p["truncated"] is False
    b = p["block"]
    m = p["overview"].shape[0]
    assert m == -(-n // b) and m <= 192
    padded = np.zeros((m * b, m * b), np.float32)
    padded[:n, :n] = A_
    np.testing.assert_allclose(p["overview"], padded.reshape(m, b, m, b).max((1, 3)), atol=1e-6)
    for q0, q1, k0, k1 in ((0, 64, 0, 64), (n - 64, n, 10, 74), (n - 128, n, 0, 128), (50, 51, 49, 52)):
        t = w.pattern_tile(1, 2, q0, q1, k0, k1, example=1)
        np.testing.assert_allclose(t["attn"], A_[q0:q1, k0:k1], atol=1e-6)
        assert (t["q0"], t["q1"], t["k0"], t["k1"]) == (q0, q1, k0, k1)
    with pytest.raises(ValueError, match="at most"):
        w.pattern_tile(1, 2, 0, 129, 0, 10, example=1)
    with pytest.raises(IndexError, match="out of range"):
        w.pattern_tile(1, 2, 0, 10, n - 5, n + 1, example=1)
    with pytest.raises(TypeError):
        w.pattern_tile(1, 2, 0.5, 10, 0, 10, example=1)
    # a short text still comes whole
    s = w.pattern(0, 1, example=0)
    assert s["overview"] is None
    np.testing.assert_allclose(s["attn"], lm.capture([SAMPLE_TEXTS[0]], ("attn",))["attn"][0, 0, 1].numpy(), atol=1e-6)


def test_unknown_attention_rules_fall_back_to_the_models_probabilities(models, monkeypatch):
    """A model whose rules are not known (a custom family): the eager path, same results."""
    from mri_widgets.models.adapters import AdapterError
    from mri_widgets.widgets.head_map import HeadMap

    lm = _lm(models, "gpt_neo")
    texts = [LONG, SAMPLE_TEXTS[1]]
    want = heads.head_stats(lm, texts, max_length=150)
    w_new = HeadMap(lm, texts, max_length=150)

    def unknown(adapter):
        raise AdapterError("not known")
    monkeypatch.setattr(A, "attention_rules", unknown)
    got = heads.head_stats(lm, texts, max_length=150)
    np.testing.assert_allclose(got.distances, want.distances, rtol=1e-4, atol=1e-5)
    w = HeadMap(lm, texts, max_length=150)
    p, p_new = w.pattern(1, 3, example=0), w_new.pattern(1, 3, example=0)
    assert w._rules is False and p["block"] == p_new["block"]
    np.testing.assert_allclose(p["overview"], p_new["overview"], atol=1e-6)
    np.testing.assert_allclose(w.pattern_tile(1, 3, 80, 150, 20, 100, example=0)["attn"],
                               w_new.pattern_tile(1, 3, 80, 150, 20, 100, example=0)["attn"], atol=1e-6)
    np.testing.assert_allclose(w.pattern(0, 0, example=1)["attn"], w_new.pattern(0, 0, example=1)["attn"], atol=1e-6)
