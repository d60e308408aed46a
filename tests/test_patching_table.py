"""PatchingTable on hand-built PatchingResults: the payload the view receives, the selection a
cell stands for, and clear errors for bad input. (The model path calls ``patching``, tested with it.)"""

import dataclasses
import json

import numpy as np
import pytest
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers

import mri_widgets as mw
from conftest import FakeComm
from mri_widgets.analysis.patching import PatchingError, PatchingResult
from mri_widgets.widgets.transport import decode_tree

CLEAN = ["<img src=x onerror=alert(1)>", " Eiff", "el", " Tower", " is", " in"]
CORRUPT = ["<img src=x onerror=alert(1)>", " Col", "osse", "um", " is", " in"]


def _result(kind="position", rows=4, positions=None, **over):
    """A resid-site result: rows = emb, 1, 2, 3; effect[l, j] = (l - j) / 4, raw = 2 * effect + 1."""
    if kind == "position":
        positions = np.arange(len(CORRUPT)) if positions is None else np.asarray(positions)
        cols = len(positions)
        columns = [CORRUPT[p] for p in positions]
    else:
        cols = 5
        columns = [f"h{h}" for h in range(cols)]
        positions = np.zeros(0, np.int64)
    effect = (np.arange(rows)[:, None] - np.arange(cols)[None, :]).astype(np.float32) / 4
    site = "resid" if kind == "position" else "z"
    fields = dict(
        effect=effect, raw=2 * effect + 1, clean_metric=3.0, corrupt_metric=1.0, site=site, kind=kind,
        layers=np.arange(rows) if kind == "position" else np.arange(2, 2 + rows),
        layer_names=(["emb"] + [str(i) for i in range(1, rows)]) if kind == "position" else [str(i) for i in range(2, 2 + rows)],
        columns=columns, clean_tokens=list(CLEAN), corrupt_tokens=list(CORRUPT), metric="logit_diff",
        answer=" Paris", wrong=" Rome", positions=positions, model_name="hand-made")
    fields.update(over)
    return PatchingResult(**fields)


def _sent(widget):
    """The view's traits as the front end receives them, decoded again."""
    return {k: decode_tree(v) for k, v in widget.get_state(widget.view_traits()).items()}


def test_payload_arrays_are_binary_and_match_the_result():
    res = _result()
    w = mw.PatchingTable(res)
    assert w.result is res
    state, paths, bufs = _remove_buffers(w.get_state(w.view_traits()))
    assert {p[0] for p in paths} == {"effect", "raw", "layers", "positions"}
    assert all(p[-1] == "view" for p in paths)  # binary buffers, no JSON lists of numbers
    json.dumps(state)  # the rest is plain JSON
    d = _sent(w)
    np.testing.assert_array_equal(d["effect"], res.effect)
    np.testing.assert_array_equal(d["raw"], 2 * res.effect + 1)
    assert d["effect"].dtype == np.float32 and d["layers"].dtype == np.int32
    assert d["layers"].tolist() == [0, 1, 2, 3] and d["positions"].tolist() == [0, 1, 2, 3, 4, 5]
    assert d["layer_names"] == ["emb", "1", "2", "3"]
    assert d["columns"] == CORRUPT and d["clean_tokens"] == CLEAN and d["corrupt_tokens"] == CORRUPT
    assert (d["site"], d["kind"], d["metric"], d["answer"], d["wrong"]) == ("resid", "position", "logit_diff", " Paris", " Rome")
    assert (d["clean_metric"], d["corrupt_metric"], d["model_name"]) == (3.0, 1.0, "hand-made")
    assert (d["transpose"], d["scale"], d["height"]) == (False, "unit", 480)
    assert float(d["effect"][3, 1]) == 0.5


def test_head_kind_and_nan_effects_travel():
    res = _result("head")
    res.effect[1, 2] = np.nan
    d = _sent(mw.PatchingTable.from_result(res, transpose=True, scale="max", height=300))
    assert d["kind"] == "head" and d["site"] == "z" and d["columns"] == ["h0", "h1", "h2", "h3", "h4"]
    assert d["positions"].shape == (0,) and d["layers"].tolist() == [2, 3, 4, 5]
    assert np.isnan(d["effect"][1, 2]) and (d["transpose"], d["scale"], d["height"]) == (True, "max", 300)


def test_positions_default_to_every_column_and_a_subset_keeps_its_positions():
    w = mw.PatchingTable(dataclasses.replace(_result(), positions=np.zeros(0, np.int64)))
    assert w.positions.tolist() == list(range(len(CORRUPT)))
    w = mw.PatchingTable(_result(positions=[1, 3]))
    assert w.positions.tolist() == [1, 3] and w.columns == [" Col", "um"]
    assert w.cell_selection(2, 1) == {"layer": 2, "position": 3}


def test_selection_of_a_cell_and_back():
    sel = mw.Selection()
    w = mw.PatchingTable(_result(positions=[2, 3, 5]), selection=sel)
    assert w.selected is None
    w.select_cell(0, 2)  # resid row 0 = embeddings = layer 0, as in LensTable
    assert (sel.layer, sel.position, sel.head) == (0, 5, None)
    assert w.selected == (0, 2)
    sel.update(layer=3, position=3)
    assert w.selected == (3, 1)
    assert w._sel["layer"] == 3 and w._sel["position"] == 3  # what the view receives
    sel.update(position=4)  # a position this table did not patch
    assert w.selected is None
    # a click in the view arrives as the _sel mirror (Colab) and reaches the shared selection
    w._sel = {**w._sel, "layer": 1, "position": 2}
    assert (sel.layer, sel.position) == (1, 2) and w.selected == (1, 0)
    with pytest.raises(IndexError, match="col must be <= 2"):
        w.select_cell(0, 3)
    with pytest.raises(TypeError, match="row must be an integer"):
        w.select_cell(1.0, 0)


def test_head_selection_uses_the_site_layer_and_the_head():
    sel = mw.Selection(position=4)
    w = mw.PatchingTable(_result("head"), selection=sel)
    w.select_cell(1, 4)
    assert (sel.layer, sel.head, sel.position) == (3, 4, 4)  # position untouched
    sel.update(layer=5, head=0)
    assert w.selected == (3, 0)
    sel.update(head=7)
    assert w.selected is None


def test_python_changes_reach_the_view_as_one_message():
    w = mw.PatchingTable(_result())
    w.comm = FakeComm()
    w.scale = "max"
    w.transpose = True
    sent = [m for m, _ in w.comm.sent if m and m.get("method") == "update"]
    assert [m["state"] for m in sent] == [{"scale": "max"}, {"transpose": True}]


def test_bad_input_gets_clear_errors():
    with pytest.raises(TypeError, match="PatchingResult, or runs patching on a model"):
        mw.PatchingTable(None)
    with pytest.raises(TypeError, match="PatchingResult, or runs patching on a model"):
        mw.PatchingTable(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="clean must be a prompt"):
        mw.PatchingTable(object(), None, "b")
    with pytest.raises(TypeError, match="corrupt must be a prompt"):
        mw.PatchingTable(object(), "a", ["b"])
    with pytest.raises(TypeError, match="already computed"):
        mw.PatchingTable(_result(), "a", "b")
    with pytest.raises(TypeError, match="a PatchingResult and site: the result is already computed"):
        mw.PatchingTable(_result(), site="z")
    with pytest.raises(TypeError, match="must be a PatchingResult"):
        mw.PatchingTable.from_result({"effect": np.zeros((2, 2))})
    with pytest.raises(TypeError, match="unknown keyword argument 'colour'"):
        mw.PatchingTable(_result(), colour="red")
    with pytest.raises(TypeError, match="transpose must be True or False"):
        mw.PatchingTable(_result(), transpose="yes")
    with pytest.raises(PatchingError, match="scale must be one of 'unit', 'max'"):
        mw.PatchingTable(_result(), scale="log")
    with pytest.raises(PatchingError, match="height must be >= 1"):
        mw.PatchingTable(_result(), height=0)
    w = mw.PatchingTable(_result())
    with pytest.raises(PatchingError, match="scale must be one of"):
        w.scale = "log"
    assert w.scale == "unit"


@pytest.mark.parametrize("change, error, match", [
    (dict(effect=np.zeros((0, 6), np.float32), raw=np.zeros((0, 6), np.float32), layers=np.zeros(0, np.int64),
          layer_names=[]), PatchingError, "empty"),
    (dict(effect=np.zeros(6, np.float32)), PatchingError, r"\(layers, columns\) array"),
    (dict(effect=np.array([["a"] * 6] * 4)), TypeError, "numeric array"),
    (dict(raw=np.zeros((4, 5), np.float32)), PatchingError, "raw has shape"),
    (dict(kind="token"), PatchingError, "kind must be 'position' or 'head'"),
    (dict(layers=np.arange(3)), PatchingError, "4 integer layer indices"),
    (dict(layers=np.arange(4) + 0.5), PatchingError, "integer layer indices"),
    (dict(layer_names=["emb", "1"]), PatchingError, "layer_names has 2 labels for 4 rows"),
    (dict(layer_names="emb123"), TypeError, "list of strings"),
    (dict(columns=CORRUPT[:5]), PatchingError, "columns has 5 labels for 6 columns"),
    (dict(positions=np.arange(5)), PatchingError, "5 positions for 6 columns"),
    (dict(clean_metric=float("nan")), PatchingError, "clean_metric is nan"),
    (dict(corrupt_metric="big"), TypeError, "corrupt_metric must be a number"),
])
def test_inconsistent_results_are_refused(change, error, match):
    res = dataclasses.replace(_result(), **change)
    with pytest.raises(error, match=match):
        mw.PatchingTable(res)


def test_export_and_traits():
    assert "PatchingTable" in mw.__all__ and mw.PatchingTable.__module__ == "mri_widgets.widgets.patching_table"
    w = mw.PatchingTable(_result())
    assert "patching_table" in w._esm
    with pytest.raises(t.TraitError):
        w.effect = np.zeros(3)
