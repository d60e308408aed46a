"""First render of a 3,000-node / 5,000-edge GraphView in headless Chromium, before vs after.

In JupyterLab + headless Chromium (the e2e harness, the recorder of ``bench_views``), one notebook
cell per view, run one at a time: a trivial TokenHeat, then the graph (30 columns of 100 nodes,
5,000 random edges between neighbouring columns, pie nodes of 4 parts). Each kind renders once
small first (its bundle loads), so the figures measure the drawing. "before" draws the graph with
the view bundle of git ``main`` (``git show main:mri_widgets/static/graph_view.js``, put in the
widget's ``_esm``), "after" with this checkout's bundle. Reports the time from the output
appearing to the frame after the graph's first render, in seconds and as a ratio to the TokenHeat.

Prints; never a timed test. ``python benchmarks/bench_graph_render.py [--ref main]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import bench_views  # noqa: E402

SETUP = f"""\
import sys, numpy as np
sys.path.insert(0, {str(HERE)!r})
import mri_widgets as mw
rng = np.random.default_rng(0)
L, R, M = 30, 100, 5000
layer, row = np.repeat(np.arange(L), R), np.tile(np.arange(R), L)
src_l = rng.integers(0, L - 1, M)
edges = {{"source": src_l * R + rng.integers(0, R, M), "target": (src_l + 1) * R + rng.integers(0, R, M),
         "weight": rng.integers(1, 20, M).astype(float)}}
nodes = {{"x": layer * 140.0, "y": row * 22.0, "size": rng.uniform(6, 28, L * R),
         "parts": rng.integers(0, 10, (L * R, 4)), "label": [f"{{r}}" for r in row],
         "select": [{{"layer": int(a), "region": int(b)}} for a, b in zip(layer, row)]}}
small_nodes = {{"x": [0.0, 100.0, 200.0], "y": [0.0, 50.0, 0.0]}}
small_edges = {{"source": [0, 1], "target": [1, 2]}}
def graph(esm, n, e, **kw):
    w = mw.GraphView(n, e, **kw)
    if esm is not None:
        w._esm = esm
    return w
"""

HEAT = "mw.TokenHeat([' The', ' cat', ' sat', '.'], [0.1, 0.5, 0.9, 0.2])"


def cells(before: bool) -> list:
    """(key, source, root selector, drawn predicate) for one pass (before: main's bundle)."""
    esm = "BEFORE" if before else "None"
    g = ".mri-graph_view"
    big = f"graph({esm}, nodes, edges, part_names=['a', 'b', 'c', 'd'], height=500)"
    return [("token_heat_cold", HEAT, ".mri-token_heat", bench_views._TOKS),
            ("graph_view_cold", f"graph({esm}, small_nodes, small_edges)", g, bench_views._GRAPH),
            ("token_heat", HEAT, ".mri-token_heat", bench_views._TOKS),
            ("graph_view_5000_edges", big, g, bench_views._GRAPH),
            ("token_heat_again", HEAT, ".mri-token_heat", bench_views._TOKS)]


def measure(before: bool, ref: str = "main", timeout: float = 180.0) -> dict:
    """One pass in a fresh JupyterLab; returns {key: ms output -> painted} plus ratios."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.harness import (CHROMIUM_ARGS, CHROMIUM_PATH, attach_console_collector, open_notebook,
                                   start_jupyter_server, write_notebook)

    setup = SETUP
    if before:
        code = subprocess.run(["git", "show", f"{ref}:mri_widgets/static/graph_view.js"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (path := Path("/tmp/mri_bench_graph_before.js")).write_text(code)
        setup += f"BEFORE = open({str(path)!r}).read()\n"
    cs = cells(before)
    name = "bench_graph_render.ipynb"
    server = start_jupyter_server()
    try:
        write_notebook(server.root_dir, name, [setup] + [src for _, src, _, _ in cs])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                errors = attach_console_collector(page)
                open_notebook(page, server, name, timeout=90)
                page.evaluate("""async (path) => {
                  const app = window.jupyterapp;
                  for (const w of app.shell.widgets('main')) if (w && w.context && w.context.path === path && w.content) {
                    w.content.deselectAll(); w.content.activeCellIndex = 0; }
                  await app.commands.execute('notebook:run-cell');
                }""", name)
                bench_views._wait_idle(page, name, 0, timeout)
                recs = {}
                for i, (key, _, root_sel, done) in enumerate(cs, start=1):
                    page.evaluate(bench_views._JS_ARM, [name, i, root_sel, done])
                    page.wait_for_function(f"() => window.__mriBench[{i}].painted !== null", timeout=timeout * 1000)
                    recs[key] = page.evaluate(f"() => window.__mriBench[{i}]")
                    bench_views._wait_idle(page, name, i, timeout)
                renderer = page.evaluate("() => { const r = [...document.querySelectorAll('.mri-graph_view')].pop();"
                                         " return r && r.__cy ? (r.__cy.renderer().webgl ? 'webgl' : 'canvas') : null; }")
            finally:
                browser.close()
    finally:
        server.stop()
    ms = {k: r["painted"] - r["output"] for k, r in recs.items()}
    base = min(ms["token_heat"], ms["token_heat_again"])
    graph = ms["graph_view_5000_edges"]
    return {"graph_s": graph / 1000, "token_heat_s": base / 1000, "ratio": graph / base, "renderer": renderer,
            "cytoscape_build_ms": recs["graph_view_5000_edges"].get("buildMs"),
            "cytoscape_first_render_ms": recs["graph_view_5000_edges"].get("firstRenderMs"),
            "front_end_errors": list(errors)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git ref whose graph_view.js bundle is 'before' (default main)")
    ap.add_argument("--after-only", action="store_true", help="skip the 'before' pass")
    args = ap.parse_args(argv)
    problem = bench_views._chromium_problem()
    if problem:
        print(f"[graph render] skipped: {problem}")
        return {"skipped": problem}
    out = {}
    for label, before in ([] if args.after_only else [("before", True)]) + [("after", False)]:
        t = time.perf_counter()
        r = measure(before, args.ref)
        out[label] = r
        print(f"[graph render] {label:<6} 3,000 nodes / 5,000 edges: {r['graph_s']:.2f} s output -> painted, "
              f"{r['ratio']:.1f}x a trivial TokenHeat ({r['token_heat_s'] * 1000:.0f} ms); renderer {r['renderer']}; "
              f"cytoscape build {r['cytoscape_build_ms']} ms, first render {r['cytoscape_first_render_ms']} ms "
              f"(pass {time.perf_counter() - t:.0f} s)")
        if r["front_end_errors"]:
            print(f"[graph render]   front-end errors: {r['front_end_errors']}")
    if "before" in out:
        print(f"[graph render] after / before: {out['after']['graph_s'] / out['before']['graph_s']:.2f}")
    return out


if __name__ == "__main__":
    main()
