"""Explorer: composition, notices for missing data, linking through Python."""

import ipywidgets as ipw
import pytest

import mri_widgets as mw


def _texts(widget):
    out = []
    if isinstance(widget, ipw.HTML):
        out.append(widget.value)
    for c in getattr(widget, "children", []):
        out.extend(_texts(c))
    return out


@pytest.fixture(scope="module")
def corpus():
    return mw.datasets.emotions().subset(list(range(0, 440, 22)))


def test_every_view_around_one_selection(tiny, corpus):
    lm = tiny("llama")
    sel = mw.Selection()
    ex = mw.Explorer(lm, corpus, prompt="The capital of France is", selection=sel, scan_layers=[0, 2])
    assert set(ex.views) == {"lens", "flow", "grid", "graph", "heads"}
    assert all(v.selection is sel for v in ex.views.values())
    assert "Scan 20 texts" in [c.description for c in ex._neuron_box.children[0].children if isinstance(c, ipw.Button)]
    scan = ex.run_scan()
    assert ex.views["neurons"].selection is sel and scan.layers == [0, 2]
    # a click anywhere reaches every view's mirror and the status line (the Colab path)
    ex.views["grid"]._sel = {**ex.views["grid"]._sel, "layer": 1, "region": 3}
    assert sel.layer == 1 and sel.region == 3
    assert all(v._sel["layer"] == 1 for v in ex.views.values())
    assert "<b>region</b> 3" in ex._status.value
    # a token picked in the lens re-centres the flow graph
    sel.position = 2
    assert ex.views["flow"].position == 2
    sel.position = 999  # outside the prompt: the flow graph stays
    assert ex.views["flow"].position == 2


def test_missing_data_says_how_to_get_it(tiny):
    ex = mw.Explorer(tiny("gpt2"))
    text = " ".join(_texts(ex))
    assert "No prompt yet" in text and "No corpus yet" in text and "No neuron scan yet" in text
    assert "No texts for the head map" in text
    assert ex.views == {}


def test_encoder_model_gets_a_notice_not_a_crash(tiny, corpus):
    ex = mw.Explorer(tiny("bert"), corpus, prompt="the cat sat")
    text = " ".join(_texts(ex))
    assert "needs a causal language model" in text
    assert "grid" in ex.views and "heads" in ex.views and "lens" not in ex.views


def test_bad_arguments():
    lm = mw.testing.tiny_model("gpt2")
    with pytest.raises(TypeError, match="Corpus"):
        mw.Explorer(lm, corpus=["a", "b"])
    with pytest.raises(TypeError, match="prompt"):
        mw.Explorer(lm, prompt=3)
    with pytest.raises(TypeError, match="Selection"):
        mw.Explorer(lm, selection={})
