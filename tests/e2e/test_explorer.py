"""Explorer in JupyterLab: a click in one view moves the others, in the front end and in Python."""

import pytest

from .harness import kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view, write_notebook

pytestmark = pytest.mark.e2e

NB = "explorer.ipynb"
CELLS = [
    "import mri_widgets as mw\n"
    "from mri_widgets.testing import tiny_model\n"
    "lm = tiny_model('llama')\n"
    "corpus = mw.datasets.emotions().subset(list(range(0, 440, 11)))\n"
    "ex = mw.Explorer(lm, corpus, prompt='The capital of France is', scan_layers=[0, 1, 2])\n"
    "ex.run_scan()\n"
    "ex",
]


def test_explorer_links_every_view(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page, timeout=240)
    for css in (".mri-lens_table .mri-lens-cell", ".mri-layer_grid", ".mri-graph_view", ".mri-neuron_viewer",
                ".mri-head_map .mri-hm-pt"):
        wait_for_view(page, css, timeout=60)
    # a click in the lens table sets the shared selection ...
    page.locator(".mri-lens_table .mri-lens-cell[data-layer='2'][data-pos='3']").click()
    wait_for_python(jupyter_server, NB, "(ex.selection.layer, ex.selection.position)", (2, 3))
    # ... the head map rings layer 2's heads in the front end, the flow graph re-centres through Python
    page.wait_for_function("() => document.querySelectorAll('.mri-head_map .mri-hm-layer').length > 0")
    wait_for_python(jupyter_server, NB, "ex.views['flow'].position", 3)
    # and the status line (Python-driven, as on Colab) shows it
    page.wait_for_function("() => document.querySelector('.mri-explorer-selection')?.textContent.includes('layer 2')")
    # a selection set from Python reaches the neuron viewer
    kernel_exec(jupyter_server, NB, "ex.selection.update(layer=1, neuron=7)")
    wait_for_python(jupyter_server, NB, "(ex.views['neurons'].layer, ex.views['neurons'].neuron)", (1, 7))
    page.locator(".mri-lens_table").scroll_into_view_if_needed()
    save_screenshot(page, "explorer")
    assert list(page.console_errors) == []
