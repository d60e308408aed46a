"""Hooked capture on every adapter, checked against the model's own outputs."""

import functools

import numpy as np
import pytest
import torch

from conftest import ALL_TEXT, CAUSAL
from mri_widgets.models.capture import SITES, CaptureError
from mri_widgets.testing import SAMPLE_TEXTS

TEXTS = SAMPLE_TEXTS[:5]


def _single(lm, text, sites):
    return lm.capture([text], sites=sites, progress=False)


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_shapes_and_mask(tiny, arch):
    lm = tiny(arch)
    sites = ["resid", "mlp", "attn", "head_out"] + (["mlp_gate", "mlp_up", "mlp_act"] if lm.gated else [])
    cap = lm.capture(TEXTS, sites=sites, batch_size=2, progress=False)
    n, L, H, d = len(TEXTS), lm.n_layers, lm.n_heads, lm.d_model
    seq = cap.mask.shape[1]
    assert cap["resid"].shape == (n, L + 1, seq, d)
    assert cap["mlp"].shape == (n, L, seq, lm.d_mlp)
    assert cap["attn"].shape == (n, L, H, seq, seq)
    assert cap["head_out"].shape == (n, L, H, seq, d)
    lengths = [len(lm.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert cap.mask.sum(1).tolist() == lengths
    assert [len(t) for t in cap.tokens] == lengths
    for i, n_tok in enumerate(lengths):  # real tokens first, padding zeroed
        assert cap.mask[i, :n_tok].all() and not cap.mask[i, n_tok:].any()
        assert torch.all(cap["resid"][i, :, n_tok:] == 0)
    # attention rows of real tokens are distributions over real keys
    rows = cap["attn"][0, :, :, : lengths[0], : lengths[0]].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


@pytest.mark.parametrize("arch", ALL_TEXT)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_single_either_padding_side(tiny, arch, side):
    lm = tiny(arch)
    old = lm.tokenizer.padding_side
    lm.tokenizer.padding_side = side
    try:
        sites = ["resid", "mlp", "head_out"]
        cap = lm.capture(TEXTS, sites=sites, batch_size=3, progress=False)
        for i, text in enumerate(TEXTS):
            one = _single(lm, text, sites)
            n_tok = int(one.mask.sum())
            for s in sites:
                a = cap[s][i][..., :n_tok, :] if s != "head_out" else cap[s][i][:, :, :n_tok]
                b = one[s][0][..., :n_tok, :] if s != "head_out" else one[s][0][:, :, :n_tok]
                assert torch.allclose(a, b, atol=1e-4), (arch, side, s, i)
    finally:
        lm.tokenizer.padding_side = old


@pytest.mark.parametrize("arch", CAUSAL)
def test_last_resid_unembedded_equals_logits(tiny, arch):
    lm = tiny(arch)
    cap = lm.capture(TEXTS[:2], sites=["resid"], progress=False)
    for i, text in enumerate(TEXTS[:2]):
        enc = lm.encode(text)
        with torch.no_grad():
            logits = lm.model(**enc).logits[0]
        n = logits.shape[0]
        ours = lm.unembed(cap["resid"][i, -1, :n])
        assert torch.allclose(ours, logits, atol=1e-4)


@pytest.mark.parametrize("arch", CAUSAL + ("bert",))
def test_head_out_sums_to_attention_output(tiny, arch):
    """Head contributions plus the output bias equal the attention output projection's output."""
    lm = tiny(arch)
    got = {}
    mod = lm.adapter.part(1, "attn_out")
    h = mod.register_forward_hook(lambda m, i, o: got.setdefault("out", o))
    try:
        cap = lm.capture([TEXTS[0]], sites=["head_out"], progress=False)
    finally:
        h.remove()
    bias = mod.bias if getattr(mod, "bias", None) is not None else 0
    total = cap["head_out"][0, 1].sum(0) + bias
    assert torch.allclose(total, got["out"][0], atol=1e-5)


def test_gated_channels_consistent(tiny):
    lm = tiny("llama")
    cap = lm.capture(TEXTS[:2], sites=["mlp", "mlp_gate", "mlp_up", "mlp_act"], progress=False)
    assert torch.allclose(cap["mlp_act"], torch.nn.functional.silu(cap["mlp_gate"]), atol=1e-6)
    assert torch.allclose(cap["mlp"], cap["mlp_act"] * cap["mlp_up"], atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_reducer_equals_materialised(tiny, arch):
    lm = tiny(arch)
    full = lm.capture(TEXTS, sites=["resid", "mlp"], batch_size=2, progress=False)
    sums = {"resid": [], "mlp": []}
    starts = []

    def reducer(batch):
        starts.append(batch.start)
        m = batch.mask[:, None, :, None].float()
        for s in sums:
            sums[s].append(((batch.acts[s].float() * m).sum(2) / m.sum(2)).cpu())

    assert lm.capture(TEXTS, sites=["resid", "mlp"], batch_size=2, reducer=reducer, progress=False) is None
    assert starts == [0, 2, 4]
    for s in sums:
        m = full.mask[:, None, :, None].float()
        expected = (full[s] * m).sum(2) / m.sum(2)
        assert torch.allclose(torch.cat(sums[s]), expected, atol=1e-5)


def test_layer_subset(tiny):
    lm = tiny("gpt2")
    full = lm.capture(TEXTS[:2], sites=["resid", "mlp"], progress=False)
    sub = lm.capture(TEXTS[:2], sites=["resid", "mlp"], layers=[0, 2], progress=False)
    assert torch.equal(sub["resid"], full["resid"][:, [0, 2]])
    assert torch.equal(sub["mlp"], full["mlp"][:, [0, 2]])
    assert sub.layers["mlp"] == [0, 2]


@pytest.mark.parametrize("bad,err", [
    ([], "empty"), (["ok", 3], "not a string"), (["ok", "  "], "blank"), (None, "None"),
])
def test_bad_texts(tiny, bad, err):
    with pytest.raises(CaptureError, match=err):
        tiny("gpt2").capture(bad, progress=False)


def test_bad_sites_and_layers(tiny):
    lm = tiny("gpt2")
    with pytest.raises(CaptureError, match="unknown site 'resdi'"):
        lm.capture(["a b"], sites=["resdi"])
    with pytest.raises(CaptureError, match="only for gated"):
        lm.capture(["a b"], sites=["mlp_gate"])
    with pytest.raises(IndexError, match="out of range"):
        lm.capture(["a b"], sites=["mlp"], layers=[7])
    with pytest.raises(IndexError, match="out of range"):
        lm.capture(["a b"], sites=["resid"], layers=[lm.n_layers + 1])


def test_too_long_text_needs_max_length(tiny):
    lm = tiny("gpt2")
    long = "the cat sat " * 400
    with pytest.raises(CaptureError, match="max_length"):
        lm.capture([long], progress=False)
    cap = lm.capture([long], max_length=32, progress=False)
    assert cap.mask.sum() == 32


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_capture_inputs_equals_capture(tiny, arch):
    lm = tiny(arch)
    a = lm.capture([TEXTS[0]], sites=["resid", "mlp", "attn"], progress=False)
    b = lm.capture_inputs(lm.encode(TEXTS[0]), sites=["resid", "mlp", "attn"])
    for s in ("resid", "mlp", "attn"):
        assert torch.allclose(a[s], b[s], atol=1e-6)
    assert a.tokens == b.tokens


def test_capture_inputs_with_image(tiny):
    lm = tiny("llava")
    img = (np.random.default_rng(1).random((30, 30, 3)) * 255).astype("uint8")
    enc = lm.encode("What is this?", image=img)
    cap = lm.capture_inputs(enc, sites=["resid"])
    n = enc["input_ids"].shape[1]
    assert cap["resid"].shape == (1, lm.n_layers + 1, n, lm.d_model)
    with torch.no_grad():
        logits = lm.model(**enc).logits[0]
    assert torch.allclose(lm.unembed(cap["resid"][0, -1]), logits, atol=1e-4)
    with pytest.raises(CaptureError, match="input_ids"):
        lm.capture_inputs({"pixel_values": enc["pixel_values"]})


# ---- the engine's sites: residual stages, per-head q/k/v/z, and the adapters' attention weights ---------

ALL_SITES = ("resid", "attn_in", "q", "k", "v", "attn", "z", "head_out", "attn_out", "resid_mid", "mlp_in", "mlp",
             "mlp_out")


@functools.lru_cache(maxsize=None)
def _all_sites(arch):
    from mri_widgets.testing import tiny_model
    lm = tiny_model(arch)
    return lm, lm.capture(TEXTS, sites=ALL_SITES, batch_size=2, progress=False)


def _stack(lm, name):
    return torch.stack([getattr(lm, name)(l).detach().float() for l in range(lm.n_layers)])


def _real(cap, t, per_head):
    """``t`` with padded positions set to 0 (as the engine does)."""
    m = cap.mask[:, None, None, :, None] if per_head else cap.mask[:, None, :, None]
    return t.masked_fill(~m, 0)


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_every_site_shape_and_padding(arch):
    lm, cap = _all_sites(arch)
    n, L, H, d, dh = len(TEXTS), lm.n_layers, lm.n_heads, lm.d_model, lm.d_head
    seq = cap.mask.shape[1]
    for s in ("attn_in", "attn_out", "resid_mid", "mlp_in", "mlp_out"):
        assert cap[s].shape == (n, L, seq, d), s
    for s in ("q", "k", "v", "z"):
        assert cap[s].shape == (n, L, H, seq, dh), s
    lengths = cap.mask.sum(1).tolist()
    for i, n_tok in enumerate(lengths):
        for s in ALL_SITES:
            t = cap[s][i]
            pad = t[..., n_tok:, :] if s in ("q", "k", "v", "z", "head_out", "attn") else t[:, n_tok:]
            assert torch.all(pad == 0), (s, i)
            assert t.abs().sum() > 0, (s, i)
    assert set(SITES) >= set(ALL_SITES) and all(isinstance(v, str) and "(b, " in v for v in SITES.values())


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_residual_stages_add_up(arch):
    """Sequential: resid + attn_out = resid_mid, resid_mid + mlp_out = next resid; parallel: resid +
    attn_out + mlp_out = next resid and resid_mid is the block input; BERT: the LayerNorms of the sums."""
    lm, cap = _all_sites(arch)
    R, A, M, mid = cap["resid"], cap["attn_out"], cap["mlp_out"], cap["resid_mid"]
    spec = lm.adapter.spec
    if spec.parallel:
        torch.testing.assert_close(_real(cap, R[:, :-1] + A + M, False), R[:, 1:], atol=1e-5, rtol=0)
        assert torch.equal(mid, R[:, :-1])
    elif spec.post_norm:  # BERT: resid_mid = LN(resid + attn_out), next resid = LN(resid_mid + mlp_out)
        for l in range(lm.n_layers):
            block = lm.adapter.blocks[l]
            with torch.inference_mode():
                a = block.attention.output.LayerNorm(R[:, l] + A[:, l])
                b = block.output.LayerNorm(mid[:, l] + M[:, l])
            torch.testing.assert_close(_real(cap, a[:, None], False)[:, 0], mid[:, l], atol=1e-5, rtol=0)
            torch.testing.assert_close(_real(cap, b[:, None], False)[:, 0], R[:, l + 1], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(_real(cap, R[:, :-1] + A, False), mid, atol=1e-5, rtol=0)
        torch.testing.assert_close(_real(cap, mid + M, False), R[:, 1:], atol=1e-5, rtol=0)
    # the norms: attn_in = ln_attn(resid), mlp_in = ln_mlp(resid_mid) (GPT-J: its MLP reads ln_1's output)
    for l in range(lm.n_layers):
        with torch.inference_mode():
            if spec.ln_attn is not None:
                x = lm.adapter.part(l, "ln_attn")(R[:, l])
                torch.testing.assert_close(_real(cap, x[:, None], False)[:, 0], cap["attn_in"][:, l], atol=1e-6, rtol=0)
            else:
                assert torch.equal(cap["attn_in"][:, l], R[:, l])
            if spec.ln_mlp is not None:
                y = lm.adapter.part(l, "ln_mlp")(mid[:, l])
                torch.testing.assert_close(_real(cap, y[:, None], False)[:, 0], cap["mlp_in"][:, l], atol=1e-6, rtol=0)
            elif spec.parallel:
                assert torch.equal(cap["mlp_in"][:, l], cap["attn_in"][:, l])
            else:
                assert torch.equal(cap["mlp_in"][:, l], mid[:, l])


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_heads_z_head_out_and_W_O(arch):
    """z = attn @ v; sum_h z[h] @ W_O[h] + b_O = attn_out; sum over heads of head_out = attn_out - b_O."""
    lm, cap = _all_sites(arch)
    z = cap["z"]
    torch.testing.assert_close(z, cap["attn"] @ cap["v"], atol=1e-6, rtol=0)
    b_O = _stack(lm, "b_O")[None, :, None]
    out = torch.einsum("blhsd,lhdm->blsm", z, _stack(lm, "W_O")) + b_O
    torch.testing.assert_close(_real(cap, out, False), cap["attn_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(_real(cap, cap["head_out"].sum(2) + b_O, False), cap["attn_out"], atol=1e-5, rtol=0)
    assert lm.W_O(0).shape == (lm.n_heads, lm.d_head, lm.d_model) and lm.b_O(0).shape == (lm.d_model,)


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_q_k_v_are_the_named_projections_of_attn_in(arch):
    """v = attn_in @ W_V + b_V everywhere; q and k likewise at position 0, where rotary is the
    identity, and at every position for models without rotary embeddings."""
    lm, cap = _all_sites(arch)
    x = cap["attn_in"]
    for s, W, b in (("q", "W_Q", "b_Q"), ("k", "W_K", "b_K"), ("v", "W_V", "b_V")):
        want = _real(cap, torch.einsum("blsm,lhmd->blhsd", x, _stack(lm, W)) + _stack(lm, b)[None, :, :, None], True)
        assert _stack(lm, W).shape == (lm.n_layers, lm.n_heads, lm.d_model, lm.d_head)
        if s == "v" or lm.adapter.rotary_dim is None:
            torch.testing.assert_close(want, cap[s], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(want[..., 0, :], cap[s][..., 0, :], atol=1e-5, rtol=0)
            assert (want[..., 1:, :] - cap[s][..., 1:, :]).abs().max() > 1e-3  # rotated elsewhere


def _scores_match(lm, cap, window=None):
    """softmax(q k^T * scale + mask) against the model's own attention probabilities."""
    q, k, att = cap["q"], cap["k"], cap["attn"]
    seq = q.shape[3]
    i = torch.arange(seq)
    allowed = cap.mask[:, None, None, None, :].expand(-1, lm.n_layers, lm.n_heads, seq, seq).clone()
    if not lm.is_encoder:
        allowed &= i[None, :] <= i[:, None]
    if window is not None:
        for l, w in window.items():
            allowed[:, l] &= (i[:, None] - i[None, :]) < w
    scale = 1.0 if lm.arch == "gpt_neo" else lm.d_head ** -0.5  # GPT-Neo does not scale its scores
    p = torch.softmax((q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf")), -1)
    real = cap.mask[:, None, None, :, None]
    torch.testing.assert_close(torch.where(real, p, 0), torch.where(real, att, 0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_queries_and_keys_reproduce_the_attention(arch):
    """With rotary applied (NeoX partial rotary, GPT-J rotate_every_two, Llama grouped-query)."""
    lm, cap = _all_sites(arch)
    window = {1: lm.model.config.window_size} if arch == "gpt_neo" else None  # layer 1 is local
    _scores_match(lm, cap, window)


def _literal_qkv(lm, layer):
    """Query/key/value weights and biases as (n * d_head, d_model) read from the module attributes."""
    attn = lm.adapter.part(layer, "attn")
    H, dh, d = lm.n_heads, lm.d_head, lm.d_model
    if lm.arch == "gpt2":
        W, b = attn.c_attn.weight.t(), attn.c_attn.bias
        return W[:d], b[:d], W[d:2 * d], b[d:2 * d], W[2 * d:], b[2 * d:]
    if lm.arch == "gpt_neox":
        W = attn.query_key_value.weight.reshape(H, 3, dh, d)
        b = attn.query_key_value.bias.reshape(H, 3, dh)
        return (W[:, 0].reshape(-1, d), b[:, 0].reshape(-1), W[:, 1].reshape(-1, d), b[:, 1].reshape(-1),
                W[:, 2].reshape(-1, d), b[:, 2].reshape(-1))
    mod = {"gpt_neo": lambda: attn.attention, "bert": lambda: attn.self}.get(lm.arch, lambda: attn)()
    names = {"bert": ("query", "key", "value"), "distilbert": ("q_lin", "k_lin", "v_lin")}.get(
        lm.arch, ("q_proj", "k_proj", "v_proj"))
    out = []
    for proj in (getattr(mod, n) for n in names):
        out += [proj.weight, proj.bias if proj.bias is not None else torch.zeros(proj.weight.shape[0])]
    return out


def _distilbert():
    import transformers as T

    from mri_widgets.models.loading import LoadedModel
    from mri_widgets.testing import tiny_tokenizer
    tok = tiny_tokenizer("bert")
    torch.manual_seed(0)
    cfg = T.DistilBertConfig(n_layers=2, dim=32, n_heads=4, hidden_dim=64, vocab_size=len(tok),
                             max_position_embeddings=64)
    return LoadedModel(T.DistilBertModel(cfg), tok)


@pytest.mark.parametrize("arch", ALL_TEXT + ("distilbert",))
def test_named_weights_equal_the_module_weights(tiny, arch):
    lm = _distilbert() if arch == "distilbert" else tiny(arch)
    d, dh = lm.d_model, lm.d_head
    rep = lm.n_heads // lm.n_kv_heads
    for layer in (0, lm.n_layers - 1):
        Wq, bq, Wk, bk, Wv, bv = (t.detach().float() for t in _literal_qkv(lm, layer))
        for W, b, want_W, want_b, r in ((lm.W_Q, lm.b_Q, Wq, bq, 1), (lm.W_K, lm.b_K, Wk, bk, rep),
                                        (lm.W_V, lm.b_V, Wv, bv, rep)):
            got_W, got_b = W(layer)[::r], b(layer)[::r]  # one query head per key/value head
            torch.testing.assert_close(got_W.transpose(1, 2).reshape(-1, d), want_W, atol=0, rtol=0)
            torch.testing.assert_close(got_b.reshape(-1), want_b, atol=0, rtol=0)
            if r > 1:  # grouped-query attention: query heads of one group share their key/value head
                assert torch.equal(W(layer)[0], W(layer)[1]) and not torch.equal(W(layer)[0], W(layer)[rep])
    if arch == "llama":
        assert (lm.n_heads, lm.n_kv_heads) == (4, 2)
    assert lm.adapter.rotary_dim == {"gpt_neox": dh // 2, "gptj": 4, "llama": dh}.get(arch)
    if arch == "distilbert":  # an encoder outside the tiny set: its heads still reproduce its attention
        cap = lm.capture(TEXTS[:3], sites=("q", "k", "v", "attn", "z", "attn_out"), progress=False)
        _scores_match(lm, cap)
        out = torch.einsum("blhsd,lhdm->blsm", cap["z"], _stack(lm, "W_O")) + _stack(lm, "b_O")[None, :, None]
        torch.testing.assert_close(_real(cap, out, False), cap["attn_out"], atol=1e-5, rtol=0)


def test_normalised_queries_and_keys_qwen3():
    """Qwen3 normalises each head's queries and keys before rotary: the sites hold the normed, rotated ones."""
    import transformers as T

    from mri_widgets.models.loading import LoadedModel
    from mri_widgets.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    cfg = T.Qwen3Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                        intermediate_size=64, head_dim=8, vocab_size=len(tok), max_position_embeddings=64)
    torch.manual_seed(0)
    lm = LoadedModel(T.AutoModelForCausalLM.from_config(cfg), tok)
    assert lm.adapter.qk_normed(0) and not _all_sites("llama")[0].adapter.qk_normed(0)
    cap = lm.capture(TEXTS[:3], sites=("q", "k", "v", "attn", "z"), progress=False)
    _scores_match(lm, cap)
    torch.testing.assert_close(cap["z"], cap["attn"] @ cap["v"], atol=1e-6, rtol=0)


def test_per_site_layers_and_only_requested_hooks(tiny):
    from mri_widgets.models.capture import _install_hooks, normalise_layers
    lm = tiny("llama")
    full = _all_sites("llama")[1]
    cap = lm.capture(TEXTS, sites=("resid", "z", "attn"), layers={"resid": [0, 3], "z": [1]}, batch_size=2,
                     progress=False)
    assert cap.layers == {"resid": [0, 3], "z": [1], "attn": [0, 1, 2]}
    torch.testing.assert_close(cap["resid"], full["resid"][:, [0, 3]], atol=1e-6, rtol=0)
    torch.testing.assert_close(cap["z"], full["z"][:, [1]], atol=1e-6, rtol=0)
    with pytest.raises(CaptureError, match="not captured"):
        lm.capture(TEXTS, sites=("resid",), layers={"mlp": [1]})
    # resid + mlp: one hook per requested tensor, none on attention
    sites = ["resid", "mlp"]
    sel = normalise_layers(lm.adapter, sites, None)
    attn = [m for l in range(lm.n_layers) for m in lm.adapter.part(l, "attn").modules()]

    def hooks():  # transformers may keep hooks of its own there
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in attn)

    before = hooks()
    handles = _install_hooks(lm.adapter, sites, sel, {})
    try:
        assert len(handles) == (lm.n_layers + 1) + lm.n_layers
        assert hooks() == before
    finally:
        for h in handles:
            h.remove()


def test_qkv_need_named_projections(tiny):
    from mri_widgets import load
    lm = tiny("gpt2")
    paths = dict(blocks="transformer.h", embed="transformer.wte", final_norm="transformer.ln_f", attn="attn",
                 attn_out="attn.c_proj", mlp="mlp", mlp_out="mlp.c_proj", mlp_in="mlp.c_fc", ln_attn="ln_1",
                 ln_mlp="ln_2", conv1d=True)
    bare = load(lm.model, lm.tokenizer, module_paths=paths)
    assert bare.capture(TEXTS[:1], sites=("z", "attn_out"), progress=False)["z"].shape[2] == lm.n_heads
    with pytest.raises(ValueError, match="attn_q, attn_k and attn_v"):
        bare.capture(TEXTS[:1], sites=("q",), progress=False)
    with pytest.raises(ValueError, match="attn_q, attn_k and attn_v"):
        bare.W_Q(0)
    fused = load(lm.model, lm.tokenizer, module_paths={**paths, "attn_qkv": "attn.c_attn"})
    assert torch.equal(fused.W_K(1), lm.W_K(1))


# ---- batching by a token budget ------------------------------------------------------------------
# texts of very different lengths, in an order that sorting by length changes
MIXED = ["Hi.", SAMPLE_TEXTS[0] + " " + SAMPLE_TEXTS[1] + " " + SAMPLE_TEXTS[2], "The cat sat.",
         SAMPLE_TEXTS[3], "Ok", SAMPLE_TEXTS[4] + " " + SAMPLE_TEXTS[0], "A b c d e f g."]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_default_batching_restores_the_order_of_texts(tiny, arch, monkeypatch):
    import mri_widgets.models.capture as C

    lm = tiny(arch)
    lengths = [len(lm.tokenizer(t)["input_ids"]) for t in MIXED]
    assert max(lengths) > 5 * min(lengths)
    monkeypatch.setattr(C, "BATCH_TOKENS", 2 * max(lengths))  # several batches, texts regrouped by length
    sites = ["resid", "mlp", "attn"]
    seen = []
    lm.capture(MIXED, sites, progress=False, reducer=lambda b: seen.append((list(b.indices), b.tokens)))
    assert len(seen) > 1 and sorted(i for idx, _ in seen for i in idx) == list(range(len(MIXED)))
    assert [i for idx, _ in seen for i in idx] != list(range(len(MIXED)))  # really reordered
    for idx, toks in seen:  # each row's tokens are those of the text at its index
        assert toks == [lm.token_str(lm.tokenizer(MIXED[i])["input_ids"]) for i in idx]
    cap = lm.capture(MIXED, sites, progress=False)
    assert cap.mask.sum(1).tolist() == lengths and cap.texts == MIXED
    for i, text in enumerate(MIXED):
        one = _single(lm, text, sites)
        n = lengths[i]
        assert cap.tokens[i] == one.tokens[0]
        assert torch.equal(cap.input_ids[i, :n], one.input_ids[0, :n])
        assert not cap.mask[i, n:].any() and torch.all(cap["resid"][i, :, n:] == 0)
        for s in ("resid", "mlp"):
            assert torch.allclose(cap[s][i, :, :n], one[s][0, :, :n], atol=1e-4), (arch, s, i)
        assert torch.allclose(cap["attn"][i, :, :, :n, :n], one["attn"][0, :, :, :n, :n], atol=1e-5)


def test_reducer_rows_of_a_budget_batch_need_indices(tiny, monkeypatch):
    import mri_widgets.models.capture as C

    lm = tiny("gpt2")
    monkeypatch.setattr(C, "BATCH_TOKENS", 40)
    batches = []
    lm.capture(MIXED, ["resid"], progress=False, reducer=batches.append)
    mixed = [b for b in batches if b.indices != list(range(b.indices[0], b.indices[0] + len(b.indices)))]
    assert mixed, "expected a batch of non-consecutive texts"
    with pytest.raises(CaptureError, match="batch.indices"):
        _ = mixed[0].start
    # batch_size= keeps consecutive batches in the given order, where start still works
    starts = []
    lm.capture(MIXED, ["resid"], batch_size=3, progress=False, reducer=lambda b: starts.append((b.start, b.indices)))
    assert starts == [(0, [0, 1, 2]), (3, [3, 4, 5]), (6, [6])]


def test_plan_batches_hand_computed():
    from mri_widgets.models.capture import plan_batches

    lengths = [3, 10, 2, 10, 7, 1]
    # sorted longest first (ties in the given order): texts 1, 3, 4, 0, 2, 5 of 10, 10, 7, 3, 2, 1 tokens.
    # bytes: b * (n * per_token + n**2 * per_pair); 3 texts of 10 tokens cost 330 > 224; [4] costs
    # 56 >= 224 // 4, a quarter of the budget, so text 0 (3 < 7 * 7/8 tokens) starts a new batch
    assert plan_batches(lengths, max_tokens=10 ** 6, max_bytes=224,
                        bytes_per_token=1, bytes_per_pair=1) == [[1, 3], [4], [0, 2, 5]]
    # 20 tokens: [1, 3] is full; [4] holds 7 >= 20 // 4 tokens, so text 0 (3 < 7 * 7/8 tokens) starts
    # a new batch; [0, 2] holds 6 tokens and text 5 (1 token) is too short for it
    assert plan_batches(lengths, max_tokens=20) == [[1, 3], [4], [0, 2], [5]]
    assert plan_batches(lengths, max_tokens=5) == [[1], [3], [4], [0], [2], [5]]  # too long alone: own batch
    assert plan_batches([8, 8, 7, 8, 6], max_tokens=32) == [[0, 1, 3, 2], [4]]  # 7 >= 8 * 7/8 joins
    assert plan_batches(lengths, batch_size=4) == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.parametrize("sites", [["resid", "mlp"], ["attn"]])
def test_budget_batches_respect_the_budget_with_little_padding(tiny, monkeypatch, sites):
    import mri_widgets.models.capture as C

    lm = tiny("llama")
    texts = [" ".join(SAMPLE_TEXTS[i % 5].split()[: 2 + (7 * i) % 23]) for i in range(40)]
    per_tok, per_pair = C._token_bytes(lm.adapter, sites, C.normalise_layers(lm.adapter, sites, None))
    budget = 6 * 30 * per_tok + 6 * 30 ** 2 * per_pair
    monkeypatch.setattr(C, "BATCH_BYTES", budget)
    shapes = []

    def reducer(b):
        cost = sum(4 * a.numel() for a in b.acts.values())  # the captured float32 bytes of the batch
        shapes.append((b.size, b.mask.shape[1], int(b.mask.sum()), cost, list(b.indices)))

    lm.capture(texts, sites, progress=False, reducer=reducer)
    assert len(shapes) > 2
    assert sorted(i for *_, idx in shapes for i in idx) == list(range(len(texts)))
    for b, seq, _real, cost, _ in shapes:
        assert cost <= budget or b == 1
        assert b * seq <= C.BATCH_TOKENS
    padded, real = sum(b * seq for b, seq, *_ in shapes), sum(r for _, _, r, *_ in shapes)
    assert padded <= 1.3 * real  # sorted by length: little padding
    lengths = [len(lm.tokenizer(t)["input_ids"]) for t in texts]
    per = -(-len(texts) // len(shapes))  # as many batches of consecutive texts pad far more
    assert padded < 0.8 * sum(len(c) * max(lengths[i] for i in c) for c in C.plan_batches(lengths, batch_size=per))
    assert shapes[0][3] == max(s[3] for s in shapes)  # the largest batch first
    # batch_tokens= replaces the budget
    seen = []
    lm.capture(texts, ["resid"], progress=False, batch_tokens=64, reducer=lambda b: seen.append(b.mask.numel()))
    assert max(seen) <= 64 and len(seen) > len(shapes)
    with pytest.raises(CaptureError, match="batch_tokens"):
        lm.capture(texts, ["resid"], batch_tokens=0)
    with pytest.raises(CaptureError, match="batch_size"):
        lm.capture(texts, ["resid"], batch_size=0)


def test_captured_tensors_are_ordinary_tensors(tiny):
    """Users compute with captures outside inference mode (e.g. through the model's own norm)."""
    lm = tiny("llama")
    for batch_size in (None, 2):
        cap = lm.capture(TEXTS, sites=["resid", "mlp"], batch_size=batch_size, progress=False)
        assert not cap["resid"].is_inference() and not cap.mask.is_inference()
        y = lm.model.model.norm(cap["resid"][:, -1])  # raised "Inference tensors cannot be saved for backward"
        assert y.shape == cap["resid"][:, -1].shape
