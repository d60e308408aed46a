"""Bring your own model or arrays: wrappers unwrapped by mw.load, arrays-only constructors, to_pandas.

The wrapper tests use stand-ins shaped like nnsight's LanguageModel and TransformerLens's
TransformerBridge (which wraps the transformers modules in place); the real packages are checked
too where they are installed (``pip install mri_widgets[byo]``), and skipped elsewhere.
"""

import copy
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import mri_widgets as mw
from mri_widgets.models.byo import UnsupportedModel, unwrap
from mri_widgets.models.capture import SITES
from mri_widgets.testing import tiny_model

TEXTS = ["the cat sat on the mat", "a dog ran"]


def _sites(lm):
    return [s for s in SITES if lm.gated or s not in ("mlp_gate", "mlp_up", "mlp_act")]


def _assert_same_capture(a, b, sites):
    ca, cb = a.capture(TEXTS, sites), b.capture(TEXTS, sites)
    for s in sites:
        torch.testing.assert_close(cb[s], ca[s], atol=1e-5, rtol=1e-5, msg=lambda m, s=s: f"site {s}: {m}")


# ---- stand-ins ---------------------------------------------------------------------------------
class LanguageModel:  # like nnsight's: not a torch module, the model in _module
    def __init__(self, module, tokenizer):
        self.__dict__["_module"] = module
        self.__dict__["tokenizer"] = tokenizer

    def __getattr__(self, name):  # nnsight's Envoy forwards to its module
        return getattr(self.__dict__["_module"], name)


class _Component(nn.Module):  # like a TransformerLens bridge component
    def __init__(self, original):
        super().__init__()
        self.add_module("_original_component", original)
        self.hook_in = nn.Identity()
        self.hook_out = nn.Identity()

    def forward(self, *args, **kwargs):
        out = self._original_component(*args, **kwargs)
        return out


class TransformerBridge(nn.Module):
    def __init__(self, model, tokenizer):
        super().__init__()
        self.__dict__["original_model"] = model
        self.tokenizer = tokenizer
        # wrap in place, as the bridge does: blocks, and inside them attention and MLP
        blocks = model.transformer.h
        for i, blk in enumerate(list(blocks)):
            blk.attn = _Component(blk.attn)
            blk.mlp = _Component(blk.mlp)
            blocks[i] = _Component(blk)
        model.transformer.ln_f = _Component(model.transformer.ln_f)

    def forward(self, input_ids):
        return self.original_model(input_ids=input_ids).logits


class HookedTransformer(nn.Module):
    pass


# ---- wrappers ----------------------------------------------------------------------------------
def test_nnsight_like_model_is_unwrapped():
    lm = tiny_model("gpt2")
    wrapped = LanguageModel(lm.model, lm.tokenizer)
    got = mw.load(wrapped)
    assert got.model is lm.model and got.tokenizer is lm.tokenizer
    _assert_same_capture(lm, got, _sites(lm))


def test_bridge_like_model_is_unwrapped_and_keeps_working():
    lm = tiny_model("gpt2")
    bridge = TransformerBridge(copy.deepcopy(lm.model), lm.tokenizer)
    inner = bridge.original_model
    ids = torch.tensor([[5, 6, 7, 8]])
    before = bridge(ids)
    got = mw.load(bridge)
    assert got.tokenizer is lm.tokenizer
    assert type(got.model.transformer.h[0]).__name__ == "GPT2Block"
    assert type(got.model.transformer.h[0].attn).__name__ == "GPT2Attention"
    # the bridge is left wrapped and gives the same logits
    assert isinstance(inner.transformer.h[0], _Component) and isinstance(inner.transformer.ln_f, _Component)
    torch.testing.assert_close(bridge(ids), before)
    # the view shares the parameters
    assert got.model.transformer.h[1].attn.c_proj.weight is inner.transformer.h[1]._original_component.attn \
        ._original_component.c_proj.weight
    _assert_same_capture(lm, got, _sites(lm))
    assert torch.equal(got.W_O(2), lm.W_O(2))


def test_explicit_tokenizer_wins_over_the_wrappers():
    lm = tiny_model("gpt2")
    other = copy.deepcopy(lm.tokenizer)
    model, tok = unwrap(LanguageModel(lm.model, lm.tokenizer), other)
    assert model is lm.model and tok is other


def test_hooked_transformer_is_refused_with_what_to_pass():
    with pytest.raises(UnsupportedModel, match="TransformerBridge"):
        mw.load(HookedTransformer(), object())


def test_plain_models_pass_through_unwrap():
    lm = tiny_model("gpt2")
    assert unwrap(lm.model, lm.tokenizer) == (lm.model, lm.tokenizer)


# ---- the real packages, where installed ----------------------------------------------------------
def test_real_nnsight_language_model():
    nnsight = pytest.importorskip("nnsight")
    lm = tiny_model("gpt2")
    wrapped = nnsight.LanguageModel(lm.model, tokenizer=lm.tokenizer)
    got = mw.load(wrapped)
    assert got.model is lm.model
    _assert_same_capture(lm, got, _sites(lm))
    with wrapped.trace("the cat sat"):  # nnsight still works afterwards
        h = wrapped.transformer.h[0].output.save()
    assert h is not None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_real_transformer_bridge(arch, tmp_path):
    pytest.importorskip("transformer_lens")
    from transformer_lens.model_bridge import TransformerBridge as RealBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = tiny_model(arch)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    bridge = RealBridge.boot_transformers(str(tmp_path), hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(tmp_path))
    got = mw.load(bridge, lm.tokenizer)
    _assert_same_capture(lm, got, _sites(lm))
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(bridge(ids), lm.model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---- arrays-only constructors ------------------------------------------------------------------
def test_lens_table_from_arrays_hand_computed():
    from mri_widgets.analysis.lens import LensError

    tokens = ["The", " cat"]
    top_tokens = [[[" a", " b"], [" x", " y"]], [[" b", " a"], [" sat", " x"]], [[" b", " c"], [" sat", " ran"]]]
    top_probs = [[[0.5, 0.25], [0.6, 0.1]], [[0.7, 0.2], [0.5, 0.3]], [[0.9, 0.05], [0.8, 0.1]]]
    table = mw.LensTable.from_arrays(tokens, top_tokens, top_probs)
    r = table.result
    assert r.tokens == tokens and r.k == 2 and r.n_layers == 3 and r.n_positions == 2
    assert r.layer_names == ["emb", "1", "2"]
    assert r.target_tokens == [" b", " sat"]  # last layer's top-1
    # " b": layer 0 rank 1 (p .25), layer 1 rank 0 (p .7), layer 2 rank 0 (.9); " sat": absent at layer 0
    np.testing.assert_allclose(r.target_probs, [[0.25, 0.0], [0.7, 0.5], [0.9, 0.8]], rtol=1e-6)
    assert r.target_ranks.tolist() == [[1, 2], [0, 0], [0, 0]]
    np.testing.assert_allclose(r.entropy[0, 0], -(0.5 * np.log(0.5) + 0.25 * np.log(0.25)), rtol=1e-6)
    assert r.top(2, 1) == [(" sat", pytest.approx(0.8)), (" ran", pytest.approx(0.1))]
    # top_ids tell tokens apart consistently
    assert r.top_ids[1, 0, 1] == r.top_ids[0, 0, 0] and r.top_ids[0, 0, 0] != r.top_ids[0, 0, 1]
    # an explicit target and entropy
    r2 = mw.LensResult.from_arrays(tokens, top_tokens, top_probs, target_tokens=[" a", " x"],
                                   entropy=np.ones((3, 2)), layer_names=["in", "b1", "b2"])
    assert r2.target_ranks.tolist() == [[0, 0], [1, 1], [2, 2]] and r2.layer_names == ["in", "b1", "b2"]
    assert np.all(r2.entropy == 1)
    with pytest.raises(LensError, match="top_probs has shape"):
        mw.LensTable.from_arrays(tokens, top_tokens, np.ones((3, 2, 3)) / 3)
    with pytest.raises(LensError, match="tokens has 3 entries"):
        mw.LensTable.from_arrays(tokens + ["!"], top_tokens, top_probs)
    with pytest.raises(LensError, match="descending"):
        mw.LensTable.from_arrays(tokens, top_tokens, np.asarray(top_probs)[..., ::-1])
    with pytest.raises(LensError, match="probabilities"):
        mw.LensTable.from_arrays(tokens, top_tokens, np.asarray(top_probs) * 3)
    with pytest.raises(LensError, match=r"entropy must have shape"):
        mw.LensResult.from_arrays(tokens, top_tokens, top_probs, entropy=np.ones(2))


def test_lens_from_arrays_round_trips_a_real_lens():
    lm = tiny_model("gpt2")
    r = mw.logit_lens(lm, "the cat sat on", k=4)
    b = mw.LensResult.from_arrays(r.tokens, r.top_tokens, r.top_probs, entropy=r.entropy,
                                  target_tokens=r.target_tokens)
    np.testing.assert_allclose(b.target_probs, np.where(r.target_ranks < 4, r.target_probs, 0), rtol=1e-6)
    assert (b.target_ranks == np.minimum(r.target_ranks, 4)).all()
    assert (b.best_layer == r.best_layer).all()


# ---- tidy outputs ------------------------------------------------------------------------------
def test_lens_to_pandas_one_row_per_cell_and_rank():
    lm = tiny_model("gpt2")
    r = mw.logit_lens(lm, "the cat sat on", k=3)
    df = r.to_pandas()
    L, S, k = r.top_ids.shape
    assert len(df) == L * S * k
    row = df[(df.layer == 2) & (df.position == 1) & (df["rank"] == 2)].iloc[0]
    assert row.top_id == r.top_ids[2, 1, 2] and row.top_token == r.top_tokens[2, 1, 2]
    assert row.top_prob == pytest.approx(float(r.top_probs[2, 1, 2]))
    assert row.target_prob == pytest.approx(float(r.target_probs[2, 1]))
    assert row.layer_name == r.layer_names[2] and row.token == r.tokens[1]


def test_neuron_scan_to_pandas_matches_top_and_bottom():
    from mri_widgets.analysis.neurons import NeuronScan
    from mri_widgets.testing import SAMPLE_TEXTS

    lm = tiny_model("gpt2")
    scan = NeuronScan.run(lm, SAMPLE_TEXTS[:6], k=3, progress=False)
    df = scan.to_pandas(1)
    for n in (0, 5, lm.d_mlp - 1):
        for side, fn in (("top", scan.top), ("bottom", scan.bottom)):
            sub = df[(df.neuron == n) & (df.list == side)].sort_values("rank")
            assert list(zip(sub.value, sub.text_index, sub.position)) == [tuple(x) for x in fn(1, n)]
            assert (sub.text == [SAMPLE_TEXTS[i] for i in sub.text_index]).all()
            assert sub["mean"].iloc[0] == pytest.approx(scan.stats(1, n)["mean"])
    with pytest.raises(Exception, match="not scanned"):
        scan.to_pandas(7)


@pytest.mark.parametrize("site", ["resid", "z"])
def test_patching_to_pandas_one_row_per_cell(site):
    lm = tiny_model("gpt2")
    ids = lm.tokenizer("the cat sat on the")["input_ids"]
    clean = "the cat sat on the"
    corrupt = "the dog sat on the"
    res = mw.patching(lm, clean, corrupt, site=site, metric="logit", answer=int(ids[1]))
    df = res.to_pandas()
    R, C = res.effect.shape
    assert len(df) == R * C
    for r, c in [(0, 0), (R - 1, C - 1), (R // 2, C // 2)]:
        row = df[(df.layer == res.layers[r]) & (df.column == c)].iloc[0]
        assert row.effect == pytest.approx(float(res.effect[r, c]), nan_ok=True)
        assert row.raw == pytest.approx(float(res.raw[r, c]))
        assert row.column_label == res.columns[c] and row.layer_name == res.layer_names[r]
        if res.kind == "head":
            assert row["head"] == c and row["position"] == -1
        else:
            assert row["position"] == res.positions[c] and row["head"] == -1


def test_layer_grid_from_counts_matches_the_model_path():
    from mri_widgets.analysis.areas import ActivationAreas
    from mri_widgets.datasets import emotions

    corpus = emotions()[::20]
    areas = ActivationAreas(tiny_model("gpt2"), corpus, grid=4, layers=[0, 2, 3], progress=False)
    real = mw.LayerGrid(areas, mode="all")
    mine = mw.LayerGrid.from_counts(areas.region_ids.T, corpus.labels, grid=4, layer_names=areas.layers,
                                    label_names=corpus.label_names, texts=corpus.texts, layer_ids=areas.layer_ids,
                                    mode="all")
    a, b = real.data, mine.data
    assert a.keys() == b.keys()
    for key in a:
        if key != "title":
            np.testing.assert_array_equal(np.asarray(b[key]), np.asarray(a[key]), err_msg=key)
    np.testing.assert_array_equal(mine.counts, areas.counts())
    for layer, region in ((2, int(areas.region_ids[1, 0])), (3, int(areas.region_ids[2, 5]))):
        ra, rb = real.region_members(layer, region), mine.region_members(layer, region)
        np.testing.assert_array_equal(rb["docs"], ra["docs"])
        for x, y in zip(ra["regions"], rb["regions"]):
            np.testing.assert_array_equal(y, x)
        # examples: the region's documents (corpus order without coordinates)
        assert {e["text"] for e in mine.region_examples(layer, region, 100)} == \
            {e["text"] for e in real.region_examples(layer, region, 100)}


def test_layer_grid_from_counts_hand_computed_and_errors():
    regions = np.array([[0, 3], [0, 2], [1, 3]])  # 3 docs, 2 layers, grid 2
    g = mw.LayerGrid.from_counts(regions, ["a", "b", "a"], grid=2)
    assert g.layer_names == ["layer 0", "layer 1"] and g.label_names == ["a", "b"] and g.label_totals == [2, 1]
    c = g.counts  # (layers, labels, grid, grid); region = row * grid + col
    assert c[0, 0].tolist() == [[1, 1], [0, 0]] and c[0, 1].tolist() == [[1, 0], [0, 0]]
    assert c[1, 0].tolist() == [[0, 0], [0, 2]] and c[1, 1].tolist() == [[0, 0], [1, 0]]
    assert g.title == "regions \u00b7 3 documents" and g.region_members(0, 0)["docs"].tolist() == [0, 1]
    assert g.region_examples(1, 3) == [{"text": "document 0", "label": "a"}, {"text": "document 2", "label": "a"}]
    with pytest.raises(ValueError, match=r"expected \(n_docs, n_layers\)"):
        mw.LayerGrid.from_counts(np.zeros(3, int), ["a", "b", "a"], grid=2)
    with pytest.raises(ValueError, match="one label per document"):
        mw.LayerGrid.from_counts(regions, ["a", "b"], grid=2)
    with pytest.raises(ValueError, match=r"region ids must be in 0\.\.3"):
        mw.LayerGrid.from_counts(regions + 2, ["a", "b", "a"], grid=2)
    with pytest.raises(ValueError, match="layer_names must be 2 names"):
        mw.LayerGrid.from_counts(regions, ["a", "b", "a"], grid=2, layer_names=["x"])
    with pytest.raises(ValueError, match="integers"):
        mw.LayerGrid.from_counts(regions + 0.5, ["a", "b", "a"], grid=2)
    with pytest.raises(ValueError, match="from_pooled"):
        g.areas.save("/nonexistent.npz")


def test_head_map_from_distances_matches_the_model_path():
    lm = tiny_model("gpt2")
    texts = ["the cat sat on the mat", "a dog ran home"]
    real = mw.HeadMap(lm, texts)
    D = mw.head_distances(lm, texts)
    st = real.stats
    mine = mw.HeadMap.from_distances(D, n_layers=st.n_layers, n_heads=st.n_heads, scores=st.scores,
                                     model_name=real.model_name)
    a, b = real.data, mine.data
    np.testing.assert_allclose(b["x"], a["x"], atol=1e-5)
    np.testing.assert_allclose(b["y"], a["y"], atol=1e-5)
    for key in ("layer", "head", "score_names", "score_help", "n_layers", "n_heads", "model_name"):
        assert np.asarray(b[key]).tolist() == np.asarray(a[key]).tolist(), key
    for k, v in a["scores"].items():
        np.testing.assert_array_equal(b["scores"][k], v)
    assert b["examples"] == [] and b["n_examples"] == 0
    # no model: the pattern panel gets a clear note, selection still works
    with pytest.raises(ValueError, match=r"HeadMap\(model, texts\)"):
        mine.pattern(1, 0)
    mine.picked = [[1, 1], [0, 0]]
    assert mine.picked_heads() == [(0, 0), (1, 1)]
    # without scores: coloured by layer only
    bare = mw.HeadMap.from_distances(D, n_layers=st.n_layers, n_heads=st.n_heads)
    assert bare.score_names == [] and bare.scores == {}
    np.testing.assert_allclose(bare.x, real.x, atol=1e-5)


def test_head_map_from_distances_errors():
    D = np.array([[0.0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])
    hm = mw.HeadMap.from_distances(D, n_layers=2, n_heads=2)
    # four points on a line, squared distances 0..3 -> MDS of sqrt: a 1-D configuration is recovered
    x = np.asarray(hm.x, dtype=float)
    assert np.all(np.diff(x) > 0) or np.all(np.diff(x) < 0)
    with pytest.raises(ValueError, match=r"expected \(6, 6\)"):
        mw.HeadMap.from_distances(D, n_layers=2, n_heads=3)
    with pytest.raises(ValueError, match="not symmetric"):
        mw.HeadMap.from_distances(np.triu(D), n_layers=2, n_heads=2)
    with pytest.raises(ValueError, match="negative"):
        mw.HeadMap.from_distances(-D, n_layers=2, n_heads=2)
    with pytest.raises(ValueError, match="NaN"):
        mw.HeadMap.from_distances(D * np.nan, n_layers=2, n_heads=2)
    with pytest.raises(ValueError, match="exactly the keys"):
        mw.HeadMap.from_distances(D, n_layers=2, n_heads=2, scores={"entropy": np.zeros((2, 2))})
    from mri_widgets.analysis.heads import SCORE_NAMES
    with pytest.raises(ValueError, match=r"expected \(n_layers, n_heads\) = \(2, 2\)"):
        mw.HeadMap.from_distances(D, n_layers=2, n_heads=2, scores={k: np.zeros(4) for k in SCORE_NAMES})


def test_neuron_viewer_from_examples_matches_the_model_path():
    from mri_widgets.analysis.neurons import NeuronScan
    from mri_widgets.testing import SAMPLE_TEXTS

    lm = tiny_model("gpt2")
    scan = NeuronScan.run(lm, SAMPLE_TEXTS[:6], k=3, layers=[0, 1], progress=False)
    real = mw.NeuronViewer(scan, lm)
    top, bottom = {}, {}
    for l, n in ((0, 2), (1, 5), (1, 0)):
        ex = real.examples(l, n)
        top[(l, n)] = [(e["tokens"], e["acts"]["mlp"]) for e in ex["top"]]
        bottom[(l, n)] = [(e["tokens"], e["acts"]["mlp"]) for e in ex["bottom"]]
    mine = mw.NeuronViewer.from_examples(top, bottom, d_mlp=lm.d_mlp, model_name="x", layer=1, neuron=5)
    # one text: the given examples are all the scanned tokens, so the statistics match the scan's
    one = NeuronScan.run(lm, SAMPLE_TEXTS[:1], k=1, layers=[1], progress=False)
    one_real = mw.NeuronViewer(one, lm, layer=1, neuron=3)
    e = one_real.examples(1, 3)["top"][0]
    one_mine = mw.NeuronViewer.from_examples({(1, 3): [(e["tokens"], e["acts"]["mlp"])]}, layer=1, neuron=3)
    np.testing.assert_array_equal(one_mine.hist, one_real.hist)
    for key in ("max", "min", "mean", "freq_positive"):
        assert one_mine.stats[key] == pytest.approx(one_real.stats[key], rel=1e-5, abs=1e-6), key
    assert mine.layers == [0, 1] and mine.d_mlp == lm.d_mlp and not mine.has_model and mine.has_texts
    assert "given examples" in mine.note and mine.effect is None and "needs a model" in mine.effect_note
    for l, n in top:
        mine.go(l, n)
        real.go(l, n)
        ra, rb = real.examples(l, n), mine.examples(l, n)
        for side in ("top", "bottom"):
            a, b = getattr(real, side), getattr(mine, side)
            assert [x["position"] for x in b] == [x["position"] for x in a]
            np.testing.assert_allclose([x["value"] for x in b], [x["value"] for x in a], rtol=1e-5, atol=1e-5)
            assert [x["tokens"] for x in rb[side]] == [x["tokens"] for x in ra[side]]
            for x, y in zip(ra[side], rb[side]):
                np.testing.assert_array_equal(y["acts"]["mlp"], x["acts"]["mlp"])
            assert [mine.scan.texts[x["text"]] for x in b] == ["".join(x["tokens"]) for x in ra[side]]
        # statistics of the given examples' tokens
        toks = {ti: a for ex in (top[(l, n)], bottom[(l, n)]) for ti, a in ((tuple(t), tuple(a)) for t, a in ex)}
        x = np.concatenate([np.asarray(a, np.float64) for a in toks.values()])
        assert mine.stats["max"] == pytest.approx(x.max()) and mine.stats["min"] == pytest.approx(x.min())
        assert mine.stats["mean"] == pytest.approx(x.mean()) and mine.stats["freq_positive"] == pytest.approx((x > 0).mean())
        assert mine.hist.sum() == len(x)


def test_neuron_viewer_from_examples_hand_computed_and_errors():
    top = [[(["a", " b"], [0.5, 2.0]), (["c"], [3.0])], []]  # layer 0: neuron 0 has two texts, neuron 1 none
    v = mw.NeuronViewer.from_examples(top)
    assert v.d_mlp == 2 and v.layers == [0]
    assert [(x["value"], x["position"]) for x in v.top] == [(3.0, 0), (2.0, 1)]  # strongest first
    assert [v.scan.texts[x["text"]] for x in v.top] == ["c", "a b"]
    assert v.stats["mean"] == pytest.approx(5.5 / 3) and v.stats["freq_positive"] == 1.0
    edges = np.array(v.hist_edges)
    assert v.hist[np.searchsorted(edges, 2.0, side="right")] == 2 and v.hist.sum() == 3  # 2 and 3: one octave
    w = mw.NeuronViewer.from_examples([[(["a", "b", "c"], [-2.0, -1.5, 0.0])]])
    c = len(w.hist) // 2
    # magnitude octaves as the scan bins them: |-1.5| in [1, 2) is octave 0, |-2| in [2, 4) octave 1
    assert w.hist[c] == 1 and w.hist[c - 11] == 1 and w.hist[c - 12] == 1
    v.go(0, 1)
    assert v.top == [] and v.stats["max"] is None
    from mri_widgets.widgets.neuron_viewer import NeuronViewerError

    with pytest.raises(NeuronViewerError, match="one activation per token"):
        mw.NeuronViewer.from_examples([[(["a", "b"], [1.0])]])
    with pytest.raises(NeuronViewerError, match="list of str"):
        mw.NeuronViewer.from_examples([[("ab", [1.0, 2.0])]])
    with pytest.raises(NeuronViewerError, match=r"\(layer, neuron\) pairs"):
        mw.NeuronViewer.from_examples({3: [(["a"], [1.0])]})
    with pytest.raises(NeuronViewerError, match="d_mlp must be an int >= 2"):
        mw.NeuronViewer.from_examples(top, d_mlp=1)
    with pytest.raises(NeuronViewerError, match="no examples"):
        mw.NeuronViewer.from_examples({})
    with pytest.raises(NeuronViewerError, match="NaN"):
        mw.NeuronViewer.from_examples([[(["a"], [np.nan])]])
