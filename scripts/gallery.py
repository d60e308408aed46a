"""Regenerate the README gallery: every view on the real demo model, screenshotted in JupyterLab.

Run it with ``make gallery`` (or ``python scripts/gallery.py [name ...]`` from the repository root).
It starts a headless JupyterLab (the browser tests' harness, ``tests/e2e/harness.py``), drives
Debian's Chromium (``/usr/bin/chromium``) with Playwright, builds each view in its own notebook on
``mw.load("demo")`` (SmolLM2-135M-Instruct, offline) and the emotions corpus, hovers or clicks one
meaningful element, and writes one PNG per view into ``notebooks/gallery/``.

Corpus subsets and layer selections are small so the whole run stays at a few minutes on 2 CPU
cores.  Names given on the command line regenerate only those pictures (``lens_table``, ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.harness import (  # noqa: E402  (the repository root must be importable first)
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    attach_console_collector,
    kernel_eval,
    open_notebook,
    run_all,
    start_jupyter_server,
    wait_for_view,
    write_notebook,
)

#: Where the pictures go (the README's Gallery section links them).
GALLERY = REPO / "notebooks" / "gallery"
#: The page size: tall enough that each view fits without scrolling inside JupyterLab.
VIEWPORT = {"width": 1400, "height": 1500}

LOAD = "import numpy as np\nimport mri_widgets as mw\nlm = mw.load('demo')\nsel = mw.Selection()\n"
CY = "document.querySelector('.mri-graph_view').__cy"


@dataclass
class Shot:
    """One gallery picture: notebook cells, the view's CSS root and what to do before the shot.

    ``act(page, server, nb)`` hovers or clicks inside the view and returns extra locators (a
    tooltip) whose boxes are added to the picture, so nothing the hover shows is cut off.
    """

    name: str
    cells: list[str]
    root: str
    ready: str
    act: Callable
    timeout: float = 300.0


# --------------------------------------------------------------------------- helpers


def _eval(server, nb, expr):
    return kernel_eval(server, nb, expr, timeout=120)


def _tooltip(page, css):
    tip = page.locator(css).first
    tip.wait_for(state="visible", timeout=30000)
    page.wait_for_timeout(400)  # tooltips fetching their text from Python: let it arrive
    return tip


def _settle(page, ms=600):
    page.wait_for_timeout(ms)


def _node_xy(page, node_id, zoom=None):
    """Client coordinates of a cytoscape node (optionally zooming onto it first)."""
    return page.evaluate(
        f"""([id, zoom]) => {{
          const cy = {CY};
          const n = cy.getElementById(id);
          if (zoom) {{ cy.zoom({{level: zoom, renderedPosition: n.renderedPosition()}}); }}
          if (zoom !== null) cy.center(n);
          const p = n.renderedPosition();
          const r = cy.container().getBoundingClientRect();
          return [r.left + p.x, r.top + p.y];
        }}""",
        [node_id, zoom],
    )


def _scroll_top(page, locator):
    """Put the top of ``locator`` near the top of the notebook's scroll area."""
    locator.evaluate("el => el.scrollIntoView({block: 'start'})")
    _settle(page, 300)


def shoot(page, root, extras, path: Path, pad: int = 6, bottom=None) -> None:
    """Screenshot the union of ``root``'s box and the boxes of ``extras`` (tooltips), padded.

    ``bottom`` (a locator) cuts the picture at that element's bottom edge (tall composite views).
    """
    boxes = [root.bounding_box()] + [e.bounding_box() for e in extras if e.is_visible()]
    boxes = [b for b in boxes if b]
    x0 = max(0, min(b["x"] for b in boxes) - pad)
    y0 = max(0, min(b["y"] for b in boxes) - pad)
    x1 = min(VIEWPORT["width"], max(b["x"] + b["width"] for b in boxes) + pad)
    y1 = min(VIEWPORT["height"], max(b["y"] + b["height"] for b in boxes) + pad)
    scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer").first
    if scroller.count():  # never past the visible part of the notebook (the status bar sits below)
        sb = scroller.bounding_box()
        y1 = min(y1, sb["y"] + sb["height"])
        x1 = min(x1, sb["x"] + sb["width"] - 12)  # nor onto its scroll bar
    if bottom is not None:
        bb = bottom.bounding_box()
        y1 = min(y1, bb["y"] + bb["height"] + pad)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})


# --------------------------------------------------------------------------- the views


def act_lens(page, server, nb):
    root = page.locator(".mri-lens_table")
    _scroll_top(page, root)
    n = int(_eval(server, nb, "w.result.n_prompt"))
    # layer 19 of the last prompt token (" is"): far enough above the bottom that its tooltip fits
    cell = root.locator(f".mri-lens-cell[data-layer='19'][data-pos='{n - 1}']").first
    cell.hover()
    return [_tooltip(page, ".mri-lens_table .mri-tooltip")]


def act_patching(page, server, nb):
    root = page.locator(".mri-patching_table")
    _scroll_top(page, root)
    layer, col = eval(_eval(server, nb, "tuple(int(v) for v in np.unravel_index(np.argmax(res.effect), res.effect.shape))"))
    root.locator(f".mri-patch-cell[data-row='{layer}'][data-col='{col}']").hover()
    return [_tooltip(page, ".mri-patching_table .mri-tooltip")]


def act_layer_grid(page, server, nb):
    root = page.locator(".mri-layer_grid")
    _scroll_top(page, root)
    layer, region = eval(_eval(server, nb, "(layer, region)"))
    root.locator(f"rect[data-layer='{layer}'][data-region='{region}']").hover()
    return [_tooltip(page, ".mri-layer_grid .mri-tooltip")]


def act_coactivation(page, server, nb):
    root = page.locator(".mri-graph_view")
    _scroll_top(page, root)
    page.evaluate(f"() => {CY}.fit(undefined, 24)")
    _settle(page)
    idx = int(_eval(server, nb, "graph.nodes.index((layer, region))"))
    x, y = _node_xy(page, f"n{idx}")
    page.mouse.move(x, y)
    return [_tooltip(page, ".mri-graph_view .mri-tooltip")]


def act_neuron(page, server, nb):
    root = page.locator(".mri-neuron_viewer")
    _scroll_top(page, root)
    peak = root.locator(".nv-top .nv-example").first.locator(".mri-tok.nv-peak").first
    peak.wait_for(state="visible", timeout=30000)
    peak.hover()
    _settle(page)
    return [t for t in [page.locator(".mri-neuron_viewer .mri-tooltip").first] if t.is_visible()]


def act_head_map(page, server, nb):
    root = page.locator(".mri-head_map")
    _scroll_top(page, root)
    layer, head = eval(_eval(server, nb, "(layer, head)"))
    root.locator(f"circle.mri-hm-pt[data-layer='{layer}'][data-head='{head}']").click()
    cells = root.locator("rect.mri-hm-cell")
    cells.first.wait_for(state="visible", timeout=30000)
    _settle(page)
    # hover the pattern cell of the last query on its strongest key
    q, k = eval(_eval(server, nb, "(lambda a: (a.shape[0] - 1, int(a[-1].argmax())))"
                                  "(hm.pattern(layer, head, example=hm.example)['attn'])"))
    cell = root.locator(f"rect.mri-hm-cell[data-q='{q}'][data-k='{k}']")
    if cell.count():
        cell.first.hover()
    else:
        cells.last.hover()
    return [_tooltip(page, ".mri-head_map .mri-tooltip")]


def act_flow(page, server, nb):
    root = page.locator(".mri-graph_view")
    _scroll_top(page, root)
    _settle(page)
    idx = int(_eval(server, nb, "w.nodes.index(top)"))
    x, y = _node_xy(page, f"n{idx}", zoom=0)  # centred on it, at the view's own readable zoom
    _settle(page, 300)
    page.mouse.move(x, y)
    return [_tooltip(page, ".mri-graph_view .mri-tooltip")]


def act_token_heat(page, server, nb):
    root = page.locator(".mri-token_heat").first
    _scroll_top(page, root)
    pos = int(_eval(server, nb, "pos"))
    root.locator(f".mri-tok[data-position='{pos}']").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mri-token_heat')].every(v => v.querySelector('.mri-tok.mri-selected'))")
    root.locator(f".mri-tok[data-position='{pos}']").hover()
    _settle(page)
    return [page.locator(".jp-OutputArea-output:has(.mri-token_heat)").last]


def act_explorer(page, server, nb):
    top = page.locator(".jp-OutputArea-output:has(.mri-explorer-selection)").first
    _scroll_top(page, top)
    lens = page.locator(".mri-lens_table")
    lens.locator(".mri-lens-cell").first.wait_for(state="visible", timeout=60000)
    page.locator(".mri-interventions .mri-iv-entry").first.wait_for(state="visible", timeout=60000)
    _settle(page, 1500)
    # show the last layers, where ' Paris' appears: scroll the table to its right end
    lens.evaluate("el => el.querySelectorAll('*').forEach(e => { if (e.scrollWidth > e.clientWidth + 4)"
                  " e.scrollLeft = e.scrollWidth; })")
    _settle(page, 500)
    return []


SHOTS = [
    Shot("lens_table", [
        LOAD + "w = mw.LensTable(lm, 'The capital of France is', generate=8, transpose=True, height=760, selection=sel)\n"
        "print(repr(w.result.continuation))\nw",
    ], ".mri-lens_table", ".mri-lens_table .mri-lens-cell", act_lens),
    Shot("patching_table", [
        LOAD + "res = mw.patching(lm, 'The Eiffel Tower is in the city of', 'The Colosseum is in the city of',\n"
        "                  answer=' Paris', wrong=' Rome')\n"
        "w = mw.PatchingTable(res, height=760, selection=sel)\nw",
    ], ".mri-patching_table", ".mri-patching_table .mri-patch-cell", act_patching),
    Shot("layer_grid", [
        LOAD + "corpus = mw.datasets.emotions()[::4]   # 110 sentences\n"
        "areas = mw.ActivationAreas(lm, corpus, pool='mean', reduction='pca', grid=8, batch_size=16, max_length=32)\n"
        "layer = 14   # the left column of the grid: its tooltip has room on the right\n"
        "region = int(areas.grid(layer).argmax())\n"
        "w = mw.LayerGrid(areas, mode='all', selection=sel)\nw",
    ], ".mri-layer_grid", ".mri-layer_grid rect.mri-cell", act_layer_grid),
    Shot("coactivation_graph", [
        LOAD + "corpus = mw.datasets.emotions()[::4]   # 110 sentences\n"
        "areas = mw.ActivationAreas(lm, corpus, pool='mean', reduction='pca', grid=8, batch_size=16, max_length=32)\n"
        "layer = 20\nregion = int(areas.grid(layer).argmax())\n"
        "graph = mw.CoactivationGraph(areas, selection=sel, min_weight=2)\n"
        "sel.update(layer=layer, region=region)\ngraph",
    ], ".mri-graph_view", ".mri-graph_view .mri-graph-canvas canvas", act_coactivation),
    Shot("neuron_viewer", [
        LOAD + "texts = mw.datasets.emotions().texts[:200]\n"
        "scan = mw.NeuronScan.run(lm, texts, k=6, layers=[20], batch_size=16)\n"
        "typical = np.abs(scan.mean[0]) + 1e-3\n"
        "neuron = int(np.argmax(scan.top_values[0, :, 0] / typical))\n"
        "w = mw.NeuronViewer(scan, lm, layer=20, neuron=neuron, selection=sel)\nw",
    ], ".mri-neuron_viewer", ".mri-neuron_viewer .nv-title", act_neuron),
    Shot("head_map", [
        LOAD + "texts = ['The capital of France is Paris, and the capital of Italy is Rome.',\n"
        "         'The cat sat on the mat and looked at the dog.',\n"
        "         'One, two, three, four, five, six, seven, eight.',\n"
        "         'Alice gave Bob the book because Bob asked for it.']\n"
        "hm = mw.HeadMap(lm, texts, selection=sel)\n"
        "best = int(np.argmax(hm.stats.scores['previous'].reshape(-1)))\n"
        "layer, head = divmod(best, hm.stats.n_heads)\nhm",
    ], ".mri-head_map", ".mri-head_map circle.mri-hm-pt", act_head_map),
    Shot("flow_graph", [
        LOAD + "prompt = 'The Eiffel Tower is in the city of Paris. The Colosseum is in the city of'\n"
        "w = mw.FlowGraph(lm, prompt, target=' Rome', layers='20-21', selection=sel)\n"
        "# the head whose output alone ranks ' Rome' highest\n"
        "top = min((n for n, a in w.graph.nodes(data=True) if a['kind'] == 'head_out'),\n"
        "          key=lambda n: w.graph.nodes[n]['target_rank'])\nw",
    ], ".mri-graph_view", ".mri-graph_view .mri-graph-canvas canvas", act_flow),
    Shot("token_heat", [
        LOAD + "import torch\n"
        "text = 'The Eiffel Tower is in Paris. The Colosseum is in Rome. The Louvre is in Paris.'\n"
        "ids = lm.tokenizer(text, return_tensors='pt').input_ids\n"
        "with torch.no_grad():\n"
        "    logp = torch.log_softmax(lm.model(ids).logits[0].float(), -1)\n"
        "surprise = np.r_[0.0, (-logp[:-1].gather(1, ids[0, 1:, None])[:, 0]).numpy()]\n"
        "tokens = lm.tokenizer.convert_ids_to_tokens(ids[0])\n"
        "tokens = [lm.tokenizer.convert_tokens_to_string([t]) for t in tokens]\n"
        "paris = mw.logit_lens(lm, text, target=' Paris')\n"
        "pos = len(tokens) - 2   # ' Paris' at the end: the model saw it coming\n"
        "a = mw.TokenHeat(tokens, surprise, title='surprisal of each token (nats)', value_name='surprisal', selection=sel)\n"
        "b = mw.TokenHeat(tokens, paris.target_probs[-1], title=\"last layer: P(' Paris') as the next token\",\n"
        "                 value_name=\"P(' Paris')\", selection=sel)\n"
        "display(a)\nb",
    ], ".mri-token_heat", ".mri-token_heat .mri-tok", act_token_heat),
    Shot("explorer", [
        LOAD + "corpus = mw.datasets.emotions()[::8]   # 55 sentences\n"
        "ex = mw.Explorer(lm, corpus, prompt='The Eiffel Tower is in the city of', selection=sel,\n"
        "                 areas_options=dict(grid=8, max_length=32, batch_size=16), scan_layers=[20],\n"
        "                 flow_layers=list(range(24, 30)))\n"
        "G = ex.views['flow'].graph\n"
        "best = min((d for _, d in G.nodes(data=True) if d['kind'] == 'head_out'), key=lambda d: d['target_rank'])\n"
        "ex.interventions.ablate(('head', best['layer'], best['head']))\nex",
    ], ".mri-explorer-selection", ".mri-lens_table .mri-lens-cell", act_explorer, timeout=600),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="pictures to make (default: all): " + ", ".join(s.name for s in SHOTS))
    parser.add_argument("--out", type=Path, default=GALLERY, help="folder for the PNGs (default: notebooks/gallery)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {s.name for s in SHOTS}
    if unknown:
        parser.error(f"unknown picture(s) {sorted(unknown)}; choose from {[s.name for s in SHOTS]}")
    shots = [s for s in SHOTS if not args.names or s.name in args.names]
    if not Path(CHROMIUM_PATH).exists():
        print(f"{CHROMIUM_PATH} not found: install Chromium (make setup-browser)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    server = start_jupyter_server()
    failed = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
            for shot in shots:
                t0 = time.monotonic()
                nb = f"{shot.name}.ipynb"
                ctx = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
                page = ctx.new_page()
                errors = attach_console_collector(page)
                try:
                    write_notebook(server.root_dir, nb, shot.cells)
                    open_notebook(page, server, nb)
                    run_all(page, nb, timeout=shot.timeout)
                    wait_for_view(page, shot.ready, timeout=60)
                    _settle(page, 800)
                    extras = shot.act(page, server, nb)
                    root = page.locator(shot.root).first
                    if shot.name == "explorer":
                        root = page.locator(".jp-OutputArea-output:has(.mri-explorer-selection)").first
                        bottom = page.locator(".mri-lens_table").first
                        shoot(page, root, extras, args.out / f"{shot.name}.png", bottom=bottom)
                    elif shot.name == "token_heat":
                        shoot(page, page.locator(".jp-OutputArea-output:has(.mri-token_heat)").first, extras,
                              args.out / f"{shot.name}.png")
                    else:
                        shoot(page, root, extras, args.out / f"{shot.name}.png")
                    print(f"{shot.name}: {args.out / (shot.name + '.png')} ({time.monotonic() - t0:.0f} s)", flush=True)
                    if list(errors):
                        print(f"  front-end errors: {list(errors)}", flush=True)
                except Exception as e:  # one view failing must not lose the others
                    failed.append(shot.name)
                    print(f"{shot.name}: FAILED {type(e).__name__}: {e}", flush=True)
                    page.screenshot(path=f"/tmp/gallery_failed_{shot.name}.png")
                finally:
                    ctx.close()
                    server.shutdown_sessions()
            browser.close()
    finally:
        server.stop()
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
