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
    (buf,) = [x for x in saved["buffers"] if x["path"] == ["top_probs", "view"]]
    got = np.frombuffer(base64.b64decode(buf["data"]), np.float32).reshape(saved["state"]["top_probs"]["shape"])
    np.testing.assert_array_equal(got, a.top_probs)


def test_save_html_saves_big_traits_whole(tmp_path, monkeypatch):
    """A state over the message budget is split for the kernel, never in the page (no kernel to fetch from)."""
    import functools

    from mri_widgets.widgets import base, transport

    monkeypatch.setattr(base, "offload_state", functools.partial(transport.offload_state, budget=1024))
    g = mw.LayerGrid(synthetic_areas(n_docs=4000, n_layers=4, grid=6), mode="all")
    assert isinstance(g.get_state()["regions"], dict) and "mri_chunked" in g.get_state()["regions"]
    _, data = _page_data(g.save_html(tmp_path / "g.html"))
    st = data["models"][g.model_id]
    assert not any(isinstance(v, dict) and "mri_chunked" in v for v in st["state"].values())
    (buf,) = [x for x in st["buffers"] if x["path"] == ["regions", "view"]]
    got = np.frombuffer(base64.b64decode(buf["data"]), st["state"]["regions"]["dtype"])
    np.testing.assert_array_equal(got.reshape(g.regions.shape), g.regions)


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
    for layer in range(w.top_probs.shape[0]):
        for pos in range(len(w.tokens)):
            p = float(w.top_probs[layer, pos, 0])
            # bottom-right corner of the cell, inside its border, away from the text
            got = img.getpixel((left + layer * cw + cw - 3, top + pos * ch + ch - 3))
            want = (round(255 - p * 222), round(255 - p * 153), round(255 - p * 83))
            assert all(abs(g - e) <= 1 for g, e in zip(got, want)), (layer, pos, got, want)


def test_svg_of_a_graph_has_every_node_and_escapes_text(tmp_path):
    areas = synthetic_areas(n_docs=300, n_layers=3, grid=4)
    g = mw.CoactivationGraph(areas)
    root = ET.parse(g.save_svg(tmp_path / "g.svg")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == len(g.x)
    assert len(root.findall(f"{ns}line")) == min(len(g.edge_source), 5000)
    h = mw.TokenHeat(["<b>", "&"], [1.0, -1.0])
    texts = [t.text for t in ET.parse(h.save_svg(tmp_path / "h.svg")).getroot().iter(f"{ns}text")]
    assert "<b>" in texts and "&" in texts


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
