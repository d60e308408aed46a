"""Sharing: standalone HTML pages (save_html) and static pictures (save_png / save_svg, the PNG in
each view's notebook output, shown by nbconvert)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import mri_widgets as mw
from mri_widgets.testing import tiny_model, synthetic_areas
from mri_widgets.widgets import pictures


@pytest.fixture(scope="module")
def lm():
    return tiny_model("gpt2")


def _page_data(path):
    text = Path(path).read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="mri-share-data">(.*?)</script>', text, re.S)
    return text, json.loads(m.group(1))


def test_save_html_holds_the_data_and_one_selection_for_linked_views(lm, tmp_path):
    sel = mw.Selection()
    prompt = "The cat </script><script>alert(1)</script> sat"
    a = mw.LensTable(lm, prompt, selection=sel)
    b = mw.TokenHeat(["x", "</script>", "z"], [1.0, -2.0, 3.0], selection=sel)
    c = mw.TokenHeat(["q"], [0.5])  # its own selection
    sel.update(layer=2, position=1)
    text, data = _page_data(mw.save_html(tmp_path / "p.html", a, [b, c]))
    # markup from the data never closes the page's script: exactly the two script elements of the page
    assert text.count("</script>") == 2 and "<script>alert" not in text
    assert [v["id"] for v in data["views"]] == [a.model_id, b.model_id, c.model_id]
    assert set(data["esm"]) == {"lens_table", "token_heat"}
    assert data["esm"]["lens_table"] == (Path(mw.__file__).parent / "static" / "lens_table.js").read_text()
    # one selection model for a and b, another for c; the selection state is saved
    assert data["models"][a.model_id]["state"]["selection"] == data["models"][b.model_id]["state"]["selection"]
    assert data["models"][c.model_id]["state"]["selection"] == f"IPY_MODEL_{c.selection.model_id}"
    assert data["models"][sel.model_id]["state"]["layer"] == 2
    assert len(data["models"]) == 5
    # arrays: base64 of the very bytes, at their buffer paths
    saved = data["models"][a.model_id]
    assert saved["state"]["tokens"] == a.tokens and "_esm" not in saved["state"]
    (buf,) = [x for x in saved["buffers"] if x["path"] == ["values", "view"]]
    got = np.frombuffer(base64.b64decode(buf["data"]), np.float32).reshape(saved["state"]["values"]["shape"])
    np.testing.assert_array_equal(got, a.values)
    assert "commands" in saved and "commands" not in data["models"][sel.model_id]


def _baked(saved, name):
    """A baked command of a saved model, its arrays decoded (as the page's host puts them back)."""
    c = saved["commands"][name]
    spec = json.loads(json.dumps(c["spec"]))
    for b in c["buffers"]:
        *head, last = b["path"]
        o = spec
        for k in head:
            o = o[k]
        o[last] = base64.b64decode(b["data"])
    def arr(x):
        return np.frombuffer(x["view"], x["dtype"]).reshape(x["shape"])
    return spec, arr


def test_saved_lens_holds_cell_details_of_every_cell(lm, tmp_path):
    iv = mw.Interventions()
    w = mw.LensTable(lm, "The capital of France is", k=4, interventions=iv)
    iv.ablate(("head", 1, 0))
    _, data = _page_data(w.save_html(tmp_path / "l.html"))
    spec, arr = _baked(data["models"][w.model_id], "cell_details")
    L, S = w.result.target_probs.shape
    assert spec["arg"] == "cells" and spec["grid"] == [L, S] and spec["echo"] == "cells"
    r = spec["result"]
    assert r["version"] == w.lens_version and "note" not in r and "ids" not in r
    strings, index = r["tokens"]["mri_strings"], arr(r["tokens"]["index"])
    for layer in range(L):
        for pos in range(S):
            row = layer * S + pos  # row-major over (layers, positions)
            want = w.cell_details([[layer, pos]])
            assert [strings[j] for j in index[row]] == want["tokens"][0]
            np.testing.assert_array_equal(arr(r["probs"])[row], want["probs"][0])
            for key in ("entropy", "target_prob", "target_rank", "clean_prob", "clean_rank"):
                np.testing.assert_array_equal(arr(r[key])[row], want[key][0])


def test_big_lens_saves_top1_only_then_nothing(lm, tmp_path, monkeypatch):
    from mri_widgets.widgets import lens_table

    w = mw.LensTable(lm, "The capital of France is", k=5)
    L, S = w.result.target_probs.shape
    monkeypatch.setattr(lens_table, "BAKE_ENTRIES", L * S * 5 - 1)
    _, data = _page_data(w.save_html(tmp_path / "a.html"))
    spec, arr = _baked(data["models"][w.model_id], "cell_details")
    r = spec["result"]
    assert arr(r["probs"]).shape == (L * S, 1) and arr(r["tokens"]["index"]).shape == (L * S, 1)
    np.testing.assert_array_equal(arr(r["probs"])[:, 0], w.result.top_probs[:, :, 0].reshape(-1))
    assert [r["tokens"]["mri_strings"][j] for j in arr(r["tokens"]["index"])[:, 0]] == \
        [str(x) for x in w.result.top_tokens[:, :, 0].reshape(-1)]
    assert "top-1 token of each cell" in r["note"] and "top-5" in r["note"]
    monkeypatch.setattr(lens_table, "BAKE_ENTRIES", L * S - 1)
    _, data = _page_data(w.save_html(tmp_path / "b.html"))
    assert "commands" not in data["models"][w.model_id]


def test_baked_rows_checks_the_rows():
    from mri_widgets.widgets.share import baked_rows, string_table

    with pytest.raises(ValueError, match="3 rows, the grid \\[2, 2\\] has 4 cells"):
        baked_rows({"x": np.zeros(3)}, arg="cells", grid=(2, 2))
    with pytest.raises(ValueError, match="must lie in \\[0, 2\\)"):
        string_table(["a", "b"], [[0], [2]])


def test_save_html_saves_big_traits_whole(tmp_path, monkeypatch):
    """A state over the message budget is split for the kernel, never in the page (no kernel to fetch from)."""
    import functools

    from mri_widgets.widgets import base, transport

    monkeypatch.setattr(base, "offload_state", functools.partial(transport.offload_state, budget=1024))
    g = mw.LayerGrid(synthetic_areas(n_docs=4000, n_layers=4, grid=6), mode="all")
    chunked = [k for k, v in g.get_state().items()
               if isinstance(v, dict) and "mri_chunked" in v and k in g.view_traits()]
    assert "cell_counts" in chunked
    _, data = _page_data(g.save_html(tmp_path / "g.html"))
    st = data["models"][g.model_id]
    assert not any(isinstance(v, dict) and "mri_chunked" in v for v in st["state"].values())
    for name in chunked:
        if not isinstance(getattr(g, name), np.ndarray):
            assert st["state"][name] == getattr(g, name)
            continue
        (buf,) = [x for x in st["buffers"] if x["path"] == [name, "view"]]
        got = np.frombuffer(base64.b64decode(buf["data"]), st["state"][name]["dtype"])
        np.testing.assert_array_equal(got.reshape(getattr(g, name).shape), getattr(g, name))


def test_save_html_refuses_what_is_not_a_view(tmp_path):
    with pytest.raises(TypeError, match="mri_widgets views"):
        mw.save_html(tmp_path / "x.html", "not a view")
    with pytest.raises(ValueError, match="at least one view"):
        mw.save_html(tmp_path / "x.html")


def test_png_cells_have_the_lens_colours(lm, tmp_path):
    from PIL import Image

    w = mw.LensTable(lm, "The capital of France is")
    img = Image.open(w.save_png(tmp_path / "l.png")).convert("RGB")
    left, top, cw, ch = 90, 40, 58, 16
    probs = w.result.top_probs
    assert probs.shape[1] == len(w.tokens)
    for layer in range(probs.shape[0]):
        for pos in range(len(w.tokens)):
            p = float(probs[layer, pos, 0])
            # bottom-right corner of the cell, inside its border, away from the text
            got = img.getpixel((left + layer * cw + cw - 3, top + pos * ch + ch - 3))
            want = (round(255 - p * 222), round(255 - p * 153), round(255 - p * 83))
            assert all(abs(g - e) <= 1 for g, e in zip(got, want)), (layer, pos, got, want)
    # each cell's text is its top-1 token (the SVG of the same picture holds the text)
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text for t in ET.parse(w.save_svg(tmp_path / "l.svg")).getroot().iter(f"{ns}text")]
    for layer in range(probs.shape[0]):
        for pos in range(len(w.tokens)):
            assert pictures._short(w.result.top_tokens[layer, pos, 0], 8) in texts


def test_svg_of_a_graph_has_every_node_and_escapes_text(tmp_path):
    areas = synthetic_areas(n_docs=300, n_layers=3, grid=4)
    g = mw.CoactivationGraph(areas)
    root = ET.parse(g.save_svg(tmp_path / "g.svg")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == len(g.x)
    assert len(root.findall(f"{ns}line")) == min(len(g.edge_source), 5000)
    h = mw.TokenHeat(["<b>", "&", "a\x02\n"], [1.0, -1.0, 0.5])
    texts = [t.text for t in ET.parse(h.save_svg(tmp_path / "h.svg")).getroot().iter(f"{ns}text")]
    # control characters (XML forbids most) are written as escapes
    assert "<b>" in texts and "&" in texts and "a\\x02\\n" in texts


def test_views_without_a_picture_say_so(tmp_path):
    iv = mw.Interventions()
    with pytest.raises(TypeError, match="no static picture"):
        iv.save_png(tmp_path / "i.png")
    data, _ = iv._repr_mimebundle_()
    assert "image/png" not in data and "application/vnd.jupyter.widget-view+json" in data


def test_output_holds_the_widget_and_a_png(lm):
    from PIL import Image

    w = mw.LensTable(lm, "The cat")
    data, meta = w._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    img = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))
    assert img.size == (meta["image/png"]["width"], meta["image/png"]["height"])
    pictures.STATIC_IMAGES = False
    try:
        assert "image/png" not in w._repr_mimebundle_()[0]
    finally:
        pictures.STATIC_IMAGES = True


@pytest.mark.slow
def test_nbconvert_html_shows_the_picture(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import mri_widgets as mw\n"
        "from mri_widgets.testing import synthetic_areas\n"
        "mw.CoactivationGraph(synthetic_areas(n_docs=200, n_layers=3, grid=4))")]
    root = str(Path(__file__).resolve().parents[1])
    env = os.environ.copy()
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        # as JupyterLab saves by default: without the widget state (with it, nbconvert embeds the live widget)
        NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=False,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env)
    (out,) = nb.cells[0].outputs
    assert "image/png" in out["data"] and "application/vnd.jupyter.widget-view+json" in out["data"]
    body, _ = HTMLExporter().from_notebook_node(nb)
    m = re.search(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', body)
    assert m, "no picture in the HTML"
    assert base64.b64decode(m.group(1)) == base64.b64decode(out["data"]["image/png"])
