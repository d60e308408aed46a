"""Binary transport of arrays, the selection widget and the base widget's message handling."""

import numpy as np
import pytest
import torch

from mri_widgets import Selection, TokenHeat
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
    assert ["data", "values", "view"] in paths
    assert np.frombuffer(buffers[paths.index(["data", "values", "view"])], np.float32).tolist() == [1, -2, 3]
    assert "view" not in state["data"]["values"]


def test_nested_tree():
    tree = {"a": np.zeros((2, 2)), "b": [np.ones(3, np.int32), "x", 3], "c": {"d": np.float32(2.5)}}
    enc = encode_tree(tree)
    assert enc["c"]["d"] == 2.5 and enc["b"][1] == "x"
    dec = decode_tree(enc)
    assert np.array_equal(dec["b"][0], np.ones(3))


def _from_front_end(w, content, buffers=()):
    """Deliver a custom message the way ipywidgets does when the front end sends one."""
    w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


class FakeComm:
    def __init__(self):
        self.sent = []
        self.comm_id = "fake"
        self.kernel = True

    def send(self, data=None, metadata=None, buffers=None):
        self.sent.append((data, buffers))

    def on_msg(self, cb):
        pass

    def close(self, *a, **k):
        pass


def test_request_state_resends_buffers():
    """Colab drops buffers sent with comm_open; the view asks and Python sends them again."""
    w = TokenHeat(["a", "b"], [0.5, 1.5])
    w.comm = FakeComm()
    _from_front_end(w, {"type": "request_state", "keys": ["data"]})
    data, buffers = w.comm.sent[-1]
    assert data["method"] == "update" and "data" in data["state"]
    assert ["data", "values", "view"] in data["buffer_paths"]
    assert np.frombuffer(buffers[0], np.float32).tolist() == [0.5, 1.5]


def test_rpc_round_trip_and_errors():
    from mri_widgets.widgets.base import rpc

    class W(TokenHeat):
        @rpc
        def double(self, x):
            return {"y": np.asarray(x, np.float32) * 2}

        def hidden(self):
            return 1

    w = W(["a"], [0.0])
    w.comm = FakeComm()
    _from_front_end(w, {"type": "rpc", "id": "1", "name": "double", "args": {"x": [1, 2]}})
    data, buffers = w.comm.sent[-1]
    msg = data["content"]
    assert msg["type"] == "rpc_reply" and msg["id"] == "1" and msg["buffer_paths"] == [["result", "y", "view"]]
    assert np.frombuffer(buffers[0], np.float32).tolist() == [2, 4]
    _from_front_end(w, {"type": "rpc", "id": "2", "name": "hidden"})
    assert "unknown call" in w.comm.sent[-1][0]["content"]["error"]
    _from_front_end(w, {"type": "rpc", "id": "3", "name": "double", "args": {"x": "zz"}})
    assert "ValueError" in w.comm.sent[-1][0]["content"]["error"]


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
