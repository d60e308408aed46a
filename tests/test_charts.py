"""bqplot charts: the marks hold the analysis arrays, selection changes redraw them, clicks set it."""

from __future__ import annotations

import builtins

import ipywidgets as ipw
import numpy as np
import pytest

import mri_widgets as mw
from mri_widgets.analysis.neurons import HIST_EDGES
from mri_widgets.datasets import emotions
from mri_widgets.testing import SAMPLE_TEXTS, tiny_model

pytest.importorskip("bqplot")


@pytest.fixture(scope="module")
def lm():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def res(lm):
    return mw.logit_lens(lm, "The capital of France is Paris and the cat sat", k=3)


def click(mark, index):
    """What bqplot's front end sends when a mark element is clicked (through the real handler)."""
    mark._handle_custom_msgs(mark, {"event": "element_click", "data": {"index": index, "x": 0, "y": 0}})


def test_layer_trace_marks_equal_the_lens_result(res):
    sel = mw.Selection()
    tr = mw.LayerTrace(res, selection=sel)
    L, n = res.target_probs.shape
    lines, points, rule, _ = tr._marks["prob"]
    # nothing selected: the last position
    assert tr.shown_positions() == [n - 1]
    np.testing.assert_allclose(np.asarray(lines.x), np.arange(L))
    np.testing.assert_allclose(np.asarray(lines.y).reshape(-1), res.target_probs[:, n - 1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(tr._marks["rank"][0].y).reshape(-1), res.target_ranks[:, n - 1] + 1)
    np.testing.assert_allclose(np.asarray(tr._marks["entropy"][0].y).reshape(-1), res.entropy[:, n - 1], rtol=1e-6)
    assert len(np.asarray(rule.x)) == 0  # no layer selected: no rule
    # selection -> chart: position 2 shown beside pinned ones; layer draws the rule
    tr.pinned = [0, -1]
    sel.update(position=2, layer=1)
    assert tr.position == 2 and tr.layer == 1
    assert tr.shown_positions() == [0, n - 1, 2]
    d = tr.data
    for m, arr in (("prob", res.target_probs), ("rank", res.target_ranks), ("entropy", res.entropy)):
        np.testing.assert_allclose(d[m], np.asarray(arr, np.float64)[:, [0, n - 1, 2]].T, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(tr._marks["entropy"][0].y), d["entropy"], rtol=1e-6)
    assert list(tr._marks["prob"][0].labels)[2].startswith(f"2: {res.tokens[2]!r}")
    np.testing.assert_allclose(np.asarray(points.y), d["prob"].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rule.x), [1, 1])
    sel.layer = 3
    np.testing.assert_allclose(np.asarray(tr._marks["rank"][2].x), [3, 3])


def test_layer_trace_click_sets_the_selection(res):
    sel = mw.Selection(position=4)
    tr = mw.LayerTrace(res, selection=sel, pinned=[1])
    L = res.target_probs.shape[0]
    # points are the lines' points in line order: index L + 2 is layer 2 of the second line (position 4)
    click(tr._marks["entropy"][1], L + 2)
    assert (sel.layer, sel.position) == (2, 4)
    click(tr._marks["prob"][1], 3)  # layer 3 of the pinned position 1
    assert (sel.layer, sel.position) == (3, 1)
    click(tr._marks["prob"][1], 10 * L)  # out of range: ignored
    assert (sel.layer, sel.position) == (3, 1)
    # ordinary traitlets links, which unlink
    assert len(tr.links) == 2
    tr.unlink()
    sel.layer = 0
    assert tr.layer == 3


def test_layer_trace_follows_a_lens_table(lm):
    table = mw.LensTable(lm, "The cat sat on the mat")
    tr = mw.LayerTrace(table)
    assert tr.selection is table.selection
    table.selection.update(position=1)
    np.testing.assert_allclose(tr.data["prob"][0], table.result.target_probs[:, 1], rtol=1e-6)
    table.prompt = "A dog ran to the park and back"
    assert tr.result is table.result
    assert tr.data["tokens"] == [table.result.tokens[1]]
    np.testing.assert_allclose(np.asarray(tr._marks["prob"][0].y).reshape(-1), table.result.target_probs[:, 1],
                               rtol=1e-6)


def test_ipywidgets_link_and_jslink_work_on_selection():
    sel = mw.Selection()
    slider = ipw.IntSlider(min=0, max=5)
    ipw.link((slider, "value"), (sel, "layer"))
    slider.value = 4
    assert sel.layer == 4
    sel.layer = 2
    assert slider.value == 2
    js = ipw.jslink((slider, "value"), (sel, "layer"))  # validated: the trait syncs
    assert js.target == (sel, "layer")


@pytest.fixture(scope="module")
def areas(lm):
    return mw.ActivationAreas(lm, emotions()[::10], grid=3, progress=False)


def test_area_metrics_equal_compare_labels(areas):
    sel = mw.Selection()
    ch = areas.plot_metrics(selection=sel)
    table = areas.compare_labels()
    rows = [f"degree_by_layer[{i}]" for i in range(len(areas.layer_ids))]
    want = table.loc[rows].to_numpy(np.float64).T
    assert ch.data["labels"] == list(table.columns)
    np.testing.assert_allclose(ch.data["degree_by_layer"], want)
    np.testing.assert_allclose(np.asarray(ch._lines.y), want)
    np.testing.assert_allclose(np.asarray(ch._lines.x), areas.layer_ids)
    # by hand for one label and layer: mean degree of that layer's nodes in the label's graph
    G = areas.graph(labels=[table.columns[1]])
    deg = [G.degree(n) for n in G if G.nodes[n]["layer"] == areas.layer_ids[2]]
    assert ch.data["degree_by_layer"][1, 2] == pytest.approx(np.mean(deg))
    # selection -> chart
    sel.update(layer=2, label=table.columns[0])
    assert list(ch._lines.opacities) == [1.0] + [0.25] * (len(table.columns) - 1)
    np.testing.assert_allclose(np.asarray(ch._rule.x), [2, 2])
    # click -> selection: point index = label * n_layers + layer position
    n = len(areas.layer_ids)
    click(ch._points, 2 * n + 1)
    assert (sel.label, sel.layer) == (table.columns[2], areas.layer_ids[1])


def test_neuron_histogram_follows_the_selected_neuron(lm):
    scan = mw.NeuronScan.run(lm, SAMPLE_TEXTS, k=4, layers=[1, 2], progress=False)
    sel = mw.Selection()
    h = scan.plot_distribution(1, 5, selection=sel)
    assert (sel.layer, sel.neuron) == (1, 5)
    assert len(h.data["bins"]) == len(HIST_EDGES) - 1
    np.testing.assert_array_equal(np.asarray(h._bars.y), scan.hist[0, 5])
    # the counts are the histogram of the neuron's activations over every real token
    cap = lm.capture(SAMPLE_TEXTS, sites=["mlp"], layers=[1])
    acts = cap["mlp"][:, 0][cap.mask.bool()][:, 5].numpy()
    def count(lo, hi):  # |x| in an octave, sign kept; the central bin is |x| < 2**HIST_LO
        if lo < 0 < hi:
            return (np.abs(acts) < hi).sum()
        if hi <= 0:
            return ((acts < 0) & (-acts >= -hi) & (-acts < -lo)).sum()
        return ((acts >= lo) & (acts < hi)).sum()

    brute = np.array([count(lo, hi) for lo, hi in zip(HIST_EDGES[:-1], HIST_EDGES[1:])])
    assert brute.sum() == acts.size
    np.testing.assert_array_equal(h.data["counts"], brute)
    sel.update(layer=2, neuron=7)
    np.testing.assert_array_equal(np.asarray(h._bars.y), scan.hist[1, 7])
    assert h._fig.title.startswith("neuron 2.7")
    sel.layer = 0
    assert h.data["counts"] is None and "not scanned" in h._fig.title
    assert not np.asarray(h._bars.y).any()
    # log axis: bars grow from 0.5 (never a log of 0, which the browser would get as NaN)
    hl = mw.NeuronHistogram(scan, layer=2, neuron=7, log=True)
    want = scan.hist[1, 7].astype(float)
    np.testing.assert_array_equal(np.asarray(hl._bars.y), np.where(want > 0, want, 0.5))
    assert hl._bars.base == 0.5 and (want == 0).any()


def test_bad_inputs_and_missing_bqplot(res, monkeypatch):
    with pytest.raises(TypeError, match="LensResult"):
        mw.LayerTrace("nope")
    with pytest.raises(ValueError, match="metrics"):
        mw.LayerTrace(res, metrics=("probability",))
    with pytest.raises(TypeError, match="Selection"):
        mw.LayerTrace(res, selection=object())
    real = builtins.__import__

    def no_bqplot(name, *args, **kwargs):
        if name == "bqplot":
            raise ImportError("no bqplot")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bqplot)
    with pytest.raises(ImportError, match=r"mri_widgets\[charts\]"):
        mw.LayerTrace(res)
