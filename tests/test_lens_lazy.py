"""LensTable sends what the first render needs (top-1 and one metric); the top-k lists come on demand."""

import json

import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers

import mri_widgets as mw
from conftest import FakeComm
from mri_widgets.analysis.lens import LensError, logit_lens
from mri_widgets.testing import synthetic_lens
from mri_widgets.widgets.transport import message_bytes

TEXT = "The capital of France is Paris. The capital of Italy is"


def _state_keys(comm) -> list:
    """The trait names of every state update sent since the comm was attached."""
    keys = []
    for data, _bufs in comm.sent:
        if isinstance(data, dict) and data.get("method") == "update":
            keys.append(set(data["state"]))
    return keys


def test_first_render_is_top1_and_one_metric_a_tenth_of_the_content():
    res = synthetic_lens(2000, 33, 20)
    w = mw.LensTable.from_result(res)
    state = {k: v for k, v in w.get_state().items() if k not in ("_esm", "_css")}
    st, paths, bufs = _remove_buffers(state)
    assert not any(isinstance(v, dict) and "mri_chunked" in v for v in st.values())  # one message
    first = message_bytes(st, bufs)
    # only per-cell arrays: the top-1 index (uint16 here) and the metric's values (float32)
    arrays = {p[0]: memoryview(b).nbytes for p, b in zip(paths, bufs)}
    L, S = 33, 2000
    assert arrays["top1_idx"] == L * S * 2 and arrays["values"] == L * S * 4
    assert sum(arrays.values()) < L * S * 6 + 4 * S * 4 + 1024
    assert not {"top_idx", "top_probs", "entropy", "target_probs", "target_ranks"} & set(w.view_traits())
    # the vocab holds the top-1 and target strings only, not every top-k token
    assert set(w.vocab) == {str(x) for x in res.top_tokens[:, :, 0].reshape(-1)} | set(res.target_tokens)
    np.testing.assert_array_equal(np.array(w.vocab, object)[w.top1_idx], res.top_tokens[:, :, 0])
    # the whole content as JSON text: the top-k probabilities alone weigh more than ten first renders
    whole = len(json.dumps(res.top_probs.tolist(), separators=(",", ":")))
    assert first * 10 <= whole, (first, whole)


def test_cell_details_are_exactly_the_results_top(tiny):
    lm = tiny("gpt2")
    w = mw.LensTable(lm, TEXT, k=6, target=" the")
    res = w.result
    L, S = res.target_probs.shape
    cells = [[0, 0], [L - 1, S - 1], [2, 3], [2, 3], [1, S - 2]]
    d = w.cell_details(cells)
    assert d["version"] == w.lens_version and d["cells"] == cells
    assert d["ids"].shape == d["probs"].shape == (len(cells), 6)
    for i, (l, p) in enumerate(cells):
        assert list(zip(d["tokens"][i], d["probs"][i].tolist())) == res.top(l, p)
        np.testing.assert_array_equal(d["ids"][i], res.top_ids[l, p])
        assert d["entropy"][i] == np.float32(res.entropy[l, p])
        assert d["target_prob"][i] == np.float32(res.target_probs[l, p])
        assert d["target_rank"][i] == res.target_ranks[l, p]
    assert d["clean_prob"] is None and d["clean_rank"] is None
    # through the command protocol (what the view calls): arrays as binary buffers
    w.comm = FakeComm()
    w._handle_msg({"content": {"data": {"method": "custom", "content": {
        "kind": "anywidget-command", "id": "c1", "name": "cell_details", "msg": {"cells": [[1, 2]]}}}},
        "buffers": []})
    reply, bufs = w.comm.sent[-1]
    resp = reply["content"]["response"]
    assert "error" not in resp and resp["result"]["tokens"] == [[t for t, _ in res.top(1, 2)]]
    assert np.frombuffer(bufs[1], np.float32).tolist() == [p for _, p in res.top(1, 2)]
    with pytest.raises(LensError, match="position must be <="):
        w.cell_details([[0, S]])
    with pytest.raises(LensError, match="pair"):
        w.cell_details([[0]])
    with pytest.raises(LensError, match="at most 33333"):
        w.cell_details([[0, 0]] * 40_000)


def test_changes_send_only_what_changed(tiny):
    lm = tiny("gpt2")
    w = mw.LensTable(lm, TEXT, k=4)
    res = w.result
    w.comm = FakeComm()
    # a metric change: the new metric's values, nothing else of the table
    w.metric = "entropy"
    assert set().union(*_state_keys(w.comm)) == {"metric", "values", "values_metric"}
    np.testing.assert_array_equal(w.values, res.entropy.astype(np.float32))
    w.metric = "rank"
    assert w.values.dtype == np.uint16
    np.testing.assert_array_equal(w.values, res.target_ranks)
    # a k change: the table's first render is the same; only the version moves (the top-k lists
    # the view cached are stale)
    w.comm.sent.clear()
    version = w.lens_version
    w.k = 7
    assert set().union(*_state_keys(w.comm)) == {"k", "lens_version"}
    assert w.lens_version == version + 1 and w.result.k == 7
    assert w.cell_details([[1, 1]])["probs"].shape == (1, 7)
    # a prompt change: the new table, without what stays (layer names, model, vocab size ...)
    w.comm.sent.clear()
    w.prompt = "the cat sat on the mat"
    sent = set().union(*_state_keys(w.comm))
    assert {"prompt", "tokens", "top1_idx", "values", "lens_version"} <= sent
    assert not {"layer_names", "model_name", "vocab_size", "target_mode", "image", "has_clean", "metric"} & sent
    new = logit_lens(lm, "the cat sat on the mat", k=7)
    np.testing.assert_array_equal(w.values, new.target_ranks)
    np.testing.assert_array_equal(np.array(w.vocab, object)[w.top1_idx], new.top_tokens[:, :, 0])
