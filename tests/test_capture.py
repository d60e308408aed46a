"""Hooked capture on every adapter, checked against the model's own outputs."""

import numpy as np
import pytest
import torch

from conftest import ALL_TEXT, CAUSAL
from mri_widgets.models.capture import CaptureError
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
