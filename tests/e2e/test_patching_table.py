"""PatchingTable in JupyterLab: hover shows the effect and metrics, a click sets the selection in
Python (layer + position, layer + head), Python's selection moves the pinned cell."""

import pytest

from .harness import (expect, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view,
                      write_notebook)

pytestmark = pytest.mark.e2e

NB = "patching_table.ipynb"
CELLS = [
    "import numpy as np\n"
    "import mri_widgets as mw\n"
    "from mri_widgets.analysis.patching import PatchingResult\n"
    "clean = ['<img src=x onerror=alert(1)>', ' The', ' Eiff', 'el', ' Tower', ' is', ' in']\n"
    "corrupt = ['<img src=x onerror=alert(1)>', ' The', ' Col', 'osse', 'um', ' is', ' in']\n"
    "L, S = 9, len(corrupt)\n"
    "l, s = np.mgrid[0:L, 0:S]\n"
    "# the subject's last token matters early, the last position late; a little negative noise\n"
    "eff = (np.exp(-((s - 4) ** 2) - ((l - 3) / 2.5) ** 2) + (s == S - 1) * (l / (L - 1)) ** 2\n"
    "       - 0.15 * np.exp(-((s - 2) ** 2) - ((l - 6) / 1.5) ** 2)).astype(np.float32)\n"
    "res = PatchingResult(effect=eff, raw=(-1.25 + 3.75 * eff).astype(np.float32), clean_metric=2.5,\n"
    "    corrupt_metric=-1.25, site='resid', kind='position', layers=np.arange(L),\n"
    "    layer_names=['emb'] + [str(i) for i in range(1, L)], columns=corrupt, clean_tokens=clean,\n"
    "    corrupt_tokens=corrupt, metric='logit_diff', answer=' Paris', wrong=' Rome', positions=np.arange(S),\n"
    "    model_name='hand-made')\n"
    "sel = mw.Selection()\n"
    "w = mw.PatchingTable(res, selection=sel)\n"
    "w",
    "heads = PatchingResult(effect=np.linspace(-1, 1, 3 * 4, dtype=np.float32).reshape(3, 4),\n"
    "    raw=np.zeros((3, 4), np.float32), clean_metric=2.5, corrupt_metric=-1.25, site='z', kind='head',\n"
    "    layers=np.arange(5, 8), layer_names=['5', '6', '7'], columns=['h0', 'h1', 'h2', 'h3'],\n"
    "    clean_tokens=clean, corrupt_tokens=corrupt)\n"
    "wh = mw.PatchingTable(heads, selection=sel)\n"
    "wh",
]

TABLE = ".mri-patching_table"


def _cell(page, row, col, nth=0):
    return page.locator(TABLE).nth(nth).locator(f".mri-patch-cell[data-row='{row}'][data-col='{col}']")


def test_patching_table_hover_click_and_python(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, f"{TABLE} .mri-patch-cell")
    page.locator(TABLE).nth(1).locator(".mri-patch-cell").first.wait_for(state="visible")
    # token strings are text: the prompt's <img ...> is shown, not parsed
    assert page.locator(f"{TABLE} img").count() == 0
    expect(page.locator(TABLE).first.locator(".mri-patch-colhead")).to_contain_text("<img src=x")
    expect(page.locator(TABLE).first.locator(".mri-toolbar")).to_contain_text("0 = corrupted run")

    # hover a cell: the tooltip shows layer, token, effect, raw metric and both unpatched metrics
    eff, raw = kernel_exec(jupyter_server, NB, "print(f'{res.effect[3, 4]:.3f} {res.raw[3, 4]:.3f}')").split()
    _cell(page, 3, 4).hover()
    tip = page.locator(TABLE).first.locator(".mri-tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("layer 3 (after block 3) · resid")
    expect(tip).to_contain_text('#4 "um" (clean " Tower")')
    expect(tip).to_contain_text(f"effect {eff}")
    expect(tip).to_contain_text(f'logit_diff (" Paris" − " Rome") patched {raw}')
    expect(tip).to_contain_text("clean 2.500 · corrupted -1.250")
    assert eff == "1.000"  # the peak of the hand-made effect

    # click pins the cell and sets the selection in Python; the head table keeps its layer row
    _cell(page, 6, 2).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (6, 2))
    assert "mri-patch-pinned" in (_cell(page, 6, 2).get_attribute("class") or "")
    wait_for_python(jupyter_server, NB, "w.selected", (6, 2))
    page.keyboard.press("ArrowUp")
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (5, 2))

    # a head table: a click sets layer + head
    _cell(page, 2, 3, nth=1).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.head)", (7, 3))

    # Python -> view: the selection moves the pinned cell of the position table
    kernel_exec(jupyter_server, NB, "sel.update(layer=8, position=6)")
    page.wait_for_function(
        "() => { const c = document.querySelector('.mri-patching_table .mri-patch-cell.mri-patch-pinned');"
        " return c?.dataset.row === '8' && c?.dataset.col === '6'; }")
    assert page.locator(TABLE).first.locator(".mri-patch-pinned").count() == 1
    kernel_exec(jupyter_server, NB, "w.scale = 'max'")
    expect(page.locator(TABLE).first.locator("select.mri-patch-scale")).to_have_value("max")
    _cell(page, 3, 4).hover()
    save_screenshot(page, "patching_table")
    assert list(page.console_errors) == []
