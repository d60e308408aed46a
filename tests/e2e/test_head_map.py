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


NB_LONG = "head_map_long.ipynb"
CELLS_LONG = [
    "from mri_widgets.testing import tiny_model, SAMPLE_TEXTS\n"
    "import mri_widgets as mw, json\n"
    "lm = tiny_model('gpt2')\n"
    "sel = mw.Selection()\n"
    "long = ' '.join(SAMPLE_TEXTS * 4)\n"
    "w = mw.HeadMap(lm, [long], selection=sel, max_length=240)\n"
    "full = lm.capture([long], ('attn',), max_length=240)['attn'][0]\n"
    "n = int(full.shape[-1])\n"
    "w",
]


def test_head_map_long_text_overview_zoom_matches_python(jupyter_server, page):
    """A text longer than the whole-pattern limit: overview canvas, a zoomed window whose cells are
    the exact attention Python computes, moved by clicking the overview and by the arrows."""
    write_notebook(jupyter_server.root_dir, NB_LONG, CELLS_LONG)
    open_notebook(page, jupyter_server, NB_LONG)
    run_all(page)
    wait_for_view(page, ".mri-head_map circle.mri-hm-pt")
    n = int(kernel_exec(jupyter_server, NB_LONG, "print(n)").strip())
    assert n == 240
    _point(page, 1, 2).click()
    wait_for_python(jupyter_server, NB_LONG, "(sel.layer, sel.head)", (1, 2))
    overview = page.locator(".mri-head_map canvas.mri-hm-overview")
    expect(overview).to_have_attribute("data-n", "240", timeout=20000)
    block = int(overview.get_attribute("data-block"))
    assert block == 2
    # the first window: queries and keys 0..63, cell by cell (no 128-token cut anywhere)
    cells = page.locator(".mri-head_map .mri-hm-tile rect.mri-hm-cell")
    expect(cells).to_have_count(64 * 64, timeout=20000)
    # click the overview near the bottom right: the window moves there, clamped inside the pattern
    page.locator(".mri-head_map canvas.mri-hm-window").scroll_into_view_if_needed()
    box = page.locator(".mri-head_map canvas.mri-hm-window").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.8)
    heat = page.locator(".mri-head_map .mri-hm-tile svg.mri-hm-heatmap")
    expect(heat).not_to_have_attribute("data-q0", "0", timeout=20000)
    q0, k0 = int(heat.get_attribute("data-q0")), int(heat.get_attribute("data-k0"))
    assert q0 > 100 and k0 == n - 64
    expect(page.locator(".mri-head_map .mri-hm-where")).to_contain_text(f"queries {q0}–{q0 + 63}")
    # the tile shown is Python's: every cell's colour and a few hovered values
    fills = page.locator(".mri-head_map .mri-hm-tile rect.mri-hm-cell").evaluate_all(
        "els => els.map(e => [Number(e.dataset.q), Number(e.dataset.k)])")
    assert fills[0] == [q0, k0] and fills[-1] == [q0 + 63, k0 + 63] and len(fills) == 64 * 64
    tip = page.locator(".mri-head_map .mri-tooltip")
    for dq, dk in ((0, 0), (40, 5), (63, 63)):
        page.locator(f".mri-head_map .mri-hm-tile rect.mri-hm-cell[data-q='{q0 + dq}'][data-k='{k0 + dk}']").hover()
        want = kernel_exec(jupyter_server, NB_LONG, f"v = float(full[1, 2, {q0 + dq}, {k0 + dk}]); "
                           "print(f'{v:.2e}' if v and (abs(v) < 1e-3) else f'{v:.3f}')").strip()
        expect(tip).to_contain_text(f"attention: {want}")
    tile = kernel_exec(jupyter_server, NB_LONG, f"t = w.pattern_tile(1, 2, {q0}, {q0 + 64}, {k0}, {k0 + 64}); "
                       f"print(float(abs(t['attn'] - full[1, 2, {q0}:{q0 + 64}, {k0}:{k0 + 64}].numpy()).max()))")
    assert float(tile) < 1e-6
    # the arrows pan by half a window
    page.locator(".mri-head_map button.mri-hm-pan", has_text="↑").click()
    expect(heat).to_have_attribute("data-q0", str(q0 - 32), timeout=20000)
    page.locator(".mri-head_map .mri-hm-tile rect.mri-hm-cell").nth(70).hover()
    page.locator(".mri-head_map .mri-hm-long").scroll_into_view_if_needed()
    save_screenshot(page, "head_map_long")
    assert list(page.console_errors) == []
