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
    for b, seq, real, cost, _ in shapes:
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
