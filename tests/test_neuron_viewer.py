"""NeuronViewer (Python side): data shipped, navigation, following the shared selection, examples rpc."""

import numpy as np
import pytest

import mri_widgets as mw
from mri_widgets.analysis.neurons import NeuronScan
from mri_widgets.widgets.neuron_viewer import NeuronViewer

TEXTS = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.", "I was so happy to see you again!",
         "Neurons fire on some texts.", "It is sad.", "The capital of France is Paris.", "Layer by layer the model refines its guess."]


@pytest.fixture(scope="module")
def gated():
    from mri_widgets.testing import tiny_model

    lm = tiny_model("llama")
    return lm, NeuronScan.run(lm, TEXTS, k=3, layers=[1, 2], batch_size=3, progress=False)


@pytest.fixture(scope="module")
def plain():
    from mri_widgets.testing import tiny_model

    lm = tiny_model("gpt2")
    return lm, NeuronScan.run(lm, TEXTS, k=3, batch_size=4, progress=False, keep_texts=False)


def test_data_for_the_view(gated):
    lm, scan = gated
    w = NeuronViewer(scan, lm, neuron=4)
    d = w.data
    assert (w.layer, w.neuron, d["layer"], d["neuron"]) == (1, 4, 1, 4)
    assert d["layers"] == [1, 2] and d["d_mlp"] == lm.d_mlp and d["gated"]
    assert d["channels"] == ["mlp", "gate", "up", "act"]
    assert d["top"] == [{"value": v, "text": t, "position": p} for v, t, p in scan.top(1, 4)]
    assert d["bottom"][0]["value"] == scan.bottom(1, 4)[0][0]
    assert d["scale"] == pytest.approx(max(abs(scan.top(1, 4)[0][0]), abs(scan.bottom(1, 4)[0][0])))
    assert len(d["cases"]) == 4 and d["hist"].shape == (37,) and d["hist"].sum() == scan.n_tokens
    assert [row[0] for row in d["effect"]["promoted"]] == [s for s, _, _ in mw.analysis.neurons.neuron_logit_effect(lm, 1, 4)["promoted"]]
    assert d["has_texts"] and d["has_model"] and d["note"] == ""


def test_navigation_and_validation(gated):
    lm, scan = gated
    w = NeuronViewer(scan, lm)
    assert (w.layer, w.neuron) == (1, 0)
    w.next()
    assert (w.neuron, w.data["shown_neuron"]) == (1, 1)
    w.previous()
    w.previous()
    assert w.neuron == lm.d_mlp - 1
    w.go(2, 7)
    assert (w.data["shown_layer"], w.data["shown_neuron"]) == (2, 7)
    w.random(seed=3)
    assert w.layer in (1, 2) and 0 <= w.neuron < lm.d_mlp
    with pytest.raises(ValueError, match="not scanned"):
        w.layer = 0
    with pytest.raises(ValueError, match="out of range"):
        w.neuron = lm.d_mlp
    with pytest.raises(ValueError, match="out of range"):
        w.go(neuron=-1)
    w.channel = "gate"
    with pytest.raises(ValueError, match="unknown channel"):
        w.channel = "bogus"


def test_follows_and_sets_the_shared_selection(gated):
    lm, scan = gated
    sel = mw.Selection()
    w = NeuronViewer(scan, lm, selection=sel)
    sel.neuron = 5
    assert (w.layer, w.neuron, w.data["shown_neuron"]) == (1, 5, 5)
    sel.update(layer=2, neuron=9)
    assert (w.layer, w.neuron, w.data["shown_layer"], w.data["shown_neuron"]) == (2, 9, 2, 9)
    sel.layer = 0  # not scanned: the viewer stays where it is
    assert (w.layer, w.neuron) == (2, 9)
    sel.neuron = lm.d_mlp + 3  # out of range for this scan: stays
    assert w.neuron == 9
    # navigating moves the shared selection, so other views follow
    w.next()
    assert (sel.layer, sel.neuron) == (2, 10)
    w.layer = 1
    assert sel.layer == 1
    # a second viewer on the same selection moves with the first
    w2 = NeuronViewer(scan, lm, selection=sel)
    w.go(2, 3)
    assert (w2.layer, w2.neuron) == (2, 3)
    # a new selection object is followed too
    other = mw.Selection()
    w.selection = other
    other.neuron = 12
    assert w.neuron == 12


def test_examples_rpc_recomputes_activations(gated):
    lm, scan = gated
    w = NeuronViewer(scan, lm, layer=2, neuron=6)
    res = w.examples(2, 6)
    assert res["mismatch"] < 1e-4
    top = scan.top(2, 6)
    assert [e["text"] for e in res["top"]] == [t for _, t, _ in top]
    cap = lm.capture([TEXTS[top[0][1]]], ["mlp", "mlp_gate", "mlp_up", "mlp_act"], layers=[2], progress=False)
    e = res["top"][0]
    assert e["tokens"] == cap.tokens[0]
    np.testing.assert_allclose(e["acts"]["mlp"], cap["mlp"][0, 0, :len(e["tokens"]), 6].numpy(), atol=1e-6)
    np.testing.assert_allclose(e["acts"]["gate"], cap["mlp_gate"][0, 0, :len(e["tokens"]), 6].numpy(), atol=1e-6)
    assert e["acts"]["mlp"][top[0][2]] == pytest.approx(top[0][0], abs=1e-5)
    assert e["acts"]["mlp"].max() == pytest.approx(top[0][0], abs=1e-5)
    n_cached = len(w._acts_cache)
    w.examples(2, 6)
    assert len(w._acts_cache) == n_cached  # served from the cache
    # the command is reachable from the front end (through ipywidgets' own comm-message handler) and
    # errors come back as messages
    sent = []
    w.send = lambda msg, buffers=None: sent.append((msg, buffers))

    def from_front_end(content):
        w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    from_front_end({"kind": "anywidget-command", "id": "1", "name": "examples", "msg": {"layer": 2, "neuron": 6}})
    assert sent and sent[-1][0]["id"] == "1" and "error" not in sent[-1][0]["response"] and sent[-1][1]
    from_front_end({"kind": "anywidget-command", "id": "2", "name": "examples", "msg": {"layer": 0, "neuron": 6}})
    assert "not scanned" in sent[-1][0]["response"]["error"]


def test_mismatched_model_is_flagged(gated):
    from mri_widgets.testing import tiny_model

    lm, scan = gated
    with pytest.raises(ValueError, match="does not match"):
        NeuronViewer(scan, tiny_model("gpt2"))


def test_without_model_or_texts(plain):
    lm, scan = plain
    w = NeuronViewer(scan)  # no texts kept, no model
    assert not w.data["has_texts"] and "texts=" in w.data["note"]
    assert w.data["effect"] is None and "model=" in w.data["effect_note"]
    assert w.channels == ["mlp"] and w.data["cases"] == []
    with pytest.raises(ValueError, match="gated"):
        w.channel = "gate"
    with pytest.raises(ValueError, match="texts="):
        w.examples(0, 0)
    w2 = NeuronViewer(scan, texts=TEXTS)
    res = w2.examples(0, 0)
    assert res["top"][0]["raw"] == TEXTS[scan.top(0, 0)[0][1]]
    w3 = NeuronViewer(scan, lm, texts=TEXTS, neuron=2)
    assert w3.examples(0, 2)["mismatch"] < 1e-4
    with pytest.raises(ValueError, match="scanned texts"):
        NeuronViewer(scan, lm, texts=TEXTS[:3])
    with pytest.raises(TypeError, match="NeuronScan"):
        NeuronViewer("scan.npz")


def test_public_name():
    assert mw.NeuronViewer is NeuronViewer and mw.NeuronScan is NeuronScan
