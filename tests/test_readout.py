"""LoadedModel.readout against brute force (log_softmax of the full logits), a hand-computed case
with ties and a masked token, chunking under a tiny memory budget, targets and errors."""

import numpy as np
import pytest
import torch

from mri_widgets import _checks
from mri_widgets.models.loading import Readout
from mri_widgets.testing import tiny_model


def brute(lm, x, *, norm=True, bias=True):
    """Full float64 statistics from the model's own unembedding (float32 logits)."""
    logits = lm.unembed(torch.as_tensor(x), norm=norm).float()
    head = lm.adapter.unembed_module
    if not bias and head.bias is not None:
        logits = logits - head.bias.detach().float()
    lp = torch.log_softmax(logits.double(), -1)
    return logits, lp


def ranks_of(logits, t):
    """1 + number of tokens with a strictly greater logit (hand-written loop over rows)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return np.array([1 + int((row > row[i]).sum()) for row, i in zip(flat, t.reshape(-1))]).reshape(t.shape)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gptj"])
def test_readout_matches_brute_force(tiny, arch):
    lm = tiny(arch)
    g = torch.Generator().manual_seed(1)
    if arch == "gptj":  # GPT-J's LM head has a bias (zero at init): an own instance with a random one
        lm = tiny_model("gptj")
        with torch.no_grad():
            lm.adapter.unembed_module.bias.normal_(0, 0.1, generator=g)
    x = torch.randn(3, 5, lm.d_model, generator=g) * 2
    logits, lp = brute(lm, x)
    r = lm.readout(x, k=4)
    assert isinstance(r, Readout) and r.top_ids.shape == (3, 5, 4) and r.entropy.shape == (3, 5)
    ref_v, ref_i = lp.topk(4, -1)
    np.testing.assert_array_equal(r.top_ids, ref_i.numpy())
    np.testing.assert_allclose(r.top_probs, ref_v.exp().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(r.top_logits, logits.gather(-1, ref_i).numpy(), rtol=1e-6)
    ent = -(lp.exp() * lp).sum(-1)
    np.testing.assert_allclose(r.entropy, ent.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.logsumexp, torch.logsumexp(logits.double(), -1).numpy(), rtol=1e-6)
    assert (r.top_probs[..., :-1] >= r.top_probs[..., 1:]).all()
    # default target: each row's own top-1, rank 1
    np.testing.assert_array_equal(r.target_ids, r.top_ids[..., 0])
    assert (r.target_ranks == 1).all()
    np.testing.assert_allclose(r.target_probs, r.top_probs[..., 0])
    # one token for every row, then one per row
    tid = int(ref_i[0, 0, 3])
    r2 = lm.readout(x, k=2, target=tid)
    t = np.full((3, 5), tid)
    np.testing.assert_array_equal(r2.target_ranks, ranks_of(logits, t))
    np.testing.assert_allclose(r2.target_probs, lp[..., tid].exp().numpy(), rtol=1e-5, atol=1e-8)
    assert r2.target_ranks[0, 0] == 4 and len(np.unique(r2.target_ranks)) > 2, "ranks must vary for this test to mean anything"
    per = torch.randint(0, lm.vocab_size, (3, 5), generator=g)
    r3 = lm.readout(x, k=1, target=per)
    np.testing.assert_array_equal(r3.target_ids, per.numpy())
    np.testing.assert_array_equal(r3.target_ranks, ranks_of(logits, per.numpy()))
    np.testing.assert_allclose(r3.target_probs, lp.gather(-1, per[..., None])[..., 0].exp().numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r3.target_logits, logits.gather(-1, per[..., None])[..., 0].numpy(), rtol=1e-6)
    # a token string is that token's id
    word = lm.token_str([tid])[0]
    if lm.tokenizer(word, add_special_tokens=False)["input_ids"] == [tid]:
        np.testing.assert_array_equal(lm.readout(x, target=word).target_ranks, r2.target_ranks)
    # without the final norm, and without the head's bias
    logits_nb, lp_nb = brute(lm, x, norm=False, bias=False)
    r4 = lm.readout(x, k=3, norm=False, bias=False)
    np.testing.assert_array_equal(r4.top_ids, lp_nb.topk(3, -1).indices.numpy())
    np.testing.assert_allclose(r4.entropy, (-(lp_nb.exp() * lp_nb).sum(-1)).numpy(), rtol=1e-5, atol=1e-5)
    if arch == "gptj":  # GPT-J's LM head has a bias: bias=False must change the logits
        assert lm.adapter.unembed_module.bias is not None
        assert not np.allclose(r4.top_logits, lm.readout(x, k=3, norm=False).top_logits)


def test_readout_hand_computed_ties_and_masked_token():
    lm = tiny_model("llama")  # own instance: its unembedding is overwritten
    V, d = lm.vocab_size, lm.d_model
    W = torch.zeros(V, d)
    W[3, 0] = W[5, 0] = 2.0  # a tie at the top
    W[7, 0] = 1.0
    W[9, 0] = -float("inf")  # a token that can never be predicted
    with torch.no_grad():
        lm.W_U.copy_(W)
    x = torch.zeros(d)
    x[0] = 1.0
    r = lm.readout(x, k=3, norm=False, target=np.int64(7))
    # logits: two tokens at 2, one at 1, V - 4 at 0 and one at -inf
    Z = 2 * np.e ** 2 + np.e + (V - 4)
    p2, p1, p0 = np.e ** 2 / Z, np.e / Z, 1 / Z
    assert set(r.top_ids[:2].tolist()) == {3, 5} and r.top_ids[2] == 7
    np.testing.assert_allclose(r.top_probs, [p2, p2, p1], rtol=1e-6)
    np.testing.assert_allclose(r.logsumexp, np.log(Z), rtol=1e-6)
    H = -(2 * p2 * np.log(p2) + p1 * np.log(p1) + (V - 4) * p0 * np.log(p0))
    np.testing.assert_allclose(r.entropy, H, rtol=1e-5)
    assert r.target_ranks == 3 and r.target_ids == 7 and r.target_probs == pytest.approx(p1, rel=1e-6)
    # tied tokens share the best rank; a 0-logit token is behind the three above it
    for t, rank, p in ((3, 1, p2), (5, 1, p2), (0, 4, p0), (9, V, 0.0)):
        got = lm.readout(x, norm=False, target=t)
        assert got.target_ranks == rank and got.target_probs == pytest.approx(p, rel=1e-6, abs=0)
    assert lm.readout(x, norm=False, target=9).target_logits == -np.inf
    assert r.top_tokens.tolist() == lm.token_str(r.top_ids) and r.target_tokens.item() == lm.token_str([7])[0]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_readout_chunked_equals_unchunked(arch, monkeypatch):
    lm = tiny_model(arch)  # own instance: its final norm is wrapped to count rows per chunk
    x = torch.randn(37, lm.d_model, generator=torch.Generator().manual_seed(3))
    per = np.arange(37) * 7 % lm.vocab_size
    whole = lm.readout(x, k=5, target=per, chunk_rows=10**6)
    rows = []
    real = lm.apply_final_norm
    monkeypatch.setattr(lm, "apply_final_norm", lambda v: rows.append(len(v)) or real(v))
    budget = 4 * lm.vocab_size * 8  # two float32 (rows, vocab) buffers of 4 rows
    for kw, size in ((dict(max_bytes=1), 1), (dict(max_bytes=budget), 4), (dict(chunk_rows=10), 10)):
        rows.clear()
        part = lm.readout(x, k=5, target=per, **kw)
        assert max(rows) == size and sum(rows) == 37
        np.testing.assert_array_equal(part.top_ids, whole.top_ids)
        np.testing.assert_array_equal(part.target_ranks, whole.target_ranks)
        for name in ("top_probs", "top_logits", "entropy", "logsumexp", "target_probs", "target_logits"):
            np.testing.assert_allclose(getattr(part, name), getattr(whole, name), rtol=1e-6, atol=1e-7)
    rows.clear()
    lm.readout(x, k=5)
    assert rows == [37]  # 37 rows fit in the default budget: one chunk
    # targets mostly inside the top-k (ranked from it), a few far below (counted over the vocabulary)
    logits = lm.unembed(x).float()
    near = whole.top_ids[:, 3].copy()
    near[[2, 11, 30]] = logits.argsort(-1)[[2, 11, 30], 5].numpy()  # 6th lowest: rank ~ vocab - 5
    for kw in (dict(chunk_rows=10**6), dict(chunk_rows=4), dict(max_bytes=1)):
        r = lm.readout(x, k=5, target=near, **kw)
        np.testing.assert_array_equal(r.target_ranks, ranks_of(logits, near))
    assert set(r.target_ranks.tolist()) >= {4, lm.vocab_size - 5}


def test_readout_low_precision_model():
    lm = tiny_model("llama")
    lm.model.to(torch.bfloat16)
    x = torch.randn(6, lm.d_model, generator=torch.Generator().manual_seed(4))
    logits = lm.unembed(x).float()  # bfloat16 logits, read in float32
    lp = torch.log_softmax(logits.double(), -1)
    r = lm.readout(x, k=3, target=11)
    np.testing.assert_allclose(r.top_logits, logits.topk(3, -1).values.numpy())
    np.testing.assert_allclose(r.entropy, (-(lp.exp() * lp).sum(-1)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r.target_ranks, ranks_of(logits, np.full(6, 11)))


def test_readout_errors(tiny):
    lm = tiny("gpt2")
    x = torch.randn(2, lm.d_model)
    with pytest.raises(ValueError, match="vocabulary size"):
        lm.readout(x, k=lm.vocab_size + 1)
    assert lm.readout(x, k=lm.vocab_size).top_ids.shape == (2, lm.vocab_size)
    with pytest.raises(ValueError, match="k must be >= 1"):
        lm.readout(x, k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        lm.readout(x, k=2.0)
    with pytest.raises(ValueError, match="d_model"):
        lm.readout(torch.randn(2, lm.d_model + 1))
    with pytest.raises(TypeError, match="target must be"):
        lm.readout(x, target=True)
    with pytest.raises(TypeError, match="target must be"):
        lm.readout(x, target=1.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.readout(x, target=lm.vocab_size)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.readout(x, target=[0, -1])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        lm.readout(x, target=[0, 1, 2])
    with pytest.raises(TypeError, match="integer token ids"):
        lm.readout(x, target=np.array([True, False]))
    with pytest.raises(TypeError, match="norm must be True or False"):
        lm.readout(x, norm="yes")
    with pytest.raises(ValueError, match="chunk_rows"):
        lm.readout(x, chunk_rows=0)
    with pytest.raises(Exception, match="encoder"):
        tiny("bert").readout(torch.randn(2, tiny("bert").d_model))
    assert lm.readout(torch.zeros(0, lm.d_model), k=3).top_ids.shape == (0, 3)


def test_check_target_one_parser(tiny):
    lm = tiny("gpt2")
    assert _checks.check_target(lm, None) is None
    assert _checks.check_target(lm, np.int32(5)) == 5
    word = " the"
    assert _checks.check_target(lm, word) == lm.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    with pytest.raises(ValueError, match=r"is \d+ tokens \[.*\], not one"):
        _checks.check_target(lm, " the cat sat on")
    with pytest.raises(TypeError, match="target must be"):
        _checks.check_target(lm, False)
    with pytest.raises(TypeError, match="target must be"):
        _checks.check_target(lm, [1, 2])  # per-row ids only where rows exist
    with pytest.raises(KeyError, match="outside the vocabulary"):
        _checks.check_target(lm, -1, error=KeyError)
    np.testing.assert_array_equal(_checks.check_target(lm, [[1, 2]], shape=(1, 2)), [[1, 2]])


@pytest.mark.parametrize("V", [49152, 50257, 3000, 700])
def test_blocked_topk_equals_torch_topk(V):
    """_topk_rows (k best blocks by their maxima, then top-k within them) == torch.topk, ties too."""
    from mri_widgets.models.loading import _topk_rows

    g = torch.Generator().manual_seed(V)
    for k in (1, 5, 20):
        L = torch.randn(9, V, generator=g)
        L[3] = 0.0  # all tied
        L[4, ::7] = 5.0  # many tied maxima across blocks
        L[5] = -float("inf")
        L[5, V - 1] = 1.0  # the only finite logit, past the last whole block
        L[6] = torch.randint(0, 3, (V,), generator=g).float()
        v, i = _topk_rows(L, k)
        ref_v, ref_i = torch.topk(L, k)
        assert torch.equal(v, ref_v)
        assert torch.equal(L.gather(1, i), v)  # indices point at those values ...
        assert all(len(set(row.tolist())) == k for row in i)  # ... without repeats
        rows = [0, 1, 2, 7, 8]  # no ties: the same indices
        assert torch.equal(i[rows], ref_i[rows])
        assert i[5, 0] == V - 1
