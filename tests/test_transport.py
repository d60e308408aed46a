"""Binary transport of arrays, the selection widget and the base widget's message handling."""

import numpy as np
import pytest
import torch

from conftest import FakeComm
from mri_widgets import Selection, TokenHeat
from mri_widgets.widgets.base import MRIWidget
from mri_widgets.widgets.transport import decode_tree, encode_array, encode_tree
from ipywidgets.widgets.widget import _remove_buffers


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "int16"])
def test_round_trip(dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    enc = encode_array(a)
    assert isinstance(enc["view"], memoryview) and enc["shape"] == [2, 3, 4] and enc["dtype"] == dtype
    assert np.array_equal(decode_tree(enc), a)


def test_conversions_and_errors():
    assert encode_array(np.ones(3, np.float16))["dtype"] == "float32"
    assert encode_array(np.ones(3, bool))["dtype"] == "uint8"
    assert encode_array(torch.arange(4))["dtype"] == "int32"
    with pytest.raises(ValueError, match="int32"):
        encode_array(np.array([2**40]))
    with pytest.raises(TypeError, match="dtype"):
        encode_array(np.array(["a"]))
    nc = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not contiguous
    assert np.array_equal(decode_tree(encode_array(nc)), nc)


def test_no_array_travels_as_json_numbers():
    w = TokenHeat(["a", "b", "c"], [1.0, -2.0, 3.0])
    state, paths, buffers = _remove_buffers(w.get_state())
    assert ["values", "view"] in paths
    assert np.frombuffer(buffers[paths.index(["values", "view"])], np.float32).tolist() == [1, -2, 3]
    assert "view" not in state["values"] and state["values"]["shape"] == [3]


def test_nested_tree():
    tree = {"a": np.zeros((2, 2)), "b": [np.ones(3, np.int32), "x", 3], "c": {"d": np.float32(2.5)}}
    enc = encode_tree(tree)
    assert enc["c"]["d"] == 2.5 and enc["b"][1] == "x"
    dec = decode_tree(enc)
    assert np.array_equal(dec["b"][0], np.ones(3))


def _from_front_end(w, content, buffers=()):
    """Deliver a custom message the way ipywidgets does when the front end sends one."""
    w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


def test_request_state_resends_buffers():
    """Colab drops buffers sent with comm_open; the view asks and Python sends them again."""
    w = TokenHeat(["a", "b"], [0.5, 1.5])
    w.comm = FakeComm()
    _from_front_end(w, {"type": "request_state", "keys": ["values", "not_a_trait"]})
    data, buffers = w.comm.sent[-1]
    assert data["method"] == "update" and set(data["state"]) == {"values"}
    assert data["buffer_paths"] == [["values", "view"]]
    assert np.frombuffer(buffers[0], np.float32).tolist() == [0.5, 1.5]


def test_command_round_trip_and_errors():
    """Calls from the view go through anywidget's own command protocol (experimental.invoke)."""
    from mri_widgets.widgets.base import command

    class W(TokenHeat):
        @command
        def double(self, x):
            """Twice x."""
            return {"y": np.asarray(x, np.float32) * 2}

        def hidden(self):
            return 1

    w = W(["a"], [0.0])
    assert w.double([1, 2])["y"].tolist() == [2, 4]  # still an ordinary method for Python callers
    assert W.double.__doc__ == "Twice x."
    assert set(W._anywidget_commands) == {"double", "_mri_chunk"}  # registered with anywidget, and the base's piece fetcher
    w.comm = FakeComm()
    _from_front_end(w, {"kind": "anywidget-command", "id": "1", "name": "double", "msg": {"x": [1, 2]}})
    data, buffers = w.comm.sent[-1]
    msg = data["content"]
    assert msg["kind"] == "anywidget-command-response" and msg["id"] == "1"
    assert msg["response"]["buffer_paths"] == [["result", "y", "view"]]
    assert np.frombuffer(buffers[0], np.float32).tolist() == [2, 4]
    # a failing call answers with the error instead of leaving the view waiting
    _from_front_end(w, {"kind": "anywidget-command", "id": "3", "name": "double", "msg": {"x": "zz"}})
    assert w.comm.sent[-1][0]["content"]["response"]["error"].startswith("ValueError")
    _from_front_end(w, {"kind": "anywidget-command", "id": "4", "name": "double", "msg": {"y": 1}})
    assert "TypeError" in w.comm.sent[-1][0]["content"]["response"]["error"]
    # a method that is not a command is not called; the view is told so at once
    _from_front_end(w, {"kind": "anywidget-command", "id": "2", "name": "hidden", "msg": {}})
    reply = w.comm.sent[-1][0]["content"]
    assert reply["id"] == "2" and "unknown command 'hidden'" in reply["response"]["error"]


def test_selection_links_views_through_python():
    sel = Selection()
    a = TokenHeat(["x", "y"], selection=sel)
    b = TokenHeat(["x", "y"], selection=sel)
    sel.position = 1
    assert a._sel["position"] == 1 and b._sel["position"] == 1
    # the front end of view a writes its mirror (Colab path): the selection and view b follow
    a._sel = {**a._sel, "layer": 4}
    assert sel.layer == 4 and b._sel["layer"] == 4
    # swapping the selection rewires
    other = Selection(layer=9)
    a.selection = other
    assert a._sel["layer"] == 9
    sel.layer = 2
    assert a._sel["layer"] == 9


def test_selection_validation():
    with pytest.raises(TypeError, match="unknown selection keys"):
        Selection(lyer=1)
    s = Selection(layer=1, label="joy")
    s.update(neuron=5)
    assert s.to_dict() == {"layer": 1, "position": None, "neuron": 5, "head": None, "region": None, "label": "joy"}
    s.clear()
    assert all(v is None for v in s.to_dict().values())
    with pytest.raises(TypeError, match="Selection"):
        TokenHeat(["a"], selection="nope")


def test_token_heat_validation():
    with pytest.raises(ValueError, match="one value per token"):
        TokenHeat(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="empty"):
        TokenHeat([])


def test_static_bundles_exist():
    from mri_widgets.widgets.base import STATIC
    w = TokenHeat(["a"])
    assert w._esm == (STATIC / "token_heat.js").read_text() and "token_heat" in w._esm
    assert (STATIC / "mri.css").exists()


# ---------------------------------------------------------------------------- the declared contract
def test_ndarray_trait_converts_checks_and_sends_one_buffer():
    import traitlets as t
    from mri_widgets.widgets.base import MRIWidget, NDArray

    class W(MRIWidget):
        a = NDArray("float32", ndim=2).tag(sync=True)
        i = NDArray(("uint16", "int32"), ndim=1).tag(sync=True)
        o = NDArray("int32", ndim=1, allow_none=True).tag(sync=True)

    w = W()
    assert w.a.shape == (0, 0) and w.a.dtype == np.float32 and w.o is None
    w.a = torch.ones(2, 3, dtype=torch.float64)
    assert w.a.dtype == np.float32 and w.a.shape == (2, 3)
    w.i = np.array([1, 2], np.uint16)
    assert w.i.dtype == np.uint16  # an allowed dtype is kept
    w.i = np.array([70000], np.int64)
    assert w.i.dtype == np.int32 and w.i.tolist() == [70000]  # others: the first allowed dtype that holds them
    with pytest.raises(t.TraitError, match="2 dimensions; got shape"):
        w.a = np.zeros(3)
    with pytest.raises(t.TraitError, match="floats"):
        w.o = np.array([1.5])
    with pytest.raises(t.TraitError, match="do not fit"):
        w.o = np.array([2 ** 40])
    with pytest.raises(t.TraitError, match="dtype <U1"):
        w.o = np.array(["x"])
    state, paths, buffers = _remove_buffers(w.get_state(["a", "o"]))
    assert paths == [["a", "view"]] and state["o"] is None and state["a"]["shape"] == [2, 3]
    assert np.frombuffer(buffers[0], np.float32).tolist() == [1.0] * 6


def test_token_heat_rejects_a_plain_string():
    """Issue 16: TokenHeat("abc") used to colour three characters as three tokens."""
    for bad in ("abc", b"abc"):
        with pytest.raises(TypeError, match="list of token strings.*tokenise it first"):
            TokenHeat(bad)
    with pytest.raises(TypeError, match="list of token strings"):
        TokenHeat(5)
    w = TokenHeat(list("abc"), [1, 2, 3])  # characters on purpose: say so with list(text)
    assert w.tokens == ["a", "b", "c"]
    with pytest.raises(TypeError, match="list of token strings"):
        w.set_tokens("xyz")
    assert w.tokens == ["a", "b", "c"]
    import traitlets as t
    with pytest.raises(t.TraitError, match="3 tokens"):
        w.values = [1.0]
    assert w.values.tolist() == [1, 2, 3]


def _widget_classes():
    import mri_widgets as mw
    from mri_widgets.widgets.base import MRIWidget
    from mri_widgets.widgets.graph_view import GraphView

    classes = [mw.TokenHeat, mw.LensTable, mw.PatchingTable, mw.HeadMap, mw.LayerGrid, mw.NeuronViewer, GraphView,
               mw.CoactivationGraph, mw.FlowGraph, mw.Interventions]
    assert all(issubclass(c, MRIWidget) for c in classes)
    return classes


def test_unknown_keyword_arguments_list_the_valid_ones():
    import inspect

    import mri_widgets as mw

    for cls in _widget_classes() + [mw.Explorer]:
        params = [n for n in inspect.signature(cls.__init__).parameters if n != "self" and not n.startswith("_")]
        if issubclass(cls, MRIWidget) and "theme" not in params:
            params.append("theme")  # every view also takes the base trait theme=
        with pytest.raises(TypeError) as e:
            cls(None, colour="red", hieght=3)  # rejected before any work, whatever the positional arguments
        msg = str(e.value)
        assert msg.startswith(f"{cls.__name__}() got unknown keyword arguments 'colour', 'hieght'"), msg
        assert msg.endswith("valid keyword arguments: " + ", ".join(params)), msg
    # the base class: only its declared traits
    with pytest.raises(TypeError, match="no view traits"):
        TokenHeat.__mro__[1](colour="red")


def _js_list(src: str, name: str) -> list:
    import re
    m = re.search(rf"export const {name} = \[(.*?)\];", src, re.S)
    assert m, f"no `export const {name} = [...]` in the view"
    return re.findall(r'"([a-z_][a-z0-9_]*)"', m.group(1))


def test_each_view_declares_the_traits_its_widget_syncs():
    """The contract both ways: every synced trait of a widget is listed by its JS view
    (TRAITS redraw, PARAMS are read/set by the view), and the view names no trait Python lacks."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "js" / "src" / "views"
    for cls in _widget_classes():
        src = (root / f"{cls._view}.js").read_text()
        traits, params = _js_list(src, "TRAITS"), _js_list(src, "PARAMS")
        assert not set(traits) & set(params)
        py = set(cls.view_traits())
        extra = py - set(traits) - set(params)
        # subclasses of GraphView add the traits their toolbar controls set; FlowGraph's view
        # reads its interventions traits (the ablate buttons, the before/after panel) itself
        if cls.__name__ == "FlowGraph":
            assert extra == {"prompt", "layers", "position", "target", "ablation", "comparison"}
        else:
            assert extra == set(), f"{cls.__name__}: traits the view does not declare: {extra}"
        assert set(traits) | set(params) <= py, f"{cls.__name__}: the view names unknown traits"
