"""LayerGrid + CoactivationGraph in a real browser: linked selection both ways, paths, tooltips, speed."""

from __future__ import annotations

import json
import time

from .harness import (
    ARTIFACTS_DIR,
    kernel_eval,
    kernel_exec,
    open_notebook,
    run_all,
    save_screenshot,
    wait_for_python,
    wait_for_view,
    write_notebook,
)

NB = "regions.ipynb"
CELLS = [
    "import mri_widgets as mw\n"
    "from mri_widgets.testing import tiny_model\n"
    "from mri_widgets.datasets import emotions\n"
    "areas = mw.ActivationAreas(tiny_model('gpt2'), emotions()[::4], grid=5, progress=False)\n"
    "sel = mw.Selection()\n"
    "grid = mw.LayerGrid(areas, mode='all', selection=sel)\n"
    "grid",
    "graph = mw.CoactivationGraph(areas, selection=sel, height=420)\n"
    "graph",
]

CY = "document.querySelector('.mri-graph_view').__cy"


def _node_xy(page, node_id):
    """Client coordinates of a cytoscape node."""
    return page.evaluate(
        f"""(id) => {{
          const cy = {CY};
          const p = cy.getElementById(id).renderedPosition();
          const r = cy.container().getBoundingClientRect();
          return [r.left + p.x, r.top + p.y];
        }}""",
        node_id,
    )


def test_layer_grid_click_highlights_paths_in_graph(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-layer_grid rect.mri-cell")
    wait_for_view(page, ".mri-graph_view .mri-graph-canvas canvas")
    assert page.locator(".mri-layer_grid svg").count() == 4  # embeddings + 3 blocks

    # the most crowded region of layer 2, and its node in the graph
    region = int(kernel_eval(jupyter_server, NB, "int(areas.grid(2).argmax())"))
    node = int(kernel_eval(jupyter_server, NB, f"graph.nodes.index((2, {region}))"))

    # click it in LayerGrid: Python's selection follows ...
    page.locator(f".mri-layer_grid rect[data-layer='2'][data-region='{region}']").click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.region)", (2, region))
    # ... the grid outlines it, and the graph outlines the node and highlights the documents' paths
    page.wait_for_function(
        f"() => document.querySelector(\".mri-layer_grid rect[data-layer='2'][data-region='{region}']\")"
        ".classList.contains('mri-selected')")
    page.wait_for_function(f"() => {CY}.getElementById('n{node}').hasClass('sel')")
    expected = json.loads(kernel_eval(
        jupyter_server, NB, "__import__('json').dumps([sorted(graph.highlight['nodes'].tolist()), "
                            "sorted(graph.highlight['edges'].tolist())])").strip("'"))
    page.wait_for_function(f"(n) => {CY}.nodes('.node.hl').length === n", arg=len(expected[0]))
    got_nodes = page.evaluate(f"() => {CY}.nodes('.node.hl').map(n => n.data('index')).sort((a, b) => a - b)")
    got_edges = page.evaluate(f"() => {CY}.edges('.hl').map(e => e.data('index')).sort((a, b) => a - b)")
    assert got_nodes == expected[0] and got_edges == expected[1]
    assert node in got_nodes
    # brute force in Python: the highlighted nodes are the regions of that region's documents
    assert kernel_eval(
        jupyter_server, NB,
        f"sorted({{graph.nodes.index((l, int(areas.regions(l)[d]))) for l in areas.layer_ids "
        f"for d in areas.docs(2, {region})}}) == sorted(graph.highlight['nodes'].tolist())") == "True"
    assert page.locator(".mri-graph_view").get_attribute("data-highlight-nodes") == str(len(expected[0]))
    # other nodes are dimmed
    assert page.evaluate(f"() => {CY}.nodes('.node.dim').length") > 0
    # LayerGrid follows the documents in the other layers too
    assert page.locator(".mri-layer_grid rect.mri-follow").count() >= 3

    # hover a region in the grid: counts per label as text
    page.locator(f".mri-layer_grid rect[data-layer='1'][data-region='{region}']").hover()
    tip = page.locator(".mri-layer_grid .mri-tooltip")
    tip.wait_for(state="visible")
    assert "total:" in tip.inner_text() and "joy:" in tip.inner_text()

    # scroll both views into sight for the screenshots
    page.locator(".mri-layer_grid").scroll_into_view_if_needed()
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.mouse.move(5, 5)
    page.locator(".mri-layer_grid").screenshot(path=str(ARTIFACTS_DIR / "layer_grid.png"))

    # click another node in the graph: the selection and the grid follow
    other_region = int(kernel_eval(jupyter_server, NB, "int(areas.grid(3).argmax())"))
    other = int(kernel_eval(jupyter_server, NB, f"graph.nodes.index((3, {other_region}))"))
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    page.evaluate(f"(id) => {CY}.zoom({{level: 1.2, renderedPosition: {{x: 0, y: 0}}}}) && {CY}.center({CY}.getElementById(id))", f"n{other}")
    x, y = _node_xy(page, f"n{other}")
    page.mouse.move(x, y)
    gtip = page.locator(".mri-graph_view .mri-tooltip")
    gtip.wait_for(state="visible")
    assert "region" in gtip.inner_text()
    page.mouse.click(x, y)
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.region)", (3, other_region))
    page.wait_for_function(
        f"() => document.querySelector(\".mri-layer_grid rect[data-layer='3'][data-region='{other_region}']\")"
        ".classList.contains('mri-selected')")
    page.wait_for_function(f"() => {CY}.getElementById('n{other}').hasClass('sel')")

    # Python sets the filters: the view applies them
    kernel_exec(jupyter_server, NB, "graph.top_k = 5")
    page.wait_for_function("() => document.querySelector('.mri-graph_view input.mri-top-k').value === '5'")
    n_hl = int(kernel_eval(jupyter_server, NB, "len(graph.highlight['edges'])"))
    visible = page.evaluate(f"() => {CY}.edges().filter(e => !e.hasClass('filtered')).length")
    assert visible <= 5 + n_hl
    kernel_exec(jupyter_server, NB, "graph.top_k = 0")
    page.evaluate(f"() => {CY}.fit(undefined, 24)")
    page.mouse.move(5, 5)
    page.locator(".mri-graph_view").screenshot(path=str(ARTIFACTS_DIR / "coactivation_graph.png"))
    save_screenshot(page, "regions")
    assert list(page.console_errors) == []


BIG = """
import numpy as np, mri_widgets as mw, time
rng = np.random.default_rng(0)
L, R, M = 30, 100, 5000
layer = np.repeat(np.arange(L), R); row = np.tile(np.arange(R), L)
src_l = rng.integers(0, L - 1, M)
edges = {"source": src_l * R + rng.integers(0, R, M), "target": (src_l + 1) * R + rng.integers(0, R, M),
         "weight": rng.integers(1, 20, M).astype(float)}
nodes = {"x": layer * 140.0, "y": row * 22.0, "size": rng.uniform(6, 28, L * R),
         "parts": rng.integers(0, 10, (L * R, 4)), "label": [f"{r}" for r in row],
         "select": [{"layer": int(l), "region": int(r)} for l, r in zip(layer, row)]}
t0 = time.perf_counter()
big = mw.GraphView(nodes, edges, part_names=["a", "b", "c", "d"], height=500)
print("python build s", round(time.perf_counter() - t0, 3))
big
"""


def test_graph_view_big_graph_first_render(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, "big_graph.ipynb", [BIG])
    open_notebook(page, jupyter_server, "big_graph.ipynb")
    t0 = time.perf_counter()
    run_all(page)
    wait_for_view(page, ".mri-graph_view .mri-graph-canvas canvas")
    page.wait_for_function("() => document.querySelector('.mri-graph_view').dataset.firstRenderMs", timeout=60000)
    wall = time.perf_counter() - t0
    root = page.locator(".mri-graph_view")
    build = float(root.get_attribute("data-build-ms"))
    first = float(root.get_attribute("data-first-render-ms"))
    assert page.evaluate(f"() => {CY}.nodes('.node').length") == 3000
    assert page.evaluate(f"() => {CY}.edges().length") == 5000
    # filters and highlight on the big graph
    t1 = time.perf_counter()
    kernel_exec(jupyter_server, "big_graph.ipynb", "big.top_k = 500")
    page.wait_for_function(f"() => {CY}.edges('.filtered').length === 4500")
    t_filter = time.perf_counter() - t1
    t2 = time.perf_counter()
    kernel_exec(jupyter_server, "big_graph.ipynb", "big.set_highlight(range(0, 3000, 30), range(0, 5000, 50))")
    page.wait_for_function(f"() => {CY}.nodes('.node.hl').length === 100")
    t_hl = time.perf_counter() - t2
    filter_ms = float(root.get_attribute("data-filter-ms"))
    hl_ms = float(root.get_attribute("data-highlight-ms"))
    print(f"\nGraphView 3000 nodes / 5000 edges: cytoscape build {build:.0f} ms, first render {first:.0f} ms "
          f"after data arrived; run-to-render {wall:.1f} s; top-k filter {filter_ms:.0f} ms in the view "
          f"({t_filter * 1000:.0f} ms round trip from Python); highlight {hl_ms:.0f} ms in the view "
          f"({t_hl * 1000:.0f} ms round trip)")
    assert first < 15000, f"first render took {first:.0f} ms"
    renderer = page.evaluate(f"() => {CY}.renderer().webgl ? 'webgl' : 'canvas'")
    print(f"GraphView 3000 nodes / 5000 edges drawn by cytoscape's {renderer} renderer")
    save_screenshot(page, "graph_view_big")
    # over its edge budget: the notice says so, and its button raises the budget (Python follows)
    kernel_exec(jupyter_server, "big_graph.ipynb", "big.top_k = 0; big.set_highlight(); big.edge_budget = 1000")
    page.wait_for_function(f"() => {CY} && {CY}.edges().length === 1000", timeout=60000)
    notice = page.locator(".mri-graph_view .mri-budget")
    assert "1,000" in notice.inner_text() and "5,000" in notice.inner_text()
    page.locator(".mri-graph_view button.mri-more-edges").click()
    page.wait_for_function(f"() => {CY} && {CY}.edges().length === 4000", timeout=60000)
    assert kernel_eval(jupyter_server, "big_graph.ipynb", "big.edge_budget") == "4000"
    assert list(page.console_errors) == []


def test_hover_fetches_example_texts_from_python(jupyter_server, page):
    """Tooltips of both views ask Python (anywidget invoke of a @command) for a few texts of the hovered region."""
    write_notebook(jupyter_server.root_dir, "regions_rpc.ipynb", CELLS)
    open_notebook(page, jupyter_server, "regions_rpc.ipynb")
    run_all(page)
    wait_for_view(page, ".mri-layer_grid rect.mri-cell")
    region = int(kernel_eval(jupyter_server, "regions_rpc.ipynb", "int(areas.grid(1).argmax())"))
    texts = kernel_eval(jupyter_server, "regions_rpc.ipynb", f"[e['text'] for e in areas.examples(1, {region})]")
    page.locator(f".mri-layer_grid rect[data-layer='1'][data-region='{region}']").hover()
    try:
        page.wait_for_function("() => document.querySelector('.mri-layer_grid .mri-tooltip .mri-example')",
                               timeout=10000)
    except Exception as e:
        raise AssertionError(
            "no example texts arrived: the anywidget command did not reach Python, or its answer did not "
            "reach the view (MRIWidget must not override ipywidgets.Widget._handle_custom_msg)") from e
    shown = page.locator(".mri-layer_grid .mri-tooltip .mri-example").all_inner_texts()
    assert len(shown) >= 1 and all(s.split("] ", 1)[1] in texts for s in shown)
    # the graph's node tooltip too
    node = int(kernel_eval(jupyter_server, "regions_rpc.ipynb", f"graph.nodes.index((1, {region}))"))
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    page.mouse.move(5, 5)
    x, y = _node_xy(page, f"n{node}")
    page.mouse.move(x, y)
    page.wait_for_function("() => document.querySelector('.mri-graph_view .mri-tooltip .mri-detail')", timeout=10000)
    assert list(page.console_errors) == []
