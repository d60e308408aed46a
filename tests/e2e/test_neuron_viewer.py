"""NeuronViewer in JupyterLab: navigation buttons move Python's neuron, the view follows the shared
selection set from Python, examples load on demand, clicking a token sets the selection."""

import re

import pytest

from .harness import (expect, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view,
                      write_notebook)

pytestmark = pytest.mark.e2e

NB = "neuron_viewer.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model, SAMPLE_TEXTS\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('llama')\n"
    "texts = SAMPLE_TEXTS + ['Tokens are text: <img src=x onerror=alert(1)> stays visible.']\n"
    "scan = mw.NeuronScan.run(lm, texts, k=4, layers=[1, 2], progress=False)\n"
    "sel = mw.Selection()\n"
    "w = mw.NeuronViewer(scan, lm, layer=1, neuron=2, selection=sel)\n"
    "w",
]


def _title(page):
    return page.locator(".mri-neuron_viewer .nv-title")


def test_neuron_viewer_navigation_selection_and_examples(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-neuron_viewer .nv-title")
    expect(_title(page)).to_contain_text("Layer 1 · Neuron 2")
    # examples arrive from Python (a @command called with anywidget's invoke) as coloured tokens
    tokens = page.locator(".mri-neuron_viewer .nv-top .nv-example").first.locator(".mri-tok")
    expect(tokens.first).to_be_visible(timeout=30000)
    assert page.locator(".mri-neuron_viewer .nv-hist rect").count() == 37
    assert page.locator(".mri-neuron_viewer img").count() == 0

    # next button: the view shows neuron 3 and Python's w.neuron follows (and the selection)
    page.locator(".mri-neuron_viewer .nv-next").click()
    expect(_title(page)).to_contain_text("Layer 1 · Neuron 3")
    wait_for_python(jupyter_server, NB, "(w.neuron, sel.neuron)", (3, 3))
    page.locator(".mri-neuron_viewer .nv-prev").click()
    wait_for_python(jupyter_server, NB, "w.neuron", 2)

    # the shared selection set from Python moves the view
    kernel_exec(jupyter_server, NB, "sel.neuron = 5")
    expect(_title(page)).to_contain_text("Layer 1 · Neuron 5")
    kernel_exec(jupyter_server, NB, "sel.update(layer=2, neuron=7)")
    expect(_title(page)).to_contain_text("Layer 2 · Neuron 7")
    assert kernel_exec(jupyter_server, NB, "print(w.layer, w.neuron)").strip() == "2 7"

    # go-to
    page.locator(".mri-neuron_viewer .nv-neuron").fill("11")
    page.locator(".mri-neuron_viewer .nv-go").click()
    expect(_title(page)).to_contain_text("Layer 2 · Neuron 11")
    wait_for_python(jupyter_server, NB, "w.neuron", 11)

    # clicking a token sets the selection's position (with this layer and neuron)
    first = page.locator(".mri-neuron_viewer .nv-top .nv-example").first.locator(".mri-tok")
    expect(first.first).to_be_visible(timeout=30000)
    peak = page.locator(".mri-neuron_viewer .nv-top .nv-example").first.locator(".mri-tok.nv-peak")
    pos = int(peak.get_attribute("data-position"))
    peak.click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.neuron, sel.position)", (2, 11, pos))
    expect(peak).to_have_class(re.compile(r"\bmri-selected\b"))

    # channel switch from Python recolours the view in place
    kernel_exec(jupyter_server, NB, "w.channel = 'gate'")
    expect(page.locator(".mri-neuron_viewer .nv-channel.nv-on")).to_have_attribute("data-channel", "gate")
    page.locator(".mri-neuron_viewer .nv-channel[data-channel='mlp']").click()
    wait_for_python(jupyter_server, NB, "w.channel", "mlp")
    assert page.locator(".mri-neuron_viewer").count() == 1
    page.locator(".mri-neuron_viewer .nv-top .nv-example").first.locator(".mri-tok.nv-peak").hover()
    save_screenshot(page, "neuron_viewer")
    assert list(page.console_errors) == []
