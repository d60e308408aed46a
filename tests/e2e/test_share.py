"""Standalone HTML pages (save_html): opened from file:// with every other URL blocked, the views
draw from the data saved in the file, hover and clicks work, and linked views follow each other."""

from __future__ import annotations

import json
import re

import pytest

from .harness import ARTIFACTS_DIR, CHROMIUM_ARGS, CHROMIUM_PATH  # noqa: F401

CY = "document.querySelector('.mri-graph_view').__cy"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import mri_widgets as mw
    from mri_widgets.datasets import emotions
    from mri_widgets.testing import tiny_model

    lm = tiny_model("gpt2")
    areas = mw.ActivationAreas(lm, emotions()[::4], grid=5, progress=False)
    sel = mw.Selection()
    lens = mw.LensTable(lm, "The capital of France is Paris. </script><b>x</b>", selection=sel)
    grid = mw.LayerGrid(areas, mode="all", selection=sel)
    graph = mw.CoactivationGraph(areas, selection=sel, height=420)
    path = mw.save_html(tmp_path_factory.mktemp("share") / "page.html", lens, grid, graph)
    return {"path": path, "lens": lens, "grid": grid, "graph": graph, "areas": areas, "sel": sel}


def _fmt(x) -> str:
    """A number as the views' fmt (js/src/lib/dom.js) writes it with 3 digits."""
    x = float(x)
    return f"{x:.2e}".replace("e-0", "e-").replace("e+0", "e+") if x and not 1e-3 <= abs(x) < 1e4 else f"{x:.3f}"


@pytest.fixture
def offline_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    blocked = []

    def route(r):
        if r.request.url.startswith(("file:", "blob:", "data:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.blocked, pg.errors = blocked, errors
    try:
        yield pg
    finally:
        context.close()


def test_saved_page_works_offline_hover_and_linked_click(saved, offline_page):
    page = offline_page
    page.goto(saved["path"].resolve().as_uri())
    page.wait_for_function("() => document.body.dataset.mriReady === '1'")
    page.wait_for_selector(".mri-lens_table .mri-lens-cell")
    page.wait_for_selector(".mri-layer_grid rect.mri-cell")
    page.wait_for_selector(".mri-graph_view .mri-graph-canvas canvas")
    assert page.blocked == [], page.blocked
    # text from the data stays text: the prompt's markup did not end the page's script
    assert page.locator("b").count() == 0

    # hover a lens cell: its top-k, answered by the page from the cell_details baked at export
    lens = saved["lens"]
    page.locator(".mri-lens_table .mri-lens-cell[data-layer='2'][data-pos='3']").hover()
    tip = page.locator(".mri-lens_table .mri-tooltip")
    tip.wait_for(state="visible")
    page.wait_for_function("() => document.querySelectorAll('.mri-lens_table .mri-tooltip tr').length > 0")
    rows = tip.locator("tr")
    top = lens.result.top(2, 3)
    assert rows.count() == lens.result.k == len(top)
    for j, (token, prob) in enumerate(top):
        assert rows.nth(j).inner_text().split("\t")[0].strip() == json.dumps(token), (j, rows.nth(j).inner_text())
        assert _fmt(prob) in rows.nth(j).inner_text()
    text = tip.inner_text()
    assert "saved page" not in text and "could not load" not in text
    assert f"p = {_fmt(lens.result.target_probs[2, 3])}, rank {lens.result.target_ranks[2, 3]}" in text
    page.screenshot(path=str(ARTIFACTS_DIR / "share_lens_hover.png"))

    # click a node of the graph: the graph marks it and the linked grid follows (no kernel)
    areas, graph = saved["areas"], saved["graph"]
    region = int(areas.grid(3).argmax())
    node = graph.nodes.index((3, region))
    page.locator(".mri-graph_view").scroll_into_view_if_needed()
    page.evaluate(f"(id) => {CY}.zoom({{level: 1.2, renderedPosition: {{x: 0, y: 0}}}}) && "
                  f"{CY}.center({CY}.getElementById(id))", f"n{node}")
    x, y = page.evaluate(f"""(id) => {{ const cy = {CY}; const p = cy.getElementById(id).renderedPosition();
        const r = cy.container().getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }}""", f"n{node}")
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(f"() => {CY}.getElementById('n{node}').hasClass('sel')")
    page.wait_for_function(
        f"() => document.querySelector(\".mri-layer_grid rect[data-layer='3'][data-region='{region}']\")"
        ".classList.contains('mri-selected')")
    # a click in the grid moves the graph back (both directions go through the page's selection)
    page.locator(".mri-layer_grid rect[data-layer='1'].mri-cell").first.click()
    page.wait_for_function(f"() => !{CY}.getElementById('n{node}').hasClass('sel')")
    page.screenshot(path=str(ARTIFACTS_DIR / "share_page.png"), full_page=True)
    assert page.blocked == [], page.blocked
    assert not [e for e in page.errors if not re.search(r"saved page", e)], page.errors
