"""HeadMap in JupyterLab: hover scores, click a head -> its pattern and the selection in Python,
selection from Python, example chooser, brush-picked heads both ways."""

import pytest

from .harness import (expect, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view,
                      write_notebook)

pytestmark = pytest.mark.e2e

NB = "head_map.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model, SAMPLE_TEXTS\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt2')\n"
    "sel = mw.Selection()\n"
    "texts = SAMPLE_TEXTS[:4] + ['<img src=x onerror=alert(1)> is text']\n"
    "w = mw.HeadMap(lm, texts, selection=sel)\n"
    "n0 = len(lm.capture([texts[0]], ('resid',)).tokens[0])\n"
    "w",
]


def _point(page, layer, head):
    return page.locator(f".mri-head_map circle.mri-hm-pt[data-layer='{layer}'][data-head='{head}']")


def test_head_map_click_pattern_selection_and_brush(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-head_map circle.mri-hm-pt")
    assert page.locator(".mri-head_map circle.mri-hm-pt").count() == 12  # 3 layers x 4 heads

    # hover: the head's scores
    _point(page, 1, 2).hover()
    tip = page.locator(".mri-head_map .mri-tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("L1 H2")
    expect(tip).to_contain_text("entropy")

    # click: selection in Python and the attention pattern of example 0
    _point(page, 2, 1).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.head)", (2, 1))
    n0 = int(kernel_exec(jupyter_server, NB, "print(n0)").strip())
    cells = page.locator(".mri-head_map rect.mri-hm-cell")
    expect(cells).to_have_count(n0 * n0, timeout=20000)
    expect(page.locator(".mri-head_map .mri-hm-pattern")).to_contain_text("Layer 2, head 1")
    expect(page.locator(".mri-head_map [data-ring='2,1']")).to_have_count(1)
    # hovering a cell names query and key
    cells.nth(n0 + 1).hover()
    expect(tip).to_contain_text("attention")

    # example chooser: another text (shown as text, never parsed as HTML)
    page.locator(".mri-head_map select.mri-hm-example").select_option("4")
    wait_for_python(jupyter_server, NB, "w.example", 4)
    expect(page.locator(".mri-head_map .mri-hm-qlabel").first).to_have_text("<")
    assert page.locator(".mri-head_map img").count() == 0

    # Python -> view: another head selected elsewhere is ringed and shown
    kernel_exec(jupyter_server, NB, "sel.update(layer=0, head=3)")
    expect(page.locator(".mri-head_map [data-ring='0,3']")).to_have_count(1)
    expect(page.locator(".mri-head_map .mri-hm-pattern")).to_contain_text("Layer 0, head 3")

    # brush over the whole scatter picks every head; Python sets picked back
    box = page.locator(".mri-head_map svg.mri-hm-scatter").bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2, steps=4)
    page.mouse.up()
    wait_for_python(jupyter_server, NB, "len(w.picked)", 12)
    kernel_exec(jupyter_server, NB, "w.picked = [[1, 1], [2, 0]]")
    expect(page.locator(".mri-head_map .mri-hm-picked")).to_have_count(2)
    expect(page.locator(".mri-head_map .mri-status")).to_contain_text("2 heads picked")

    _point(page, 1, 1).hover()
    save_screenshot(page, "head_map")
    assert list(page.console_errors) == []
