"""Views in JupyterLab Dark: dark backgrounds, light text, readable tooltips and graph labels, and a
view forced to theme="light" stays light inside the dark lab.

The lab's theme is a user setting of the (shared, per-session) server, so the test switches back to
JupyterLab Light at the end, pass or fail.
"""

from __future__ import annotations

from .harness import expect, open_notebook, run_all, save_screenshot, wait_for_view, write_notebook

NB = "theme_dark.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model, synthetic_areas\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt2')\n"
    "w = mw.LensTable(lm, 'The capital of France is Paris.')\n"
    "w",
    "g = mw.CoactivationGraph(synthetic_areas(n_docs=200, n_layers=4, grid=3, n_labels=3), height=320)\n"
    "g",
    "wl = mw.LensTable(lm, 'A quick brown fox.', theme='light')\n"
    "wl",
]

# Colours of an element as the browser computed them, parsed to [r, g, b, a] in 0..1.
_JS_COLORS = """
(el) => {
  const parse = (s) => {
    const c = document.createElement('canvas').getContext('2d');
    c.fillStyle = '#000'; c.fillStyle = s; c.fillRect(0, 0, 1, 1);
    const d = c.getImageData(0, 0, 1, 1).data;
    const m = /rgba?\\(([^)]+)\\)/.exec(s);
    const a = m && m[1].split(',').length === 4 ? parseFloat(m[1].split(',')[3]) : 1;
    return [d[0] / 255, d[1] / 255, d[2] / 255, a];
  };
  const cs = getComputedStyle(el);
  return {color: parse(cs.color), background: parse(cs.backgroundColor), raw: [cs.color, cs.backgroundColor]};
}
"""


def _lum(rgb):
    """WCAG relative luminance of an sRGB colour in 0..1."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a, b):
    la, lb = sorted((_lum(a), _lum(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _over(fg, bg):
    """``fg`` (with alpha) composited over the opaque ``bg``."""
    a = fg[3]
    return [a * f + (1 - a) * b for f, b in zip(fg[:3], bg[:3])] + [1.0]


def _colors(locator):
    return locator.evaluate(_JS_COLORS)


def _parse_css(page, s):
    return page.evaluate("(s) => {const c = document.createElement('canvas').getContext('2d');"
                         " c.fillStyle = '#000'; c.fillStyle = s; c.fillRect(0, 0, 1, 1);"
                         " return Array.from(c.getImageData(0, 0, 1, 1).data).map(v => v / 255);}", s)


def _set_theme(page, name):
    page.evaluate("async (t) => { await window.jupyterapp.commands.execute('apputils:change-theme', {theme: t}); }",
                  name)
    want = "false" if "Dark" in name else "true"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{want}'", timeout=30_000)


def test_views_in_jupyterlab_dark(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    try:
        _set_theme(page, "JupyterLab Dark")
        run_all(page)
        wait_for_view(page, ".mri-lens_table .mri-lens-cell")
        wait_for_view(page, ".mri-graph_view .mri-graph-canvas canvas")
        auto, forced = page.locator(".mri-lens_table").nth(0), page.locator(".mri-lens_table").nth(1)
        expect(forced).to_have_attribute("data-mri-theme", "light")

        # the view root: a dark background, light text
        c = _colors(auto)
        assert c["background"][3] > 0.5, c["raw"]
        assert _lum(c["background"]) < 0.3 * 0.3, c["raw"]  # sRGB ~0.3 -> relative luminance ~0.07
        assert _lum(c["color"]) > 0.5, c["raw"]
        assert _contrast(c["color"], c["background"]) >= 4.5, c["raw"]
        # ... and the row heads (token text) and toolbar labels are readable on it
        for sel in (".mri-lens-rowhead", ".mri-toolbar label"):
            el = auto.locator(sel).first
            t = _colors(el)
            assert _contrast(_over(t["color"], c["background"]), c["background"]) >= 4.5, (sel, t["raw"], c["raw"])

        # a tooltip on hover: its text readable on its own background
        auto.locator(".mri-lens-cell[data-layer='2'][data-pos='3']").hover()
        tip = auto.locator(".mri-tooltip")
        expect(tip).to_be_visible()
        expect(tip.locator("tr")).to_have_count(5)
        t = _colors(tip)
        tip_bg = _over(t["background"], c["background"])
        assert _contrast(t["color"], tip_bg) >= 4.5, t["raw"]
        save_screenshot(page, "theme_dark_lens_table")
        page.mouse.move(0, 0)

        # the graph: background dark, node labels light and readable on it (cytoscape's own styles)
        graph = page.locator(".mri-graph_view").first
        graph.scroll_into_view_if_needed()
        gc = _colors(graph)
        assert _lum(gc["background"]) < 0.09, gc["raw"]
        styles = page.evaluate(
            "() => { const cy = document.querySelector('.mri-graph_view').__cy;"
            " const n = cy.nodes('.node').first();"
            " return {color: n.style('color'), textBg: n.style('text-background-color'), n: cy.nodes('.node').length}; }")
        assert styles["n"] > 0
        label, label_bg = _parse_css(page, styles["color"]), _parse_css(page, styles["textBg"])
        assert _lum(label) > 0.5, styles
        assert _contrast(label, label_bg) >= 4.5, styles
        assert _contrast(label, gc["background"]) >= 4.5, (styles, gc["raw"])
        # hover a node: the graph's tooltip is readable too
        xy = page.evaluate(
            "() => { const cy = document.querySelector('.mri-graph_view').__cy;"
            " const p = cy.nodes('.node').first().renderedPosition();"
            " const r = cy.container().getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }")
        page.mouse.move(*xy)
        gtip = graph.locator(".mri-tooltip")
        expect(gtip).to_be_visible()
        t = _colors(gtip)
        assert _contrast(t["color"], _over(t["background"], gc["background"])) >= 4.5, t["raw"]
        save_screenshot(page, "theme_dark_graph")
        page.mouse.move(0, 0)  # straight off the graph: the tooltip goes with the pointer
        expect(gtip).to_be_hidden()

        # theme="light" inside the dark lab: a light view with dark text
        forced.scroll_into_view_if_needed()
        f = _colors(forced)
        assert _lum(f["background"]) > 0.8, f["raw"]
        assert _lum(f["color"]) < 0.1, f["raw"]
        rh = _colors(forced.locator(".mri-lens-rowhead").first)
        assert _contrast(_over(rh["color"], f["background"]), f["background"]) >= 4.5, rh["raw"]
        save_screenshot(page, "theme_dark_forced_light")
        assert list(page.console_errors) == []
    finally:
        _set_theme(page, "JupyterLab Light")
