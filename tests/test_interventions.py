"""Interventions (ablate, patch, steer) and activation patching, against hand-written hooks on every family."""

import numpy as np
import pytest
import torch

import mri_widgets as mw
from conftest import ALL_TEXT, CAUSAL
from mri_widgets.models.interventions import InterventionError
from mri_widgets.analysis.patching import PatchingError
from mri_widgets.testing import SAMPLE_TEXTS

TEXT = "the cat sat on the mat and looked at the dog"
CORPUS = SAMPLE_TEXTS[:6]


def _out(lm, ids, mask=None):
    with torch.inference_mode():
        o = lm.model(input_ids=ids, attention_mask=mask)
    return (o.logits if hasattr(o, "logits") else o.last_hidden_state).float()


def _ids(lm, text=TEXT):
    return lm.tokenizer(text, return_tensors="pt")["input_ids"]


def _hand(module, fn, *, pre: bool):
    """A hand-written hook: fn(tensor) -> tensor on the module's input (pre) or output."""
    if pre:
        return module.register_forward_pre_hook(lambda m, args: (fn(args[0].clone()),) + tuple(args[1:]))

    def hook(m, args, out):
        if isinstance(out, tuple):
            return (fn(out[0].clone()),) + tuple(out[1:])
        return fn(out.clone())
    return module.register_forward_hook(hook)


def _all_hooks(model):
    from conftest import our_hooks
    return our_hooks(model)


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_head_ablation_equals_zeroing_its_slice_of_the_output_projection_input(tiny, arch):
    lm = tiny(arch)
    ids = _ids(lm)
    base = _out(lm, ids)
    with lm.intervene(ablate=("head", 1, 2)):
        got = _out(lm, ids)
    d = lm.d_head

    def zero(x):
        x[..., 2 * d:3 * d] = 0
        return x
    h = _hand(lm.adapter.part(1, "attn_out"), zero, pre=True)
    try:
        want = _out(lm, ids)
    finally:
        h.remove()
    assert (got - base).abs().max() > 1e-4  # the head matters
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(_out(lm, ids), base, rtol=0, atol=0)  # nothing left behind


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_mean_ablation_equals_replacing_with_the_mean_computed_by_hand(tiny, arch):
    lm = tiny(arch)
    # the mean of head 3's z slice at layer 2 over every real token of the corpus, by hand
    cap = lm.capture(CORPUS, sites=["z", "mlp"], layers=[2], progress=False)
    m = cap.mask
    z = cap["z"][:, 0, 3]  # (n, seq, dh)
    mean_z = (z * m[..., None]).sum((0, 1)) / m.sum()
    mlp = cap["mlp"][:, 0, :, 5]
    mean_n = float((mlp * m).sum() / m.sum())
    ids = _ids(lm)
    with lm.intervene(mw.Ablate(("head", 2, 3), mode="mean", corpus=CORPUS),
                      mw.Ablate(("neuron", 2, 5), mode="mean", corpus=CORPUS)):
        got = _out(lm, ids)
    d = lm.d_head

    def set_head(x):
        x[..., 3 * d:4 * d] = mean_z.to(x.dtype)
        return x

    def set_neuron(x):
        x[..., 5] = mean_n
        return x
    hs = [_hand(lm.adapter.part(2, "attn_out"), set_head, pre=True),
          _hand(lm.adapter.part(2, "mlp_out"), set_neuron, pre=True)]
    try:
        want = _out(lm, ids)
    finally:
        for h in hs:
            h.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the mean is cached on the model: a second use runs no capture
    key_count = len(lm._mean_cache)
    lm.mean_activations(CORPUS, "z", layers=[2])
    assert len(lm._mean_cache) == key_count


@pytest.mark.parametrize("arch", CAUSAL)
def test_patching_everything_gives_the_clean_logits_and_nothing_the_corrupted(tiny, arch):
    lm = tiny(arch)
    clean, corrupt = "the cat sat on the mat", "the dog ran to the car"
    ic, ix = _ids(lm, clean), _ids(lm, corrupt)
    assert ic.shape == ix.shape
    want_clean, want_corrupt = _out(lm, ic), _out(lm, ix)
    with lm.intervene(mw.Patch("resid", source=clean)):  # every position of every layer
        got = _out(lm, ix)
    torch.testing.assert_close(got, want_clean, rtol=1e-5, atol=1e-5)
    with lm.intervene(mw.Patch("resid", source=corrupt)):  # patching the run with itself changes nothing
        got = _out(lm, ix)
    torch.testing.assert_close(got, want_corrupt, rtol=1e-5, atol=1e-5)
    # the embeddings, every head's z and every MLP neuron also rebuild the clean run ...
    with lm.intervene(mw.Patch("resid", source=clean, layers=[0]), mw.Patch("z", source=clean),
                      mw.Patch("mlp", source=clean)):
        got = _out(lm, ix)
    torch.testing.assert_close(got, want_clean, rtol=1e-4, atol=1e-4)
    # ... but not without the embeddings: the residual stream still carries the corrupted tokens
    with lm.intervene(mw.Patch("z", source=clean), mw.Patch("mlp", source=clean)):
        got = _out(lm, ix)
    assert (got - want_clean).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ALL_TEXT)
def test_steering_with_a_zero_vector_changes_nothing_and_a_vector_adds_where_asked(tiny, arch):
    lm = tiny(arch)
    ids = _ids(lm)
    base = _out(lm, ids)
    with lm.intervene(mw.Steer("resid", torch.zeros(lm.d_model), layers=[1, 2])):
        torch.testing.assert_close(_out(lm, ids), base, rtol=0, atol=0)
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    with lm.intervene(mw.Steer("resid", v, alpha=3.0, layers=[2], positions=[1, -1])):
        got = _out(lm, ids)

    def add(x):
        x[:, [1, x.shape[1] - 1]] += 3.0 * v
        return x
    h = _hand(lm.adapter.blocks[1], add, pre=False)  # resid layer 2 = block 1's output
    try:
        want = _out(lm, ids)
    finally:
        h.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - base).abs().max() > 1e-3


def test_steering_vector_from_two_text_sets_is_the_difference_of_means(tiny):
    lm = tiny("gpt2")
    pos, neg = SAMPLE_TEXTS[:3], SAMPLE_TEXTS[3:6]
    mp = lm.mean_activations(pos, "resid", layers=[2])[0]
    mn = lm.mean_activations(neg, "resid", layers=[2])[0]
    ids = _ids(lm)
    with lm.intervene(mw.Steer("resid", layers=[2], positive=pos, negative=neg, alpha=2.0)):
        got = _out(lm, ids)
    with lm.intervene(mw.Steer("resid", 2.0 * (mp - mn), layers=[2])):
        want = _out(lm, ids)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padded_batches_resolve_positions_per_text(tiny, arch):
    """Negative positions count from each text's own end, and padding is never touched."""
    lm = tiny(arch)
    texts = ["a short one", "a somewhat longer text with more tokens in it"]
    steer = mw.Steer("resid", torch.ones(lm.d_model), alpha=0.5, layers=[1], positions=[-1, 0])
    with lm.intervene(steer):
        both = lm.capture(texts, sites=["resid"], batch_size=2, progress=False)
        alone = [lm.capture([t], sites=["resid"], progress=False) for t in texts]
    for i, a in enumerate(alone):
        n = int(a.mask[0].sum())
        torch.testing.assert_close(both["resid"][i, :, :n], a["resid"][0, :, :n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_interventions_apply_during_generation_with_the_kv_cache(tiny, arch):
    """Greedy generation with the cache under an intervention at fixed positions equals a loop of
    full forward passes (no cache) under the same intervention: positions keep counting from the prompt."""
    lm = tiny(arch)
    ids = _ids(lm, "the cat sat")
    n = ids.shape[1]
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1)) * 4
    ivs = [mw.Steer("resid", v, layers=[1], positions=[1, n + 1]), mw.Ablate(("head", 0, 1))]
    with lm.intervene(ivs):
        with torch.inference_mode():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                    pad_token_id=lm.tokenizer.pad_token_id)
        seq = ids
        for _ in range(5):
            nxt = _out(lm, seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert out.tolist() == seq.tolist()
    with torch.inference_mode():
        plain = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                  pad_token_id=lm.tokenizer.pad_token_id)
    assert _all_hooks(lm.model) == 0
    assert plain.shape == out.shape


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_capture_and_lens_inside_intervene_see_the_modified_run(tiny, arch):
    lm = tiny(arch)
    with lm.intervene(ablate=("head", 1, 0)):
        cap = lm.capture([TEXT], sites=["z", "head_out"], progress=False)
        lens = mw.logit_lens(lm, TEXT)
    assert float(cap["z"][0, 1, 0].abs().max()) == 0.0
    assert float(cap["head_out"][0, 1, 0].abs().max()) == 0.0
    assert float(cap["z"][0, 1, 1].abs().max()) > 0
    plain = mw.logit_lens(lm, TEXT)
    assert not np.allclose(lens.top_probs, plain.top_probs)
    # the lens's last layer inside the block is the modified model's own output distribution
    with lm.intervene(ablate=("head", 1, 0)):
        p = torch.softmax(_out(lm, _ids(lm))[0], -1)
    np.testing.assert_allclose(lens.top_probs[-1, :, 0], p.max(-1).values.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_hooks_are_removed_on_exceptions_and_interrupts(tiny, exc):
    lm = tiny("llama")
    before = _all_hooks(lm.model)
    with pytest.raises(exc):
        with lm.intervene(mw.Steer("resid", torch.ones(lm.d_model), layers="1-2"), ablate=[("head", 0, 0),
                                                                                            ("neuron", 1, 3)]):
            assert _all_hooks(lm.model) > before
            _out(lm, _ids(lm))
            raise exc("stop")
    assert _all_hooks(lm.model) == before


def test_a_failing_edit_inside_the_forward_pass_leaves_no_hooks(tiny):
    lm = tiny("gpt2")
    with pytest.raises(InterventionError, match="same token count"):
        with lm.intervene(mw.Patch("resid", source="a b", layers=[1])):
            _out(lm, _ids(lm))
    assert _all_hooks(lm.model) == 0


def test_patch_positions_map_negative_indices_to_each_texts_end(tiny):
    lm = tiny("gpt2")
    src, run = "the dog ran", "the cat sat on the mat"
    cs = lm.capture([src], sites=["resid"], layers=[2], progress=False)["resid"][0, 0]
    with lm.intervene(mw.Patch("resid", source=src, layers=[2], positions=[-1, 0])):
        got = lm.capture([run], sites=["resid"], layers=[2], progress=False)["resid"][0, 0]
    torch.testing.assert_close(got[-1], cs[cs.shape[0] - 1])
    torch.testing.assert_close(got[0], cs[0])
    plain = lm.capture([run], sites=["resid"], layers=[2], progress=False)["resid"][0, 0]
    torch.testing.assert_close(got[1:-1], plain[1:-1])


@pytest.mark.parametrize("bad,match", [
    (lambda: mw.Ablate(("head", 0, 99)), "head 99 is out of range"),
    (lambda: mw.Ablate(("neuron", 7, 0)), "layer 7 is out of range"),
    (lambda: mw.Ablate("attn"), "cannot be written"),
    (lambda: mw.Ablate("head"), "given as a tuple"),
    (lambda: mw.Ablate(("head", 0, 0), mode="mean"), "needs corpus="),
    (lambda: mw.Ablate(("head", 0, 0), mode="one"), "mode must be one of"),
    (lambda: mw.Steer("resid", torch.ones(3), layers=[1]), r"shape \(3,\)"),
    (lambda: mw.Steer("resid", torch.full((32,), float("nan")), layers=[1]), "NaN"),
    (lambda: mw.Steer("resid"), "needs vector="),
    (lambda: mw.Patch("resid"), "needs source="),
    (lambda: mw.Steer("resid", torch.ones(32), positions=[]), "positions is empty"),
    (lambda: "not an intervention", "not an intervention"),
])
def test_bad_interventions_get_clear_errors_and_leave_no_hooks(tiny, bad, match):
    lm = tiny("gpt2")
    with pytest.raises(InterventionError, match=match):
        with lm.intervene(bad()):
            pass
    assert _all_hooks(lm.model) == 0


# ---------------------------------------------------------------------------------- patching


@pytest.mark.parametrize("arch", CAUSAL)
def test_patching_corners_equal_the_clean_and_corrupted_metrics(tiny, arch):
    lm = tiny(arch)
    clean, corrupt = "the cat sat on the mat", "the dog ran to the car"
    res = mw.patching(lm, clean, corrupt, metric="logit_diff", answer=5, wrong=7)
    n = len(res.corrupt_tokens)
    assert res.shape == (lm.n_layers + 1, n)
    lc = _out(lm, _ids(lm, clean))[0, -1]
    lx = _out(lm, _ids(lm, corrupt))[0, -1]
    assert res.clean_metric == pytest.approx(float(lc[5] - lc[7]), rel=1e-5, abs=1e-5)
    assert res.corrupt_metric == pytest.approx(float(lx[5] - lx[7]), rel=1e-5, abs=1e-5)
    # the last layer at the last position restores the clean metric; the embeddings of a token the
    # two prompts share restore nothing
    assert res.effect[-1, -1] == pytest.approx(1.0, abs=1e-4)
    same = [p for p in range(n) if res.clean_tokens[p] == res.corrupt_tokens[p]]
    assert same and np.allclose(res.effect[0, same], 0.0, atol=1e-4)
    # every entry equals one hand-written patched run (brute force on a few entries)
    cap = lm.capture([clean], sites=["resid"], progress=False)["resid"][0]
    for layer, pos in [(1, 2), (2, 0), (lm.n_layers, 3)]:
        def put(x, pos=pos, layer=layer):
            x[:, pos] = cap[layer, pos]
            return x
        h = _hand(lm.adapter.blocks[layer - 1], put, pre=False)
        try:
            lp = _out(lm, _ids(lm, corrupt))[0, -1]
        finally:
            h.remove()
        assert res.raw[layer, pos] == pytest.approx(float(lp[5] - lp[7]), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_patching_per_head_matches_patching_each_heads_z_by_hand(tiny, arch):
    lm = tiny(arch)
    clean, corrupt = "the cat sat on the mat", "the dog ran to the car"
    res = mw.patching(lm, clean, corrupt, site="z", metric="prob", answer=11, batch_size=3)
    assert res.kind == "head" and res.shape == (lm.n_layers, lm.n_heads)
    for layer, head in [(0, 1), (2, 3)]:
        with lm.intervene(mw.Patch(("head", layer, head), source=clean)):
            p = torch.softmax(_out(lm, _ids(lm, corrupt))[0, -1], -1)[11]
        assert res.raw[layer, head] == pytest.approx(float(p), rel=1e-4, abs=1e-6)
    # batches of 3 and one batch give the same table
    one = mw.patching(lm, clean, corrupt, site="z", metric="prob", answer=11)
    np.testing.assert_allclose(res.raw, one.raw, rtol=1e-5, atol=1e-7)


def test_patching_checks_its_input(tiny):
    lm = tiny("gpt2")
    with pytest.raises(PatchingError, match="same token count"):
        mw.patching(lm, "the cat sat", "the cat sat on the mat")
    with pytest.raises(PatchingError, match="site must be one of"):
        mw.patching(lm, "the cat", "the dog", site="attn")
    with pytest.raises(PatchingError, match="metric must be one of"):
        mw.patching(lm, "the cat", "the dog", metric="kl")
    with pytest.raises(PatchingError, match="same token"):
        mw.patching(lm, "the cat", "the dog", answer=3, wrong=3)
    with pytest.raises(PatchingError, match="encoder"):
        mw.patching(tiny("bert"), "the cat", "the dog")
    with pytest.raises(PatchingError, match="position must be"):
        mw.patching(lm, "the cat", "the dog", answer=3, wrong=4, positions=[9])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_analysis_runs_modified_inside_intervene(tiny, arch):
    """flow_graph, NeuronScan.run and head_distances read through the engine, so they see the interventions."""
    lm = tiny(arch)
    texts = SAMPLE_TEXTS[:4]
    steer = mw.Steer("resid", torch.ones(lm.d_model) * 3, layers=[1])
    plain_scan = mw.NeuronScan.run(lm, texts, k=3, progress=False)
    plain_D = mw.head_distances(lm, texts)
    with lm.intervene(steer):
        scan = mw.NeuronScan.run(lm, texts, k=3, progress=False)
        D = mw.head_distances(lm, texts)
        cap = lm.capture(texts, sites=["mlp"], progress=False)
    # the scan under the steer equals the activations captured under the same steer
    mlp = cap["mlp"].masked_fill(~cap.mask[:, None, :, None], float("-inf"))
    want = mlp.amax(dim=(0, 2))  # (layers, d_mlp): each neuron's largest activation
    got = torch.as_tensor(scan.top_values[:, :, 0])
    torch.testing.assert_close(got.float(), want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(scan.top_values, plain_scan.top_values)
    # block 0's heads read the unmodified embeddings; later blocks read the steered residual stream
    assert not np.allclose(D, plain_D)
    if arch == "llama":
        G_plain = mw.flow_graph(lm, TEXT, layers=[2])
        with lm.intervene(steer):
            G = mw.flow_graph(lm, TEXT, layers=[2])
        a = G.nodes["L2/block_in"]["vector"]
        b = G_plain.nodes["L2/block_in"]["vector"]
        assert not np.allclose(a, b)


def test_patching_table_from_a_model_runs_patching(tiny):
    lm = tiny("llama")
    clean, corrupt = "the cat sat on the mat", "the dog ran to the car"
    w = mw.PatchingTable(lm, clean, corrupt, answer=5, wrong=7, site="attn_out")
    want = mw.patching(lm, clean, corrupt, answer=5, wrong=7, site="attn_out")
    np.testing.assert_allclose(w.result.effect, want.effect, rtol=1e-5, atol=1e-6)
    assert w.result.layer_names == [str(l) for l in range(lm.n_layers)]


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo", "llama"])
def test_patching_with_the_prefix_cache_equals_whole_prompt_batches(tiny, arch, monkeypatch):
    from mri_widgets.analysis import patching as P

    lm = tiny(arch)
    clean, corrupt = "the cat sat on the mat", "the dog ran to the car"
    cached = mw.patching(lm, clean, corrupt, site="mlp_out", metric="logit", answer=9)
    monkeypatch.setattr(P, "_prefix_cache_ok", lambda lm: False)
    whole = mw.patching(lm, clean, corrupt, site="mlp_out", metric="logit", answer=9, batch_size=7)
    np.testing.assert_allclose(cached.raw, whole.raw, rtol=1e-4, atol=1e-5)
