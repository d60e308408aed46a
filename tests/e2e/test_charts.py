"""bqplot charts in JupyterLab: a LayerTrace linked to a LensTable through a shared Selection, and an
IntSlider jslinked to the selection's layer."""

import pytest

from .harness import (expect, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python,
                      wait_for_view, write_notebook)

pytestmark = pytest.mark.e2e

NB = "charts.ipynb"
CELLS = [
    "import ipywidgets as ipw\n"
    "from mri_widgets.testing import tiny_model\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt2')\n"
    "sel = mw.Selection()\n"
    "table = mw.LensTable(lm, 'The capital of France is Paris and the cat sat', selection=sel, height=240)\n"
    "trace = mw.LayerTrace(table, selection=sel, metrics=('prob', 'entropy'), height=200)\n"
    "sel.layer = 0\n"
    "slider = ipw.IntSlider(value=0, min=0, max=len(table.layer_names) - 1, description='layer')\n"
    "ipw.jslink((sel, 'layer'), (slider, 'value'))\n"
    "ipw.VBox([slider, table, trace])",
]


def _cell(page, layer, pos):
    return page.locator(f".mri-lens_table .mri-lens-cell[data-layer='{layer}'][data-pos='{pos}']")


def _pinned(page, layer, pos):
    page.wait_for_function(
        "([l, p]) => { const c = document.querySelector('.mri-lens-cell.mri-lens-pinned');"
        " return !!c && c.dataset.layer === String(l) && c.dataset.pos === String(p); }", arg=[layer, pos])


def test_layer_trace_lens_table_and_slider_share_one_selection(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    wait_for_view(page, ".mri-layer-trace .dot.element")
    legend = page.locator(".mri-layer-trace .legendtext").first
    token = kernel_exec(jupyter_server, NB, "print(repr(table.result.tokens[3]))").strip()

    # click a lens cell: the selection moves and the chart shows that token
    _cell(page, 2, 3).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (2, 3))
    expect(legend).to_contain_text(f"3: {token}")
    wait_for_python(jupyter_server, NB, "trace.shown_positions()", [3])
    # the chart's line is the table's column of target probabilities at position 3
    wait_for_python(jupyter_server, NB,
                    "bool((abs(trace._marks['prob'][0].y.reshape(-1) - table.result.target_probs[:, 3]) < 1e-6).all())",
                    True)
    # the slider followed the selection (Python -> jslink in the front end)
    expect(page.locator(".widget-slider .widget-readout").first).to_have_text("2")

    # click a point of the chart: sel.layer changes in Python and the table's pinned cell moves
    dots = page.locator(".mri-layer-trace .bqplot.figure").first.locator(".dot.element")
    assert dots.count() == 4  # tiny gpt2: embeddings + 3 blocks
    dots.nth(1).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (1, 3))
    _pinned(page, 1, 3)
    expect(page.locator(".widget-slider .widget-readout").first).to_have_text("1")

    # the slider, jslinked to sel.layer, moves the selection (front end only, then Python)
    page.locator(".widget-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_for_python(jupyter_server, NB, "(sel.layer, trace.layer)", (3, 3))
    _pinned(page, 3, 3)
    # the chart's layer rule moved to layer 3
    wait_for_python(jupyter_server, NB, "trace._marks['prob'][2].x.tolist()", [3.0, 3.0])

    # Python -> chart: pin the last token beside the selected one
    kernel_exec(jupyter_server, NB, "trace.pinned = [-1]")
    expect(page.locator(".mri-layer-trace .bqplot.figure").first.locator(".legendtext")).to_have_count(2)
    page.wait_for_timeout(300)  # let bqplot's transitions end before the picture
    save_screenshot(page, "layer_trace")
    assert list(page.console_errors) == []
