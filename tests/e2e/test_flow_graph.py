"""FlowGraph in a real browser: hover tooltips, click a head / neuron -> shared selection, Python changes redraw."""

from __future__ import annotations

import pytest

from .harness import (
    ARTIFACTS_DIR,
    kernel_eval,
    kernel_exec,
    open_notebook,
    run_all,
    wait_for_python,
    wait_for_view,
    write_notebook,
)

NB = "flow_graph.ipynb"
CELLS = [
    "import mri_widgets as mw\n"
    "from mri_widgets.testing import tiny_model\n"
    "lm = tiny_model('gpt2')\n"
    "sel = mw.Selection()\n"
    "w = mw.FlowGraph(lm, 'The capital of France is', top_heads=3, top_neurons=4, bottom_neurons=1,\n"
    "                 selection=sel)\n"
    "w",
]

CY = "document.querySelector('.mri-graph_view').__cy"


def _settled(page):
    """Wait until the notebook has stopped scrolling (JupyterLab scrolls to a clicked cell's output)."""
    top = None
    for _ in range(50):
        now = page.evaluate(f"() => {CY}.container().getBoundingClientRect().top")
        if now == top:
            return
        top = now
        page.wait_for_timeout(100)


def _focus(page, node_id):
    """Zoom onto a cytoscape node and return its client coordinates."""
    _settled(page)
    return page.evaluate(
        f"""(id) => {{
          const cy = {CY};
          const n = cy.getElementById(id);
          cy.zoom({{level: 1.6, renderedPosition: n.renderedPosition()}});
          cy.center(n);
          const p = n.renderedPosition();
          const r = cy.container().getBoundingClientRect();
          return [r.left + p.x, r.top + p.y];
        }}""",
        node_id,
    )


def test_flow_graph_click_head_and_neuron_sets_selection(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-graph_view .mri-graph-canvas canvas")
    n_nodes = int(kernel_eval(jupyter_server, NB, "len(w.nodes)"))
    page.wait_for_function(f"() => {CY} && {CY}.nodes('.node').length === {n_nodes}")
    assert "prediction" in page.locator(".mri-graph_view .mri-title").inner_text()

    # readable at first sight: the canvas has the automatic height, the first view keeps labels >= ~10 px
    # and starts at the top with the first layer's header in sight; the gallery shows that first view
    height = int(kernel_eval(jupyter_server, NB, "w.data['height']"))
    min_zoom = float(kernel_eval(jupyter_server, NB, "w.data['min_zoom']"))
    label_size = float(kernel_eval(jupyter_server, NB, "w.data['label_size']"))
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    view = page.evaluate(f"""() => {{
      const cy = {CY};
      const a = cy.getElementById('a0'), p = a.renderedPosition();
      return {{zoom: cy.zoom(), h: cy.height(), w: cy.width(), header: a.data('label'), x: p.x, y: p.y,
               fit: Math.min((cy.width() - 48) / cy.elements().boundingBox().w,
                             (cy.height() - 48) / cy.elements().boundingBox().h)}};
    }}""")
    assert abs(view["h"] - height) <= 2 and 360 <= height <= 720
    assert view["zoom"] >= min_zoom - 1e-6 and label_size * view["zoom"] >= 10
    assert view["fit"] < min_zoom  # the whole graph would be too small to read: it starts zoomed in
    assert view["header"] == "layer 1" and 0 <= view["x"] < view["w"] and 0 <= view["y"] < 60
    page.mouse.move(5, 5)
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.locator(".mri-graph_view").screenshot(path=str(ARTIFACTS_DIR / "flow_graph.png"))

    # the largest head of the last layer: hover shows its top tokens and the target rank
    head = int(kernel_eval(jupyter_server, NB,
                           "[w.graph.nodes[n]['head'] for n in w.nodes if w.graph.nodes[n]['kind'] == 'head_out' "
                           "and w.graph.nodes[n]['layer'] == 2 and w.graph.nodes[n]['rank'] == 0][0]"))
    idx = int(kernel_eval(jupyter_server, NB, f"w.nodes.index('L2/h{head}/out')"))
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    x, y = _focus(page, f"n{idx}")
    page.mouse.move(x, y)
    tip = page.locator(".mri-graph_view .mri-tooltip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    top1 = kernel_eval(jupyter_server, NB, f"w.graph.nodes['L2/h{head}/out']['top_tokens'][0]").strip("'\"")
    rank = kernel_eval(jupyter_server, NB, f"w.graph.nodes['L2/h{head}/out']['target_rank']")
    assert f"head {head} out" in text and f"rank {rank}" in text and top1 in text
    assert text.count("%") >= 5  # the top-5 tokens with their probabilities

    # click it: the shared selection is layer 2, that head; the node is outlined
    page.mouse.click(x, y)
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.head)", (2, head))
    page.wait_for_function(f"() => {CY}.getElementById('n{idx}').hasClass('sel')")

    # click a neuron's value node: layer + neuron
    neuron = int(kernel_eval(jupyter_server, NB,
                             "[w.graph.nodes[n]['neuron'] for n in w.nodes if w.graph.nodes[n]['kind'] == "
                             "'neuron_value' and w.graph.nodes[n]['layer'] == 1 and w.graph.nodes[n]['rank'] == 0 "
                             "and w.graph.nodes[n]['group'] == 'top'][0]"))
    nidx = int(kernel_eval(jupyter_server, NB, f"w.nodes.index('L1/n{neuron}/value')"))
    x, y = _focus(page, f"n{nidx}")
    page.mouse.click(x, y)
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.neuron)", (1, neuron))

    # the canvas moved down by something above it (no scroll, no resize): clicks still land on their node
    kernel_exec(jupyter_server, NB, "sel.update(layer=None, head=None, neuron=None)")
    page.evaluate("() => { const b = document.querySelector('.mri-graph_view .mri-graph-box');"
                  " b.parentNode.insertBefore(Object.assign(document.createElement('div'),"
                  " {className: 'shift', style: 'height: 45px'}), b); }")
    x, y = _focus(page, f"n{idx}")
    page.mouse.click(x, y)
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.head)", (2, head))
    page.evaluate("() => document.querySelector('.mri-graph_view .shift').remove()")

    # selection set in Python outlines the matching head nodes in the view
    kernel_exec(jupyter_server, NB, f"sel.update(layer=2, head={head}, neuron=None)")
    page.wait_for_function(f"() => {CY}.getElementById('n{idx}').hasClass('sel')")

    # position and target changed from Python: the view redraws with the new graph
    kernel_exec(jupyter_server, NB, "w.position = 2")
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-title').textContent.includes('position 2')")
    n2 = int(kernel_eval(jupyter_server, NB, "len(w.nodes)"))
    page.wait_for_function(f"() => {CY}.nodes('.node').length === {n2}")
    kernel_exec(jupyter_server, NB, "w.target = ' capital'; w.position = -1")
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-title').textContent.includes(\"rank of ' capital'\")")

    # "fit" shows the whole graph (too small to read), "start" comes back to the first view
    page.locator(".mri-graph_view button.mri-fit").click()
    page.wait_for_function(f"() => {CY}.zoom() < {min_zoom - 0.05}")
    page.locator(".mri-graph_view button.mri-home").click()
    page.wait_for_function(f"() => Math.abs({CY}.zoom() - {view['zoom']}) < 1e-6")
    assert list(page.console_errors) == []


_BUNDLE = __import__("pathlib").Path(__file__).resolve().parents[2] / "mri_widgets" / "static" / "graph_view.js"


@pytest.mark.skipif("mri-controls" not in _BUNDLE.read_text(encoding="utf-8"),
                    reason="GraphView has no data.controls toolbar yet (requested from its owner)")
def test_flow_graph_toolbar_changes_position_target_layers(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, "flow_toolbar.ipynb", CELLS)
    open_notebook(page, jupyter_server, "flow_toolbar.ipynb")
    run_all(page)
    wait_for_view(page, ".mri-graph_view .mri-controls select.mri-control-position")
    nb = "flow_toolbar.ipynb"
    # position: a select of the prompt's tokens
    page.locator(".mri-graph_view select.mri-control-position").select_option(label="2 ' of'")
    wait_for_python(jupyter_server, nb, "(w.position, w.graph.graph['position'])", (2, 2))
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-title').textContent.includes('position 2')")
    # target: a token typed in
    page.locator(".mri-graph_view input.mri-control-target").fill(" capital")
    page.locator(".mri-graph_view input.mri-control-target").press("Enter")
    wait_for_python(jupyter_server, nb, "w.graph.graph['target']", " capital")
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-title').textContent.includes(\"rank of ' capital'\")")
    assert page.locator(".mri-graph_view input.mri-control-target").input_value() == " capital"
    # layers: a range typed in
    page.locator(".mri-graph_view input.mri-control-layers").fill("0-2")
    page.locator(".mri-graph_view input.mri-control-layers").press("Enter")
    wait_for_python(jupyter_server, nb, "w.graph.graph['layers']", [0, 1, 2])
    n = int(kernel_eval(jupyter_server, nb, "len(w.nodes)"))
    page.wait_for_function(f"() => {CY}.nodes('.node').length === {n}")
    assert page.locator(".mri-graph_view input.mri-control-layers").input_value() == "0-2"
    # a bad target shows the error in the view and keeps the graph
    page.locator(".mri-graph_view input.mri-control-target").fill(" capital city")
    page.locator(".mri-graph_view input.mri-control-target").press("Enter")
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-notice')"
                           " && document.querySelector('.mri-graph_view .mri-notice').textContent.includes('not one')")
    assert kernel_eval(jupyter_server, nb, "w.graph.graph['target']") == "' capital'"
    assert list(page.console_errors) == []
