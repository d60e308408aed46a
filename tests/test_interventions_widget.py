"""mw.Interventions: the shared list of ablations, the views' ablate commands, and the FlowGraph's
before/after numbers against the model's own logits under lm.intervene."""

import pytest
import torch

import mri_widgets as mw
from conftest import FakeComm
from mri_widgets.analysis.neurons import NeuronScan
from mri_widgets.models.interventions import InterventionError
from mri_widgets.testing import SAMPLE_TEXTS

TEXT = "the cat sat on the mat and looked at the dog"
CORPUS = SAMPLE_TEXTS[:6]


def _logits(lm, text=TEXT):
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits[0].float()


def _command(w, name, **msg):
    """Call a view command over the wire, as the front end does; returns the decoded response."""
    w.comm = FakeComm()
    w._handle_msg({"content": {"data": {"method": "custom", "content": {
        "kind": "anywidget-command", "id": "1", "name": name, "msg": msg}}}, "buffers": []})
    return w.comm.sent[-1][0]["content"]["response"]


def test_ablate_dedupes_toggles_removes_and_counts_changes(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions(corpus=CORPUS, model=lm)
    assert iv.items == [] and iv.active == [] and iv.entries == []
    v0 = iv.version
    a = iv.ablate(("head", 2, 1))
    assert isinstance(a, mw.Ablate) and a.target == ("head", 2, 1) and a.mode == "zero"
    assert iv.ablate(["head", 2, 1]) is a and len(iv) == 1  # the same target and mode: not twice
    assert iv.ablate(("head", -1, -3)) is a and len(iv) == 1  # counted from the end: the same head
    m = iv.ablate(("head", 2, 1), mode="mean")  # another mode is another ablation
    assert m is not a and m.corpus == CORPUS and len(iv) == 2
    n = iv.ablate(("neuron", 1, 7), mode="mean", corpus=SAMPLE_TEXTS[:2])
    assert n.corpus == SAMPLE_TEXTS[:2]
    assert iv.entries == [
        {"id": 0, "label": "ablate head L2.H1 (zero)", "kind": "ablate", "enabled": True, "target": ["head", 2, 1],
         "mode": "zero"},
        {"id": 1, "label": "ablate head L2.H1 (mean)", "kind": "ablate", "enabled": True, "target": ["head", 2, 1],
         "mode": "mean"},
        {"id": 2, "label": "ablate neuron L1.N7 (mean)", "kind": "ablate", "enabled": True, "target": ["neuron", 1, 7],
         "mode": "mean"}]
    assert iv.version == v0 + 3  # one change each, none for the duplicate
    assert iv.toggle(0) is a and a.enabled is False and iv.entries[0]["enabled"] is False
    assert iv.active == [m, n]
    iv.toggle(0, False)
    assert a.enabled is False
    assert iv.ablate(("head", 2, 1)) is a and a.enabled is True and len(iv) == 3  # ablating again re-enables
    assert iv.remove(1) is m and iv.items == [a, n]
    assert [e["id"] for e in iv.entries] == [0, 2]  # ids stay with their intervention
    steer = mw.Steer("resid", torch.zeros(lm.d_model), layers=[1])
    assert iv.add(steer) is steer and iv.add(steer) is steer and len(iv) == 3
    assert iv.entries[-1]["kind"] == "steer" and iv.entries[-1]["target"] is None
    iv.clear()
    assert len(iv) == 0 and iv.entries == []
    assert "Interventions" in mw.__all__ and isinstance(iv, mw.Interventions)


def test_bad_calls_get_clear_errors(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions(model=lm)
    with pytest.raises(InterventionError, match="mean ablation needs a corpus"):
        iv.ablate(("head", 0, 0), mode="mean")
    with pytest.raises(InterventionError, match="mode must be 'zero' or 'mean'"):
        iv.ablate(("head", 0, 0), mode="half")
    with pytest.raises(InterventionError, match="head 9 is out of range"):
        iv.ablate(("head", 0, 9))  # checked against the model at once
    with pytest.raises(InterventionError, match="needs integers"):
        iv.ablate(("head", 0, "x"))
    with pytest.raises(IndexError, match="there are 0 interventions"):
        iv.toggle(0)
    iv.ablate(("head", 0, 0))
    with pytest.raises(IndexError, match="out of range"):
        iv.remove(3)
    with pytest.raises(TypeError, match="enabled must be"):
        iv.toggle(0, "yes")
    with pytest.raises(InterventionError, match="not an intervention"):
        iv.add(("head", 0, 1))
    with pytest.raises(TypeError, match="single string"):
        mw.Interventions(corpus="one text")
    assert len(iv) == 1 and iv.version > 0


def test_lm_intervene_applies_the_enabled_interventions_only(tiny):
    lm = tiny("gpt2")
    clean = _logits(lm)
    iv = mw.Interventions(corpus=CORPUS)
    with lm.intervene(iv):  # nothing yet
        torch.testing.assert_close(_logits(lm), clean, rtol=0, atol=0)
    iv.ablate(("head", 1, 2))
    iv.ablate(("neuron", 2, 5), mode="mean")
    with lm.intervene(iv):
        both = _logits(lm)
    with lm.intervene(ablate=[("head", 1, 2)]), lm.intervene(mw.Ablate(("neuron", 2, 5), mode="mean", corpus=CORPUS)):
        want = _logits(lm)
    assert (both - clean).abs().max() > 1e-4
    torch.testing.assert_close(both, want, rtol=0, atol=1e-6)
    iv.toggle(1)  # only the head now
    with lm.intervene(iv):
        head = _logits(lm)
    with lm.intervene(ablate=("head", 1, 2)):
        torch.testing.assert_close(head, _logits(lm), rtol=0, atol=1e-6)
    iv.toggle(0)  # nothing enabled: the clean run
    with lm.intervene(iv):
        torch.testing.assert_close(_logits(lm), clean, rtol=0, atol=0)


def test_the_interventions_view_toggles_and_removes_by_id(tiny):
    iv = mw.Interventions()
    iv.ablate(("head", 0, 1))
    iv.ablate(("neuron", 1, 2))
    r = _command(iv, "toggle_entry", id=1, enabled=False)
    assert iv.items[1].enabled is False and r["result"][1]["enabled"] is False
    assert _command(iv, "remove_entry", id=0)["result"][0]["id"] == 1
    assert [it.label for it in iv.items] == ["ablate neuron L1.N2 (zero)"]
    assert "no intervention with id 0" in _command(iv, "toggle_entry", id=0, enabled=True)["error"]
    assert _command(iv, "clear_entries")["result"] == [] and len(iv) == 0


def test_views_ablate_the_selected_head_or_neuron(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions(model=lm)
    hm = mw.HeadMap(lm, SAMPLE_TEXTS[:2], interventions=iv)
    assert hm.ablation == {"mean": False, "active": [], "mean_note": hm.ablation["mean_note"]}
    assert "corpus" in hm.ablation["mean_note"]
    r = _command(hm, "ablate", kind="head", layer=2, index=3, mode="zero")
    assert r["result"]["label"] == "ablate head L2.H3 (zero)"
    assert [it.target for it in iv.items] == [("head", 2, 3)] and iv.items[0].mode == "zero"
    assert hm.ablation["active"] == [["head", 2, 3, "zero"]]
    assert "needs a corpus" in _command(hm, "ablate", kind="head", layer=2, index=3, mode="mean")["error"]
    scan = NeuronScan.run(lm, SAMPLE_TEXTS[:4], k=2, layers=[1], progress=False)
    nv = mw.NeuronViewer(scan, lm, layer=1, neuron=4, interventions=iv)
    nv.ablate("neuron", 1, 4)
    assert [it.target for it in iv.items] == [("head", 2, 3), ("neuron", 1, 4)]
    assert nv.ablation["active"] == hm.ablation["active"] == [["head", 2, 3, "zero"], ["neuron", 1, 4, "zero"]]
    iv.toggle(0)
    assert hm.ablation["active"] == [["neuron", 1, 4, "zero"]]  # every view follows
    assert "kind must be" in _command(nv, "ablate", kind="layer", layer=1, index=0)["error"]
    # without interventions: no buttons, and the command says what to pass
    bare = mw.HeadMap(lm, SAMPLE_TEXTS[:2])
    assert bare.ablation == {} and bare.interventions is None
    assert "pass interventions=" in _command(bare, "ablate", kind="head", layer=0, index=0)["error"]
    with pytest.raises(TypeError, match="mri_widgets.Interventions"):
        mw.HeadMap(lm, SAMPLE_TEXTS[:2], interventions=[("head", 0, 0)])


def _brute(lm, text, pos, tid, ablations):
    """The target's probability and rank (1 = top) and the prediction from the model's own logits."""
    with lm.intervene(ablate=ablations) if ablations else torch.inference_mode():
        p = torch.softmax(_logits(lm, text)[pos].double(), -1)
    return {"prob": float(p[tid]), "rank": int((p > p[tid]).sum()) + 1, "prediction_id": int(p.argmax()),
            "prediction_prob": float(p.max())}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_flow_graph_before_and_after_equal_the_models_logits(tiny, arch):
    lm = tiny(arch)
    iv = mw.Interventions(corpus=CORPUS, model=lm)
    fg = mw.FlowGraph(lm, TEXT, interventions=iv, layers=[1, 2])
    clean_graph = mw.flow_graph(lm, TEXT, layers=[1, 2])
    assert fg.comparison == {} and fg.graph.graph["prediction_prob"] == pytest.approx(
        clean_graph.graph["prediction_prob"], abs=1e-6)
    heads = [("head", 2, h) for h in range(lm.n_heads)] + [("head", 1, 0)]
    for t in heads:
        iv.ablate(t)
    c = fg.comparison
    pos = c["position"]
    tid = int(_logits(lm)[pos].argmax())  # no target asked: the clean prediction
    assert c["target_id"] == tid and c["interventions"] == [it.label for it in iv.active]
    for run, abl in (("clean", None), ("intervened", heads)):
        want = _brute(lm, TEXT, pos, tid, abl)
        assert c[run]["prob"] == pytest.approx(want["prob"], rel=1e-4, abs=1e-7)
        assert c[run]["rank"] == want["rank"]
        assert c[run]["prediction_id"] == want["prediction_id"]
        assert c[run]["prediction_prob"] == pytest.approx(want["prediction_prob"], rel=1e-4)
    assert c["clean"]["rank"] == 1 and c["intervened"]["prob"] != pytest.approx(c["clean"]["prob"], rel=1e-3)
    # the graph drawn is the intervened run, coloured by the clean prediction's rank
    with lm.intervene(ablate=heads):
        want_graph = mw.flow_graph(lm, TEXT, layers=[1, 2], target=tid)
    assert fg.graph.graph["prediction_prob"] == pytest.approx(want_graph.graph["prediction_prob"], abs=1e-6)
    ranks = {n: a["target_rank"] for n, a in fg.graph.nodes(data=True)}
    assert ranks == {n: a["target_rank"] for n, a in want_graph.nodes(data=True)}
    assert fg.title.startswith(f"[under {len(heads)} interventions]")
    # another position and an explicit target: the numbers follow
    fg.position = 3
    fg.target = 7
    want = _brute(lm, TEXT, 3, 7, heads)
    assert fg.comparison["position"] == 3 and fg.comparison["target_id"] == 7
    assert fg.comparison["intervened"]["rank"] == want["rank"]
    assert fg.comparison["intervened"]["prob"] == pytest.approx(want["prob"], rel=1e-4, abs=1e-7)
    # everything off: the clean graph again, no comparison
    for i in range(len(iv)):
        iv.toggle(i, False)
    assert fg.comparison == {}
    fg.target = None
    fg.position = -1
    assert fg.graph.graph["prediction_prob"] == pytest.approx(clean_graph.graph["prediction_prob"], abs=1e-6)


def test_flow_graph_ablate_buttons_and_a_failing_intervention_is_shown(tiny):
    lm = tiny("gpt2")
    iv = mw.Interventions()
    fg = mw.FlowGraph(lm, TEXT, interventions=iv)
    assert fg.ablation["active"] == [] and fg.ablation["mean"] is False
    fg.ablate("neuron", 2, 11)
    assert [it.target for it in iv.items] == [("neuron", 2, 11)] and fg.comparison["intervened"]["rank"] >= 1
    iv.add(mw.Ablate(("head", 0, 9)))  # out of range for this model: the run fails, the view says why
    assert "InterventionError" in fg.error and "head 9" in fg.error
    assert fg.comparison["interventions"] == ["ablate neuron L2.N11 (zero)"]  # the last good state stays


def test_explorer_holds_one_interventions_widget(tiny):
    lm = tiny("gpt2")
    corpus = mw.Corpus(CORPUS, ["a", "b"] * 3)
    ex = mw.Explorer(lm, corpus, prompt=TEXT, flow_layers=[2])
    iv = ex.interventions
    assert isinstance(iv, mw.Interventions) and iv.corpus == CORPUS and iv in ex.children
    assert ex.views["flow"].interventions is iv and ex.views["heads"].interventions is iv
    ex.run_scan(layers=[1])
    assert ex.views["neurons"].interventions is iv
    ex.interventions.ablate(("head", 2, 1), mode="mean")
    assert ex.views["flow"].comparison["interventions"] == ["ablate head L2.H1 (mean)"]
    assert ex.views["heads"].ablation["active"] == [["head", 2, 1, "mean"]] and ex.views["heads"].ablation["mean"]
