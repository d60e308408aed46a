"""LensTable under interventions: the clean run beside the run under lm.intervene, against
mw.logit_lens run by hand and the model's own logits; logit_lens(target_ids=...)."""

import numpy as np
import pytest
import torch

import mri_widgets as mw
from conftest import FakeComm
from mri_widgets.analysis import lens as lens_mod
from mri_widgets.analysis.lens import LensError, logit_lens

TEXT = "the cat sat on the mat and looked at the dog"
FIELDS = ("top_ids", "top_probs", "entropy", "target_ids", "target_probs", "target_ranks")


def _same(a, b):
    """Two LensResults hold the same numbers."""
    assert list(a.tokens) == list(b.tokens)
    for f in FIELDS:
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-7, err_msg=f)


def _heads(lm, layer):
    return [("head", layer, h) for h in range(lm.n_heads)]


def _steer(lm, alpha=30.0, layer=1):
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    return mw.Steer("resid", vector=v, alpha=alpha, layers=[layer])


def _model_probs(lm, text, interventions=None):
    """(seq, vocab) output probabilities from the model's own forward pass."""
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with (lm.intervene(interventions) if interventions else torch.inference_mode()), torch.inference_mode():
        return torch.softmax(lm.model(input_ids=ids).logits[0].double(), -1)


# ---------------------------------------------------------------------------------- logit_lens


def test_target_ids_track_given_tokens_per_position(tiny):
    lm = tiny("gpt2")
    own = logit_lens(lm, TEXT, k=3)
    same = logit_lens(lm, TEXT, k=3, target_ids=own.target_ids)
    _same(own, same)
    S = len(own.tokens)
    ids = (np.arange(S) * 7) % lm.vocab_size
    res = logit_lens(lm, TEXT, k=3, target_ids=ids)
    np.testing.assert_array_equal(res.target_ids, ids)
    # brute force: full softmax of every state, the given token's probability and rank (0 = top)
    cap = lm.capture([TEXT], sites=["resid"], progress=False)
    p = torch.softmax(lm.unembed(cap["resid"][0]).double(), -1)[:, :S]
    want = p[:, torch.arange(S), torch.as_tensor(ids)]
    np.testing.assert_allclose(res.target_probs, want.numpy(), rtol=1e-4, atol=1e-7)
    ranks = (p > want[..., None]).sum(-1).numpy()
    np.testing.assert_array_equal(res.target_ranks, ranks)
    # -1 and a short list: those positions track their own prediction; extra ids are not used
    mixed = logit_lens(lm, TEXT, k=3, target_ids=[5, -1, 9])
    np.testing.assert_array_equal(mixed.target_ids, [5, own.target_ids[1], 9, *own.target_ids[3:]])
    np.testing.assert_allclose(mixed.target_probs[:, 3:], own.target_probs[:, 3:], rtol=1e-5)
    longer = logit_lens(lm, TEXT, k=3, target_ids=list(ids) + [1, 2, 3])
    np.testing.assert_array_equal(longer.target_ids, ids)


def test_target_ids_bad_input(tiny):
    lm = tiny("gpt2")
    with pytest.raises(LensError, match="not both"):
        logit_lens(lm, TEXT, target=" the", target_ids=[1, 2])
    with pytest.raises(LensError, match="outside the vocabulary"):
        logit_lens(lm, TEXT, target_ids=[1, lm.vocab_size])
    with pytest.raises(LensError, match="outside the vocabulary"):
        logit_lens(lm, TEXT, target_ids=[-2])
    with pytest.raises(TypeError, match="1-D sequence of integer"):
        logit_lens(lm, TEXT, target_ids=[[1, 2]])
    with pytest.raises(TypeError, match="sequence of token ids"):
        logit_lens(lm, TEXT, target_ids=3)


# ---------------------------------------------------------------------------------- LensTable


def test_lens_table_under_interventions_equals_the_lens_run_by_hand(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions(model=lm)
    w = mw.LensTable(lm, TEXT, k=4, interventions=iv)
    clean = logit_lens(lm, TEXT, k=4)
    _same(w.result, clean)
    assert w.result is w.clean_result and w.diff is None
    assert not w.has_clean and w.comparison == {}
    assert w.cell_details([[0, 0]])["clean_prob"] is None
    with pytest.raises(LensError, match="none are enabled"):
        w.metric = "diff"

    heads = _heads(lm, 2)
    for t in heads:
        iv.ablate(t)
    with lm.intervene(ablate=heads):
        by_hand = logit_lens(lm, TEXT, k=4, target_ids=clean.target_ids)
    _same(w.clean_result, clean)
    _same(w.result, by_hand)
    # both runs track the clean run's own final prediction at every position
    np.testing.assert_array_equal(w.result.target_ids, clean.target_ids)
    # the last layer under the ablation is the model's own output under it
    p = _model_probs(lm, TEXT, [mw.Ablate(t) for t in heads])
    S = len(clean.tokens)
    want = p[torch.arange(S), torch.as_tensor(clean.target_ids)].numpy()
    np.testing.assert_allclose(w.result.target_probs[-1], want, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(w.result.top_ids[-1, :, 0], p.argmax(-1).numpy())
    assert not np.allclose(w.result.target_probs, clean.target_probs, atol=1e-6)  # the ablation changed it
    # what the view gets: the intervened arrays in the table's traits, the clean target beside them
    assert w.has_clean
    L = len(w.layer_names)
    d = w.cell_details([[l, p] for l in range(L) for p in range(S)])
    np.testing.assert_array_equal(d["target_prob"], by_hand.target_probs.astype(np.float32).reshape(-1))
    np.testing.assert_array_equal(d["clean_prob"], clean.target_probs.astype(np.float32).reshape(-1))
    np.testing.assert_array_equal(d["clean_rank"], clean.target_ranks.reshape(-1))
    # the diff is intervened - clean, cell by cell
    np.testing.assert_array_equal(w.diff, by_hand.target_probs.astype(np.float32) - clean.target_probs)
    assert w.diff.shape == (lm.n_layers + 1, S)
    w.metric = "diff"  # the view gets the diff as the metric's values
    assert w.values_metric == "diff"
    np.testing.assert_array_equal(w.values, w.diff)


def test_comparison_panel_numbers_follow_the_selected_position(tiny):
    lm = tiny("llama")
    iv = mw.Interventions(model=lm)
    w = mw.LensTable(lm, TEXT, interventions=iv)
    steer = iv.add(_steer(lm))
    c = w.comparison
    S = len(w.result.tokens)
    clean = w.clean_result
    assert c["position"] == S - 1 and c["token"] == w.result.tokens[-1] and c["rank_base"] == 0
    assert c["interventions"] == [steer.label] and c["layer"] == str(lm.n_layers)
    pc, pv = _model_probs(lm, TEXT), _model_probs(lm, TEXT, [steer])

    def check(pos):
        c = w.comparison
        tid = int(clean.target_ids[pos])
        assert c["position"] == pos and c["target_id"] == tid and c["target"] == lm.token_str([tid])[0]
        for run, p in (("clean", pc), ("intervened", pv)):
            q = p[pos]
            assert c[run]["prob"] == pytest.approx(float(q[tid]), rel=1e-4, abs=1e-8)
            assert c[run]["rank"] == int((q > q[tid]).sum())  # 0 = top, as in the table
            assert c[run]["prediction_id"] == int(q.argmax())
            assert c[run]["prediction_prob"] == pytest.approx(float(q.max()), rel=1e-4)
        # the same numbers as the arrays the table shows (last layer)
        assert c["intervened"]["prob"] == float(w.result.target_probs[-1, pos])
        assert c["clean"]["rank"] == int(w.cell_details([[len(w.layer_names) - 1, pos]])["clean_rank"][0])

    check(S - 1)
    assert w.comparison["clean"]["rank"] == 0  # the clean run's own prediction
    assert w.comparison["intervened"]["rank"] > 0  # the big steer moved it
    w.selection.update(position=2, layer=1)
    check(2)
    w.selection.position = 99  # not a position of this table: back to the last
    check(S - 1)


def test_version_recomputes_the_intervened_run_only_and_toggling_off_returns_to_clean(tiny, monkeypatch):
    lm = tiny("gpt2")
    iv = mw.Interventions(model=lm)
    w = mw.LensTable(lm, TEXT, interventions=iv)
    calls = []
    real = lens_mod.logit_lens

    def counting(*a, **kw):
        calls.append(kw.get("target_ids") is not None)
        return real(*a, **kw)

    monkeypatch.setattr("mri_widgets.widgets.lens_table.logit_lens", counting)
    clean = w.clean_result
    iv.ablate(("head", 1, 0))
    first = w.result
    iv.add(_steer(lm))  # a new version: recomputed under both
    assert w.result is not first and w.clean_result is clean
    assert calls == [True, True]  # only the intervened run, tracking the clean targets
    with lm.intervene(iv):
        _same(w.result, real(lm, TEXT, 5, target_ids=clean.target_ids))
    iv.refresh()  # a change made to an intervention object directly: recomputed too
    assert len(calls) == 3
    w.metric = "diff"
    # toggled off: the clean view again, nothing extra shipped, the metric back to prob
    iv.toggle(0, False)  # the steer is still on: recomputed under it
    assert len(calls) == 4
    iv.toggle(1, False)  # nothing enabled: no run
    assert len(calls) == 4
    assert w.result is w.clean_result is clean
    assert not w.has_clean and w.comparison == {} and w.diff is None and w.metric == "prob"
    assert w.values_metric == "prob"
    np.testing.assert_array_equal(w.values, clean.top_probs[:, :, 0].astype(np.float32))
    # an input change recomputes both (clean, then intervened when enabled)
    iv.toggle(1, True)
    del calls[:]
    w.k = 3
    assert calls == [False, True] and w.clean_result.k == 3 and w.result.k == 3


def test_generation_runs_under_the_interventions(tiny):
    lm = tiny("gpt2")
    steer = _steer(lm, alpha=40.0)
    iv = mw.Interventions([steer], model=lm)
    w = mw.LensTable(lm, "the cat", generate=6, interventions=iv)
    clean = logit_lens(lm, "the cat", generate=6)
    with lm.intervene(steer):
        by_hand = logit_lens(lm, "the cat", generate=6, target_ids=clean.target_ids)
    _same(w.clean_result, clean)
    _same(w.result, by_hand)
    assert w.result.n_generated == 6 and w.clean_result.continuation == clean.continuation
    assert w.result.continuation == by_hand.continuation != clean.continuation  # the steer changed it
    np.testing.assert_array_equal(w.result.target_ids, clean.target_ids)


def test_a_named_target_is_tracked_in_both_runs_and_a_clean_run_shorter_leaves_nan(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions([_steer(lm)], model=lm)
    w = mw.LensTable(lm, TEXT, target=" the", interventions=iv)
    tid = lm.token_id(" the")
    assert (w.result.target_ids == tid).all() and (w.clean_result.target_ids == tid).all()
    assert w.target_mode == "token" and w.comparison["target"] == " the"
    with lm.intervene(iv):
        _same(w.result, logit_lens(lm, TEXT, target=" the"))
    # a longer intervened run (an earlier end-of-text in the clean generation): NaN / -1 beyond the clean run
    from mri_widgets.widgets.lens_table import _clean_on

    short = logit_lens(lm, "the cat sat")
    long_ = logit_lens(lm, "the cat sat on the")
    probs, ranks = _clean_on(short, long_)
    n = len(short.tokens)
    np.testing.assert_array_equal(probs[:, :n], short.target_probs)
    assert np.isnan(probs[:, n:]).all() and (ranks[:, n:] == -1).all()


def test_a_failing_intervention_is_shown_and_the_last_good_run_stays(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions()
    w = mw.LensTable(lm, TEXT, interventions=iv)
    iv.ablate(("head", 1, 0))
    good = w.result
    iv.add(mw.Ablate(("head", 0, 9)))  # out of range for this model
    assert "InterventionError" in w.error and "head 9" in w.error
    assert w.result is good
    with pytest.raises(TypeError, match="Interventions"):
        mw.LensTable(lm, TEXT, interventions=[mw.Ablate(("head", 0, 0))])
    with pytest.raises(LensError, match="no model"):
        mw.LensTable(None, TEXT, interventions=iv)


def test_payload_ships_the_clean_arrays_only_under_interventions(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions(model=lm)
    w = mw.LensTable(lm, TEXT, interventions=iv)
    w.comm = FakeComm()
    iv.ablate(("head", 2, 0))
    state = {}
    for msg, _bufs in w.comm.sent:
        state.update(msg.get("state", {}))
    assert {"has_clean", "comparison", "values", "lens_version"} <= set(state)
    assert state["has_clean"] is True
    w.comm.sent.clear()
    iv.toggle(0, False)
    state = {}
    for msg, _bufs in w.comm.sent:
        state.update(msg.get("state", {}))
    assert state["has_clean"] is False and state["comparison"] == {}


def test_explorer_lens_runs_under_the_shared_interventions(tiny):
    lm = tiny("gpt2")
    ex = mw.Explorer(lm, prompt=TEXT, flow_layers=[2])
    lens = ex.views["lens"]
    assert lens.interventions is ex.interventions
    ex.interventions.ablate(("head", 2, 1))
    assert lens.comparison["interventions"] == ["ablate head L2.H1 (zero)"]
    assert lens.result is not lens.clean_result
