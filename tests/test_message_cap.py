"""Every message a view sends stays under 8 MiB, whatever the input (large traits go in pieces).

The comm of each widget is a CappedComm (tests/conftest.py) that fails on any message over the
cap, the comm_open included. The front end is played by calling the ``_mri_chunk`` command the
way the view does (js/src/lib/chunks.js), and the joined pieces must give back the trait.
"""

from __future__ import annotations

import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers

import mri_widgets as mw
from mri_widgets.analysis.lens import LensResult
from mri_widgets.testing import synthetic_areas
from mri_widgets.widgets.transport import (CHUNK_BYTES, MESSAGE_CAP, decode_tree, message_bytes, pack_value,
                                            unpack_value)


def _call(w, name, msg, ident):
    w._handle_msg({"content": {"data": {"method": "custom", "content": {
        "kind": "anywidget-command", "id": ident, "name": name, "msg": msg}}}, "buffers": []})
    data, buffers = w.comm.sent[-1]
    assert data["content"]["id"] == ident
    return data["content"]["response"], buffers


def _front_end_state(w) -> dict:
    """What the view ends up with: every state message applied, chunked traits fetched and joined."""
    state = {}
    for data, buffers in w.comm.sent:
        if "state" not in data:  # a reply to a command, not state
            continue
        st = data["state"]
        for path, b in zip(data["buffer_paths"], buffers or []):
            o = st
            for k in path[:-1]:
                o = o[k]
            o[path[-1]] = memoryview(b)
        state.update(st)
    for k, v in list(state.items()):
        if isinstance(v, dict) and "mri_chunked" in v:
            pieces = []
            for i in range(v["n_chunks"]):
                resp, bufs = _call(w, "_mri_chunk", {"token": v["mri_chunked"], "index": i}, f"{k}-{i}")
                assert "error" not in resp, resp
                assert len(bufs[0]) <= CHUNK_BYTES
                pieces.append(bytes(bufs[0]))
            blob = b"".join(pieces)
            assert len(blob) == v["nbytes"]
            state[k] = unpack_value(blob)
    return decode_tree(state)


def _check_all_under_cap(comms):
    sizes = [s for c in comms for s in c.sizes]
    assert sizes and max(sizes) <= MESSAGE_CAP
    return sizes


def test_pack_round_trip():
    from mri_widgets.widgets.transport import encode_tree

    value = encode_tree({"a": np.arange(7, dtype=np.int16), "b": ["x", {"c": np.ones((2, 3), np.float32)}], "d": 3})
    back = decode_tree(unpack_value(pack_value(value)))
    assert back["a"].tolist() == list(range(7)) and back["b"][0] == "x" and back["d"] == 3
    np.testing.assert_array_equal(back["b"][1]["c"], np.ones((2, 3)))
    assert decode_tree(unpack_value(pack_value(encode_tree(np.arange(5.0))))).tolist() == [0, 1, 2, 3, 4]


def test_small_views_are_not_split(capped_comms):
    w = mw.TokenHeat(["a", "b"], [1.0, 2.0])
    state, _, _ = _remove_buffers(w.get_state())
    assert not any(isinstance(v, dict) and "mri_chunked" in v for v in state.values())
    assert w.comm in capped_comms and len(w.comm.sizes) >= 1


def _synthetic_lens(n_tokens=8192, n_layers=13, k=100, vocab=50257, seed=0):
    rng = np.random.default_rng(seed)
    L, S = n_layers, n_tokens
    top_ids = rng.integers(0, vocab, (L, S, k))
    probs = np.sort(rng.random((L, S, k)).astype(np.float32), axis=-1)[..., ::-1] / k
    toks = np.empty((L, S, k), object)
    toks[...] = "tok"
    ids = rng.integers(0, vocab, S)
    return LensResult(prompt=" ".join(["w"] * S), tokens=[f"t{i}" for i in range(S)], input_ids=ids,
                      layer_names=["emb"] + [str(i) for i in range(1, L)], top_ids=top_ids, top_tokens=toks,
                      top_probs=np.ascontiguousarray(probs), entropy=rng.random((L, S)).astype(np.float32),
                      target_ids=top_ids[-1, :, 0], target_tokens=["tok"] * S,
                      target_probs=rng.random((L, S)).astype(np.float32),
                      target_ranks=rng.integers(0, 10, (L, S)), model_name="synthetic", vocab_size=vocab)


def test_lens_8192_tokens_k100_under_cap(capped_comms):
    res = _synthetic_lens()
    w = mw.LensTable.from_result(res)
    got = _front_end_state(w)
    sizes = _check_all_under_cap(capped_comms)
    assert sum(sizes) < 2 * 2 ** 20  # top-1 and one metric up front, not the 200 MiB of top-k lists
    np.testing.assert_array_equal(got["top1_idx"], w.top1_idx)
    np.testing.assert_array_equal(got["values"], res.top_probs[:, :, 0])
    assert got["vocab"] == w.vocab
    # the top-k lists of the most cells one call may ask for stay under the cap too
    cells = [[i % 13, (i * 7) % 8192] for i in range(2000)]
    resp, bufs = _call(w, "cell_details", {"cells": cells}, "big")
    assert "error" not in resp, resp
    assert max(capped_comms[-1].sizes) <= MESSAGE_CAP
    assert len(bufs) >= 2 and sum(len(b) for b in bufs) >= 2000 * 100 * 8


def test_graph_50000_documents_under_cap(capped_comms):
    areas = synthetic_areas(50_000, 31, 30)
    w = mw.CoactivationGraph(areas)
    got = _front_end_state(w)
    _check_all_under_cap(capped_comms)
    np.testing.assert_array_equal(got["edge_weight"], w.edge_weight)
    np.testing.assert_array_equal(got["x"], w.x)
    assert got["node_tooltip"] == w.node_tooltip


def test_layer_grid_300_under_cap(capped_comms):
    areas = synthetic_areas(50_000, 31, 300)
    w = mw.LayerGrid(areas)
    got = _front_end_state(w)
    _check_all_under_cap(capped_comms)
    for k, v in w.data.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(got[k], v)


def test_cap_detects_big_messages():
    """The capped comm itself fails on a message over the cap (so the tests above can fail)."""
    from conftest import CappedComm

    c = CappedComm(MESSAGE_CAP)
    with pytest.raises(AssertionError, match="MiB was sent"):
        c.send({"x": 1}, buffers=[b"\0" * (MESSAGE_CAP + 1)])
    assert message_bytes({"a": "é"}) == len('{"a": "é"}'.encode())
