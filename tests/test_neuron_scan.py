"""NeuronScan: top-k / bottom-k and statistics against brute force, merging, files; logit effects."""

import json

import numpy as np
import pytest
import torch

from mri_widgets.analysis.neurons import (
    HIST_EDGES, HIST_HI, HIST_LO, N_BINS, SIGN_CASES, NeuronScan, NeuronScanError, _decode_key, _order_key,
    neuron_logit_effect, neuron_output_logits)

WORDS = ("the cat sat on mat fox dog happy sad capital France Paris Rome neurons fire layer model "
         "tokens quick brown lazy sea shells attention residual stream").split()
BATCH = 7


def corpus(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(1, 14))) for _ in range(n)]


def brute_lists(x, mask, k, top=True):
    """Per (layer, neuron): [(value, text, position)] sorted by value then lower text index."""
    n, L, seq, d = x.shape
    out = np.empty((L, d), dtype=object)
    fill = -np.inf if top else np.inf
    xm = np.where(mask[:, None, :, None], x, fill)
    ext = xm.max(2) if top else xm.min(2)  # (n, L, d)
    arg = xm.argmax(2) if top else xm.argmin(2)
    for l in range(L):
        for j in range(d):
            rows = [(float(ext[i, l, j]), i, int(arg[i, l, j])) for i in range(n)]
            rows.sort(key=lambda r: (-r[0] if top else r[0], r[1]))
            out[l, j] = rows[:k]
    return out


def brute_bins(v):
    """Histogram bin of each value, computed with frexp (independent of the exponent-bit trick)."""
    v = np.asarray(v, dtype=np.float32)
    _, e = np.frexp(np.abs(v))
    octave = e - 1  # |v| in [2**octave, 2**(octave + 1))
    n_side = HIST_HI - HIST_LO + 1
    off = np.where(np.abs(v) < 2.0 ** HIST_LO, 0, np.where(octave >= HIST_HI, n_side, octave - HIST_LO + 1))
    return n_side + np.sign(v).astype(int) * off


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request):
    from mri_widgets.testing import tiny_model

    lm = tiny_model(request.param)
    texts = corpus()
    scan = NeuronScan.run(lm, texts, k=5, batch_size=BATCH, progress=False)
    sites = ["mlp"] + (["mlp_gate", "mlp_up"] if lm.gated else [])
    cap = lm.capture(texts, sites, batch_size=BATCH, progress=False)
    return lm, texts, scan, cap


def test_top_and_bottom_equal_brute_force(setup):
    lm, texts, scan, cap = setup
    x, mask = cap["mlp"].numpy(), cap.mask.numpy()
    assert scan.layers == list(range(lm.n_layers)) and scan.n_texts == len(texts)
    for top in (True, False):
        ref = brute_lists(x, mask, scan.k, top=top)
        for l in range(lm.n_layers):
            for j in range(lm.d_mlp):
                got = scan.top(l, j) if top else scan.bottom(l, j)
                assert got == ref[l, j], (top, l, j)
    # strongest first
    t = scan.top(1, 2)
    assert [r[0] for r in t] == sorted([r[0] for r in t], reverse=True)


def test_stats_equal_brute_force(setup):
    lm, texts, scan, cap = setup
    x, mask = cap["mlp"].numpy(), cap.mask.numpy()
    real = x.transpose(1, 3, 0, 2)[:, :, mask]  # (L, d, n_real)
    assert scan.n_tokens == int(mask.sum())
    np.testing.assert_array_equal(scan.n_positive, (real > 0).sum(-1))
    np.testing.assert_allclose(scan.mean, real.mean(-1), rtol=1e-5, atol=1e-7)
    bins = brute_bins(real)
    hist = np.stack([(bins == b).sum(-1) for b in range(N_BINS)], -1)
    np.testing.assert_array_equal(scan.hist, hist)
    assert scan.hist.sum(-1).min() == scan.n_tokens
    st = scan.stats(2, 5)
    assert st["max"] == pytest.approx(real[2, 5].max()) and st["min"] == pytest.approx(real[2, 5].min())
    assert st["freq_positive"] == pytest.approx((real[2, 5] > 0).mean())
    assert st["hist_counts"] == hist[2, 5].tolist() and len(st["hist_edges"]) == N_BINS + 1
    if lm.gated:
        g = cap["mlp_gate"].numpy().transpose(1, 3, 0, 2)[:, :, mask] > 0
        u = cap["mlp_up"].numpy().transpose(1, 3, 0, 2)[:, :, mask] > 0
        cases = [g & u, g & ~u, ~g & u, ~g & ~u]
        np.testing.assert_array_equal(scan.case_counts, np.stack([c.sum(-1) for c in cases], -1))
        sums = np.stack([(real * c).sum(-1) for c in cases], -1)
        np.testing.assert_allclose(scan.case_sums, sums, rtol=1e-4, atol=1e-6)
        assert [c["name"] for c in st["cases"]] == list(SIGN_CASES)
        assert sum(c["freq"] for c in st["cases"]) == pytest.approx(1.0)
    else:
        assert "cases" not in st and not scan.case_counts.any()


def test_histogram_bins_hand_computed():
    vals = np.array([0.0, -0.0, 1e-4, -1e-4, 2.0 ** -10, -(2.0 ** -10), 0.75, 1.0, 1.5, -1.0, -3.0, 127.0, 128.0,
                     -1e6, 2.0 ** -10 * 0.999], dtype=np.float32)
    c = N_BINS // 2
    want = [c, c, c, c, c + 1, c - 1, c + 10, c + 11, c + 11, c - 11, c - 12, c + 17, c + 18, c - 18, c]
    assert brute_bins(vals).tolist() == want
    # the reducer's exponent-bit bins agree, in float32 and bfloat16
    from mri_widgets.analysis.neurons import _Reducer

    for dtype in (torch.float32, torch.bfloat16):
        red = _Reducer(1, len(vals), 1, False, "cpu")
        x = torch.tensor(vals).to(dtype).view(1, 1, 1, -1)
        red._histogram(x, torch.tensor(0))
        got = red.hist.view(len(vals), N_BINS).argmax(-1).tolist()
        assert got == brute_bins(x.float().numpy().ravel()).tolist()
    # the documented edges: the central bin is [-2**LO, 2**LO)
    assert HIST_EDGES[c] == -(2.0 ** HIST_LO) and HIST_EDGES[c + 1] == 2.0 ** HIST_LO


def test_order_keys_rank_by_value_then_lower_text():
    values = torch.tensor([5.0, 3.0, 3.0, -1.0, -0.0, 0.0, 5.0, -1e-30, float("inf"), -2.5])
    texts = torch.tensor([1, 0, 2, 3, 4, 5, 3, 6, 7, 2 ** 31 - 1])
    keys = _order_key(values, texts)
    order = torch.argsort(keys, descending=True).tolist()
    want = sorted(range(len(values)), key=lambda i: (-float(values[i]), int(texts[i])))
    assert order == want
    v, t = _decode_key(keys)
    assert t.tolist() == texts.tolist() and v.tolist() == [x + 0.0 for x in values.tolist()]
    # a running list merged with a batch: the k largest keys, positions carried along
    from mri_widgets.analysis.neurons import _EMPTY, _Reducer

    red = _Reducer(1, 1, 4, False, "cpu")
    k0, p0 = red._merge(red.top_key, red.top_p, _order_key(torch.tensor([[[3.0]], [[5.0]], [[3.0]]]),
                                                          torch.tensor([0, 1, 2]).view(3, 1, 1)),
                        torch.tensor([[[8]], [[9]], [[7]]]))
    assert k0[0, 0, 3].item() == _EMPTY
    k1, p1 = red._merge(k0, p0, _order_key(torch.tensor([[[5.0]], [[3.0]]]), torch.tensor([3, 4]).view(2, 1, 1)),
                        torch.tensor([[[1]], [[2]]]))
    v, t = _decode_key(k1)
    assert v.tolist() == [[[5.0, 5.0, 3.0, 3.0]]] and t.tolist() == [[[1, 3, 0, 2]]] and p1.tolist() == [[[9, 1, 8, 7]]]


def test_ties_resolved_by_lower_text_index_and_merge_keeps_them(tiny):
    lm = tiny("llama")
    base = corpus(6, seed=3)
    texts = base + base[::-1] + base  # every text three times: exactly tied maxima
    whole = NeuronScan.run(lm, texts, k=4, batch_size=1, progress=False)  # no padding: bit-identical values
    for l in range(lm.n_layers):
        for j in range(0, lm.d_mlp, 7):
            rows = whole.top(l, j)
            keys = [(-v, t) for v, t, _ in rows]
            assert keys == sorted(keys)
            # the strongest text appears with its copies, lowest index first
            same = [t for v, t, _ in rows if v == rows[0][0]]
            assert same == sorted(same) and len(same) >= 2
    a = NeuronScan.run(lm, texts[:7], k=4, batch_size=1, progress=False)
    b = NeuronScan.run(lm, texts[7:], k=4, batch_size=1, progress=False)
    m = NeuronScan.merge(a, b)
    for side in ("top", "bottom"):
        for what in ("values", "texts", "positions"):
            np.testing.assert_array_equal(getattr(m, f"{side}_{what}"), getattr(whole, f"{side}_{what}"))


def test_merge_equals_whole(setup):
    lm, texts, whole, _ = setup
    cut = 3 * BATCH  # same batches in the shards as in the whole scan
    a = NeuronScan.run(lm, texts[:cut], k=5, batch_size=BATCH, progress=False)
    b = NeuronScan.run(lm, texts[cut:], k=5, batch_size=BATCH, progress=False)
    m = NeuronScan.merge(a, b)
    assert (m.n_texts, m.n_tokens, m.texts) == (whole.n_texts, whole.n_tokens, whole.texts)
    for name in ("top_values", "top_texts", "top_positions", "bottom_values", "bottom_texts", "bottom_positions",
                 "n_positive", "hist", "case_counts"):
        np.testing.assert_array_equal(getattr(m, name), getattr(whole, name), err_msg=name)
    np.testing.assert_allclose(m.act_sum, whole.act_sum, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.case_sums, whole.case_sums, rtol=1e-9, atol=1e-12)
    assert m.top(1, 4) == whole.top(1, 4)


def test_merge_rejects_incompatible(setup, tiny):
    lm, texts, scan, _ = setup
    other = NeuronScan.run(lm, texts[:5], k=3, batch_size=BATCH, progress=False)
    with pytest.raises(NeuronScanError, match="different k"):
        NeuronScan.merge(scan, other)
    other = NeuronScan.run(lm, texts[:5], k=5, layers=[0, 1], progress=False)
    with pytest.raises(NeuronScanError, match="different layers"):
        NeuronScan.merge(scan, other)
    with pytest.raises(TypeError, match="NeuronScan"):
        NeuronScan.merge(scan, "x")


def test_fewer_texts_than_k_and_layer_subset(tiny):
    lm = tiny("gpt2")
    scan = NeuronScan.run(lm, ["The cat sat.", "A dog."], k=4, layers=[2, 0], progress=False, keep_texts=False)
    assert scan.layers == [2, 0] and scan.texts is None
    assert len(scan.top(2, 0)) == 2 and len(scan.bottom(0, 3)) == 2
    assert scan.top_texts[0, 0, 2:].tolist() == [-1, -1]
    with pytest.raises(NeuronScanError, match="not scanned"):
        scan.top(1, 0)
    with pytest.raises(IndexError, match="out of range"):
        scan.stats(0, lm.d_mlp)
    with pytest.raises(NeuronScanError, match="positive integer"):
        NeuronScan.run(lm, ["a"], k=0)
    with pytest.raises(NeuronScanError, match="single string"):
        NeuronScan.run(lm, "a text")
    with pytest.raises(IndexError, match="out of range"):
        NeuronScan.run(lm, ["a"], layers=[7])


def test_corpus_input(tiny):
    from mri_widgets.corpus import Corpus

    lm = tiny("gpt2")
    c = Corpus(["The cat sat.", "A dog ran."], ["a", "b"])
    scan = NeuronScan.run(lm, c, k=2, layers=0, progress=False)
    assert scan.texts == c.texts and scan.n_texts == 2


def test_save_load_round_trip(setup, tmp_path):
    lm, texts, scan, _ = setup
    p = tmp_path / "scan.npz"
    scan.save(p)
    back = NeuronScan.load(p)
    assert back.layers == scan.layers and back.texts == scan.texts and back.model_name == scan.model_name
    assert (back.k, back.n_texts, back.n_tokens, back.gated, back.max_length) == \
        (scan.k, scan.n_texts, scan.n_tokens, scan.gated, scan.max_length)
    for name in ("top_values", "top_texts", "top_positions", "bottom_values", "bottom_texts", "bottom_positions",
                 "n_positive", "act_sum", "hist", "case_counts", "case_sums"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scan, name), err_msg=name)
    assert back.stats(1, 3) == scan.stats(1, 3)
    # unicode texts, no texts, a name without .npz
    odd = NeuronScan.merge(scan, scan)
    odd.texts = ["é 字 \n"] * odd.n_texts
    odd.save(tmp_path / "odd")
    assert NeuronScan.load(tmp_path / "odd").texts == odd.texts
    nt = NeuronScan.run(lm, texts[:3], k=2, layers=[1], keep_texts=False, progress=False)
    nt.save(tmp_path / "nt.npz")
    assert NeuronScan.load(tmp_path / "nt.npz").texts is None


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(NeuronScanError, match="not a NeuronScan file"):
        NeuronScan.load(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(NeuronScanError, match="not a NeuronScan file"):
        NeuronScan.load(tmp_path / "other.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(NeuronScanError, match="not a NeuronScan file"):
        NeuronScan.load(tmp_path / "pickled.npz")
    meta = np.frombuffer(json.dumps({"format": "something else"}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "wrong.npz", meta=meta)
    with pytest.raises(NeuronScanError, match="wrong format marker"):
        NeuronScan.load(tmp_path / "wrong.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(NeuronScanError, match="not a NeuronScan file"):
        NeuronScan.load(tmp_path / "arr.npy")
    with pytest.raises(FileNotFoundError):
        NeuronScan.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_logit_effect_hand_computed(tiny, arch):
    lm = tiny(arch)
    layer, neuron = 1, 5
    w = lm.adapter.W_out(layer)[:, neuron].detach().double()
    norm = lm.adapter.final_norm
    g = norm.weight.detach().double()
    if arch == "gpt2":  # LayerNorm without its bias
        c = w - w.mean()
        y = g * c / torch.sqrt((c ** 2).mean() + norm.eps)
    else:  # RMSNorm
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        y = g * w / torch.sqrt((w ** 2).mean() + eps)
    ref = lm.W_U.detach().double() @ y
    got = neuron_output_logits(lm, layer, [neuron])[0].double()
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    eff = neuron_logit_effect(lm, layer, neuron, k=4)
    order = torch.argsort(ref, descending=True)
    assert [i for _, i, _ in eff["promoted"]] == order[:4].tolist()
    assert [i for _, i, _ in eff["suppressed"]] == order.flip(0)[:4].tolist()
    assert eff["promoted"][0][0] == lm.token_str([order[0].item()])[0]
    assert neuron_output_logits(lm, layer).shape == (lm.d_mlp, lm.vocab_size)
    with pytest.raises(IndexError, match="out of range"):
        neuron_logit_effect(lm, layer, lm.d_mlp)
    with pytest.raises(ValueError, match="positive integer"):
        neuron_logit_effect(lm, layer, 0, k=0)


@pytest.mark.slow
def test_demo_model_scan_matches_brute_force():
    import mri_widgets as mw
    from mri_widgets.datasets import emotions

    lm = mw.load("demo")
    texts = emotions().texts[:12]
    scan = NeuronScan.run(lm, texts, k=3, layers=[5, 20], batch_size=4, progress=False)
    cap = lm.capture(texts, ["mlp"], layers=[5, 20], batch_size=4, progress=False)
    ref = brute_lists(cap["mlp"].numpy(), cap.mask.numpy(), 3, top=True)
    for j in range(0, lm.d_mlp, 97):
        assert scan.top(20, j) == ref[1, j]
    eff = neuron_logit_effect(lm, 20, 0, k=5)
    assert len(eff["promoted"]) == 5 and eff["promoted"][0][2] >= eff["promoted"][-1][2]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_default_token_budget_batches_give_the_per_text_scan(tiny, arch, monkeypatch):
    """Batches by a token budget regroup texts by length; text indices and results stay the user's."""
    import mri_widgets.models.capture as C

    lm = tiny(arch)
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, n)) for n in (1, 30, 2, 18, 40, 3, 25, 1, 9, 33, 5, 12)]
    monkeypatch.setattr(C, "BATCH_TOKENS", 80)  # several batches of texts of similar lengths
    order = []
    lm.capture(texts, ["mlp"], progress=False, reducer=lambda b: order.extend(b.indices))
    assert sorted(order) == list(range(len(texts))) and order != sorted(order)
    scan = NeuronScan.run(lm, texts, k=4, progress=False)
    one = NeuronScan.run(lm, texts, k=4, batch_size=1, progress=False)  # no padding, the given order
    # texts that start alike tie exactly when run alone and nearly in batches, so compare values, and
    # check that each listed (text, position) holds its value in that text's own run
    single = lm.capture(texts, ["mlp"], batch_size=1, progress=False)
    xs, ms = single["mlp"].numpy(), single.mask.numpy()
    for side in ("top", "bottom"):
        v, t, p = (getattr(scan, f"{side}_{a}") for a in ("values", "texts", "positions"))
        np.testing.assert_allclose(v, getattr(one, f"{side}_values"), atol=1e-5)
        assert ms[t, p].all()
        L_, D_ = np.meshgrid(np.arange(lm.n_layers), np.arange(lm.d_mlp), indexing="ij")
        np.testing.assert_allclose(xs[t, L_[..., None], p, D_[..., None]], v, atol=1e-5)
    assert scan.n_tokens == one.n_tokens
    np.testing.assert_array_equal(scan.n_positive, one.n_positive)
    np.testing.assert_allclose(scan.act_sum, one.act_sum, rtol=1e-4, atol=1e-5)
    assert np.abs(scan.hist - one.hist).sum() <= 2  # a value on a bin edge may move with float rounding
    np.testing.assert_array_equal(scan.case_counts, one.case_counts)
    np.testing.assert_allclose(scan.case_sums, one.case_sums, rtol=1e-4, atol=1e-5)
    # and exactly the brute force over a capture batched the same way
    cap = lm.capture(texts, ["mlp"], progress=False)
    x, mask = cap["mlp"].numpy(), cap.mask.numpy()
    ref = brute_lists(x, mask, 4, top=True)
    for l in range(lm.n_layers):
        for j in range(lm.d_mlp):
            assert scan.top(l, j) == ref[l, j]
