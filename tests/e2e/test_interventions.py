"""Interventions in JupyterLab: select a head in the HeadMap and ablate it, toggle it in the
Interventions view, the FlowGraph's before/after numbers equal Python's."""

import pytest

from .harness import (expect, kernel_eval, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python,
                      wait_for_view, write_notebook)

pytestmark = pytest.mark.e2e

NB = "interventions.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model, SAMPLE_TEXTS\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt2')\n"
    "sel = mw.Selection()\n"
    "iv = mw.Interventions(model=lm, selection=sel)\n"
    "iv",
    "hm = mw.HeadMap(lm, SAMPLE_TEXTS[:3], selection=sel, interventions=iv)\n"
    "hm",
    "fg = mw.FlowGraph(lm, 'The capital of France is', top_heads=3, top_neurons=4, bottom_neurons=1,\n"
    "                  selection=sel, interventions=iv, height=360)\n"
    "fg",
]

CMP = ".mri-graph_view .mri-compare"


def _cell(page, run, field):
    return page.locator(f"{CMP} [data-run='{run}'][data-field='{field}']")


def _check_comparison(page, server):
    """The panel shows exactly the numbers Python computed."""
    for run in ("clean", "intervened"):
        prob = float(kernel_eval(server, NB, f"fg.comparison['{run}']['prob']"))
        rank = int(kernel_eval(server, NB, f"fg.comparison['{run}']['rank']"))
        expect(_cell(page, run, "rank")).to_have_text(str(rank))
        assert float(_cell(page, run, "prob").get_attribute("data-value")) == pytest.approx(prob, rel=1e-12)
        assert _cell(page, run, "prob").inner_text() == f"{100 * prob:.{4 if prob < 0.001 else 2}f}%"


def test_ablate_a_head_toggle_it_and_compare_before_and_after(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-interventions .mri-iv-empty")
    wait_for_view(page, ".mri-head_map circle.mri-hm-pt")
    wait_for_view(page, ".mri-graph_view .mri-graph-canvas canvas")
    expect(page.locator(CMP)).to_have_count(0)  # nothing ablated: no comparison

    # select a head in the HeadMap: its ablate buttons appear; mean needs a corpus
    bar = page.locator(".mri-head_map .mri-ablate")
    expect(bar).to_be_hidden()
    page.locator(".mri-head_map circle.mri-hm-pt[data-layer='2'][data-head='1']").click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.head)", (2, 1))
    expect(bar).to_be_visible()
    expect(bar.locator(".mri-ablate-target")).to_have_text("head L2.H1:")
    expect(bar.locator(".mri-ablate-mean")).to_be_disabled()
    assert "corpus" in bar.locator(".mri-ablate-mean").get_attribute("title")
    bar.locator(".mri-ablate-zero").click()
    wait_for_python(jupyter_server, NB, "[(it.target, it.mode, it.enabled) for it in iv.items]",
                    [(("head", 2, 1), "zero", True)], timeout=30)
    expect(bar.locator(".mri-ablate-zero.mri-on")).to_have_count(1)
    bar.locator(".mri-ablate-zero").click()  # again: not added twice
    page.wait_for_timeout(300)
    assert kernel_eval(jupyter_server, NB, "len(iv)") == "1"

    # the list shows it; the FlowGraph shows the clean run beside the ablated one, Python's numbers
    entry = page.locator(".mri-interventions .mri-iv-entry")
    expect(entry).to_have_count(1)
    expect(entry.locator(".mri-iv-label")).to_have_text("ablate head L2.H1 (zero)")
    expect(page.locator(CMP)).to_be_visible(timeout=30000)
    _check_comparison(page, jupyter_server)
    expect(page.locator(f"{CMP} .mri-cmp-under")).to_have_text("under: ablate head L2.H1 (zero)")
    assert "[under 1 intervention]" in page.locator(".mri-graph_view .mri-title").first.inner_text()
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    save_screenshot(page, "interventions")

    # toggle it off in the Interventions view: Python sees it, the comparison goes away
    entry.locator("input.mri-iv-toggle").uncheck()
    wait_for_python(jupyter_server, NB, "iv.items[0].enabled", False)
    assert kernel_eval(jupyter_server, NB, "iv.active") == "[]"
    expect(page.locator(CMP)).to_have_count(0, timeout=30000)
    expect(page.locator(".mri-head_map .mri-ablate-zero.mri-on")).to_have_count(0)
    entry.locator("input.mri-iv-toggle").check()
    wait_for_python(jupyter_server, NB, "iv.items[0].enabled", True)
    expect(page.locator(CMP)).to_be_visible(timeout=30000)

    # Python drives it too: a neuron from Python, then the FlowGraph's own button for the selected neuron
    kernel_exec(jupyter_server, NB, "iv.ablate(('head', 1, 0))")
    expect(entry).to_have_count(2)
    kernel_exec(jupyter_server, NB, "sel.update(layer=1, neuron=5)")
    fbar = page.locator(".mri-graph_view .mri-ablate")
    expect(fbar.locator(".mri-ablate-target")).to_have_text("neuron L1.N5:")
    fbar.locator(".mri-ablate-zero").click()
    wait_for_python(jupyter_server, NB, "[it.target for it in iv.items]",
                    [("head", 2, 1), ("head", 1, 0), ("neuron", 1, 5)], timeout=30)
    expect(page.locator(f"{CMP} .mri-cmp-under")).to_contain_text("neuron L1.N5", timeout=30000)
    _check_comparison(page, jupyter_server)

    # remove one with its button
    entry.nth(1).locator(".mri-iv-remove").click()
    wait_for_python(jupyter_server, NB, "[it.label for it in iv.items]",
                    ["ablate head L2.H1 (zero)", "ablate neuron L1.N5 (zero)"])
    expect(entry).to_have_count(2)
    page.locator(".mri-interventions").scroll_into_view_if_needed()
    save_screenshot(page, "interventions_list")
    assert list(page.console_errors) == []
