"""LensTable under interventions in JupyterLab: steer from Python, the before/after panel shows
Python's numbers and follows the clicked position, the "diff" colouring from the toolbar, hover
shows a cell's clean and intervened values, toggling the intervention off returns to the clean run."""

import ast

import pytest

from .harness import (expect, kernel_eval, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python,
                      wait_for_view, write_notebook)

pytestmark = pytest.mark.e2e

NB = "lens_interventions.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model\n"
    "import mri_widgets as mw, torch\n"
    "lm = tiny_model('gpt_neox')\n"
    "sel = mw.Selection()\n"
    "iv = mw.Interventions(model=lm, selection=sel)\n"
    "iv",
    "w = mw.LensTable(lm, 'The capital of France is Paris. The cat sat on the mat.', selection=sel,\n"
    "                 interventions=iv, height=300)\n"
    "w",
]

CMP = ".mri-lens_table .mri-lens-cmpbox .mri-compare"


def _cell(page, layer, pos):
    return page.locator(f".mri-lens_table .mri-lens-cell[data-layer='{layer}'][data-pos='{pos}']")


def _check_panel(page, server):
    """The panel shows exactly the numbers of Python's ``w.comparison``."""
    pos = int(kernel_eval(server, NB, "w.comparison['position']"))
    expect(page.locator(CMP)).to_have_attribute("data-position", str(pos))
    for run in ("clean", "intervened"):
        prob = float(kernel_eval(server, NB, f"w.comparison['{run}']['prob']"))
        rank = int(kernel_eval(server, NB, f"w.comparison['{run}']['rank']"))
        cell = page.locator(f"{CMP} [data-run='{run}'][data-field='prob']")
        assert float(cell.get_attribute("data-value")) == pytest.approx(prob, rel=1e-12)
        assert cell.inner_text() == f"{100 * prob:.{4 if prob < 0.001 else 2}f}%"
        expect(page.locator(f"{CMP} [data-run='{run}'][data-field='rank']")).to_have_text(str(rank))
        pred = kernel_eval(server, NB, f"w.comparison['{run}']['prediction']")
        assert page.locator(f"{CMP} [data-run='{run}'][data-field='prediction']").get_attribute("data-value") \
            == ast.literal_eval(pred)
    return pos


def test_lens_table_before_after_diff_and_toggle(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    wait_for_view(page, ".mri-interventions .mri-iv-empty")
    metric = page.locator(".mri-lens_table select.mri-lens-metric")
    expect(page.locator(CMP)).to_have_count(0)  # nothing enabled: the clean run alone, no diff option
    assert "diff" not in metric.locator("option").evaluate_all("os => os.map((o) => o.value)")

    # a big steering vector from Python: the table recomputes under it, the panel appears
    kernel_exec(jupyter_server, NB,
                "v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))\n"
                "iv.add(mw.Steer('resid', vector=v, alpha=30.0, layers=[1]))")
    expect(page.locator(CMP)).to_be_visible(timeout=30000)
    expect(page.locator(".mri-lens_table .mri-lens-under")).to_have_text("[under interventions]")
    S = int(kernel_eval(jupyter_server, NB, "len(w.result.tokens)"))
    assert _check_panel(page, jupyter_server) == S - 1  # the last position by default
    assert kernel_eval(jupyter_server, NB, "w.comparison['intervened']['rank'] > 0") == "True"  # the steer moved it

    # click a cell: the selection goes to Python, the panel follows the position with Python's numbers
    _cell(page, 2, 3).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (2, 3))
    expect(page.locator(CMP)).to_have_attribute("data-position", "3")
    _check_panel(page, jupyter_server)

    # colour by the change of the target's probability, from the view's toolbar
    metric.select_option("diff")
    wait_for_python(jupyter_server, NB, "w.metric", "diff")
    expect(page.locator(".mri-lens_table .mri-lens-legend").first).to_contain_text("(p fell)")
    # the most changed cell is fully saturated on the diverging scale (blue: fell, red: rose)
    layer, pos, sign = (int(x) for x in kernel_exec(
        jupyter_server, NB,
        "import numpy as np; d = np.nan_to_num(w.diff); i = np.unravel_index(np.abs(d).argmax(), d.shape); "
        "print(int(i[0]), int(i[1]), int(np.sign(d[i])))").split())
    want_bg = "rgb(178, 24, 43)" if sign > 0 else "rgb(33, 102, 172)"
    _cell(page, layer, pos).scroll_into_view_if_needed()
    expect(_cell(page, layer, pos)).to_have_css("background-color", want_bg)

    # hover a cell: the tooltip gives its clean and intervened values, as Python has them
    _cell(page, 2, 3).hover()
    tip = page.locator(".mri-lens_table .mri-tooltip")
    expect(tip).to_be_visible()
    want = {
        ("clean", "prob"): float(kernel_eval(jupyter_server, NB, "float(w.clean_result.target_probs[2, 3])")),
        ("clean", "rank"): float(kernel_eval(jupyter_server, NB, "int(w.clean_result.target_ranks[2, 3])")),
        ("intervened", "prob"): float(kernel_eval(jupyter_server, NB, "float(w.result.target_probs[2, 3])")),
        ("intervened", "rank"): float(kernel_eval(jupyter_server, NB, "int(w.result.target_ranks[2, 3])")),
        ("diff", "prob"): float(kernel_eval(jupyter_server, NB, "float(w.diff[2, 3])")),
    }
    for (run, field), value in want.items():
        got = float(tip.locator(f"[data-run='{run}'][data-field='{field}']").get_attribute("data-value"))
        assert got == pytest.approx(value, rel=1e-6, abs=1e-9), (run, field)
    expect(tip).to_contain_text(f"clean p = {want[('clean', 'prob')]:.4f}")
    save_screenshot(page, "lens_table_interventions")

    # toggle the steer off in the Interventions view: the clean run again, no panel, metric back to prob
    page.mouse.move(0, 0)
    page.locator(".mri-interventions .mri-iv-entry input.mri-iv-toggle").uncheck()
    wait_for_python(jupyter_server, NB, "(w.metric, w.comparison, w.result is w.clean_result)", ("prob", {}, True),
                    timeout=30)
    expect(page.locator(CMP)).to_have_count(0)
    expect(metric).to_have_value("prob")
    assert "diff" not in metric.locator("option").evaluate_all("os => os.map((o) => o.value)")
    expect(page.locator(".mri-lens_table .mri-lens-under")).to_have_count(0)
    assert list(page.console_errors) == []
