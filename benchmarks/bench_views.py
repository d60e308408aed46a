"""Views: bytes each widget sends, and first-render time of large views in headless Chromium.

1. **Bytes.** For every view (LensTable of a 512-token prompt, LayerGrid and CoactivationGraph of
   ActivationAreas over ~200 emotions texts, NeuronViewer of a NeuronScan of a few layers,
   HeadMap, FlowGraph, TokenHeat), on the demo model when installed (else a small random Llama):
   what the widget really sends for its ``data`` trait (the JSON part of the message after
   ipywidgets' ``_remove_buffers`` + the binary buffers) against the same ``data`` dict with every
   array turned into nested lists (``.tolist()``) and written as JSON text; also against that
   JSON with floats rounded to 4 significant digits (a fairer text encoding).
2. **First render.** In JupyterLab + headless Chromium (the e2e harness), one notebook cell per
   widget, run one at a time: a 512-token x 33-layer lens table (random GPT-2 with 32 layers), a
   GraphView of 3,000 nodes and 5,000 edges, a LayerGrid of a 31-layer ActivationAreas (random
   Llama with 30 layers) and its CoactivationGraph. In the page, a MutationObserver on the cell's
   output area records when the widget's output appears, when the ``.mri-view`` root is attached,
   when the view's content is drawn (cells / canvas render event / all layer SVGs) and when the
   next frame after that is painted (two ``requestAnimationFrame``). Each view type renders once
   small first (its bundle loads; reported as "cold"), so the large figures measure the drawing.
   Reported in ms and as ratios to the render of a trivial TokenHeat in the same page.

Prints ratios measured in one run; never a timed test. Without Chromium (or Playwright) part 2
is skipped with the reason. ``python benchmarks/run.py views`` or ``python benchmarks/bench_views.py``.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))  # the repository, when not installed; also tests/e2e/harness

import numpy as np  # noqa: E402

from _common import bench_model  # noqa: E402

FLOW_PROMPT = "The Eiffel Tower is in the city of Paris. The Colosseum is in the city of"


# ============================================================================ part 1: bytes


def _listify(x):
    """The data dict with every array (numpy / torch) and numpy scalar as plain Python lists / numbers."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x


def _round_sig(x, digits: int = 4):
    """Like :func:`_listify`, floats rounded to ``digits`` significant digits (short JSON numbers)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        a = x.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.floor(np.log10(np.abs(a)))
        e = np.clip(np.where(np.isfinite(e), e, 0), -19, 19)
        # an exact power of ten (10**k, k <= 22) divides an integer-valued double: the result is
        # correctly rounded, so Python writes it with its shortest repr ("0.1235", not "0.12350000000000001")
        scale = 10.0 ** (digits - 1 - e)
        return (np.round(a * scale) / scale).tolist()
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.{digits}g}")
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _round_sig(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round_sig(v, digits) for v in x]
    return x


def _dumps_len(obj) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def sent_bytes(widget) -> dict:
    """What the widget sends: its view traits (JSON part, buffer paths, binary buffers) and the rest.

    ``rest`` is every other synced trait of the state (selection reference, options, the view's
    JavaScript bundle ``_esm`` and the CSS), sent once when the widget is created.
    """
    from ipywidgets.widgets.widget import _remove_buffers

    state, paths, buffers = _remove_buffers(widget.get_state(widget.view_traits()))
    js, bufs = _dumps_len(state) + _dumps_len(paths), int(sum(memoryview(b).nbytes for b in buffers))
    full, fpaths, fbuffers = _remove_buffers(widget.get_state())
    whole = _dumps_len(full) + _dumps_len(fpaths) + int(sum(memoryview(b).nbytes for b in fbuffers))
    code = sum(len(str(full.get(k, "")).encode()) for k in ("_esm", "_css"))
    return {"json": js, "buffers": bufs, "total": js + bufs, "rest": whole - js - bufs, "code": code}


def _bytes_row(name: str, widget, note: str) -> dict:
    sent = sent_bytes(widget)
    text = _dumps_len(_listify(widget.data))
    text4 = _dumps_len(_round_sig(widget.data))
    return {"view": name, "what": note, "sent_bytes": sent["total"], "sent_json_bytes": sent["json"],
            "sent_buffer_bytes": sent["buffers"], "json_text_bytes": text, "json_text_4sig_bytes": text4,
            "json_over_sent": text / sent["total"], "json4_over_sent": text4 / sent["total"],
            "other_state_bytes": sent["rest"], "bundle_bytes": sent["code"]}


def measure_bytes(lm=None, n_tokens: int = 512, n_texts: int = 200) -> dict:
    """Part 1: bytes sent per view against the same content as JSON text (see module docstring)."""
    import mri_widgets as mw
    from mri_widgets.analysis.neurons import NeuronScan
    from mri_widgets.datasets import emotions

    from bench_lens import prompt_of

    lm = lm if lm is not None else bench_model()
    corpus = emotions()
    step = max(1, len(corpus) // n_texts)
    docs = corpus[::step][:n_texts]
    rows = []
    timings = {}

    def timed(key, fn):
        t = time.perf_counter()
        out = fn()
        timings[key] = time.perf_counter() - t
        return out

    prompt = prompt_of(lm, n_tokens)
    res = timed("logit_lens", lambda: mw.logit_lens(lm, prompt, progress=False))
    lens = mw.LensTable.from_result(res)  # the same data as LensTable(lm, prompt)
    n = len(lens.result.tokens)
    rows.append(_bytes_row("LensTable", lens, f"{n} tokens x {lm.n_layers + 1} layers, k=5"))

    areas = timed("areas", lambda: mw.ActivationAreas(lm, docs, batch_size=32, progress=False))
    grid = mw.LayerGrid(areas)
    rows.append(_bytes_row("LayerGrid", grid, f"{len(docs)} texts, {len(areas.layer_ids)} layers, "
                                              f"grid {areas.grid_size}"))
    graph = timed("coactivation", lambda: mw.CoactivationGraph(areas))
    rows.append(_bytes_row("CoactivationGraph", graph, f"{graph._n_nodes} nodes, {graph._n_edges} edges"))

    layers = sorted({lm.n_layers // 4, lm.n_layers // 2, (3 * lm.n_layers) // 4})
    texts = docs.texts[:32]
    scan = timed("neuron_scan", lambda: NeuronScan.run(lm, texts, layers=layers, batch_size=16, progress=False))
    viewer = mw.NeuronViewer(scan, lm, texts, layer=layers[0])
    rows.append(_bytes_row("NeuronViewer", viewer, f"scan of layers {layers} over {len(texts)} texts"))

    heads = timed("head_map", lambda: mw.HeadMap(lm, docs.texts[:16], batch_size=16))
    rows.append(_bytes_row("HeadMap", heads, f"{lm.n_layers} layers x {lm.n_heads} heads, 16 texts"))

    flow = timed("flow_graph", lambda: mw.FlowGraph(lm, FLOW_PROMPT))
    rows.append(_bytes_row("FlowGraph", flow, f"{flow._n_nodes} nodes, {flow._n_edges} edges"))

    heat = mw.TokenHeat(lens.result.tokens, lens.result.entropy[-1], value_name="entropy")
    rows.append(_bytes_row("TokenHeat", heat, f"{n} tokens"))

    print(f"[views] bytes sent per view ({lm.name}); JSON = the same data dict with arrays as lists")
    print(f"[views]   {'view':<18}{'sent KiB':>10}{'(binary':>9}{'+ JSON)':>9}{'JSON KiB':>10}{'ratio':>7}"
          f"{'4-sig KiB':>11}{'ratio':>7}  content")
    for r in rows:
        print(f"[views]   {r['view']:<18}{r['sent_bytes'] / 1024:>10.1f}{r['sent_buffer_bytes'] / 1024:>9.1f}"
              f"{r['sent_json_bytes'] / 1024:>9.1f}{r['json_text_bytes'] / 1024:>10.1f}{r['json_over_sent']:>6.1f}x"
              f"{r['json_text_4sig_bytes'] / 1024:>11.1f}{r['json4_over_sent']:>6.1f}x  {r['what']}")
    print("[views]   (each widget's state also carries its JS bundle once, sent at creation: "
          + ", ".join(f"{r['view']} {r['bundle_bytes'] / 1024:.0f} KiB" for r in rows) + ")")
    return {"model": lm.name, "views": {r["view"]: r for r in rows},
            "build_s": {k: round(v, 3) for k, v in timings.items()}}


# ============================================================================ part 2: first render


def long_tiny_gpt2(n_layers: int = 32, n_positions: int = 1024):
    """A random GPT-2 (d_model 32, 4 heads) with ``n_layers`` blocks that reads up to ``n_positions``
    tokens (``testing.tiny_model`` stops at 256), with the tiny test tokenizer."""
    import torch
    import transformers as T

    from mri_widgets.models.loading import LoadedModel
    from mri_widgets.testing import tiny_tokenizer

    tok = tiny_tokenizer("gpt2")
    cfg = T.GPT2Config(n_layer=n_layers, n_head=4, n_embd=32, vocab_size=len(tok), n_positions=n_positions,
                       bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return LoadedModel(T.GPT2LMHeadModel(cfg), tok, name=f"tiny-gpt2-{n_layers}L")


def large_inputs(n_tokens: int = 512, lens_layers: int = 32, grid_layers: int = 30, n_texts: int = 200,
                 n_nodes: int = 3000, n_edges: int = 5000) -> dict:
    """What the render cells draw, computed before them (runs in the notebook's kernel).

    Returns a dict: ``lens`` (a LensResult, ``n_tokens`` x ``lens_layers + 1``), ``graph_nodes`` /
    ``graph_edges`` (columns for a GraphView: 30 columns of 100 nodes, random edges between
    neighbouring columns), ``areas`` (ActivationAreas of a random Llama with ``grid_layers``
    blocks over ``n_texts`` emotions texts), ``small_lens`` / ``small_areas`` (warm-up inputs),
    ``heat_tokens``.
    """
    import mri_widgets as mw
    from mri_widgets.datasets import emotions
    from mri_widgets.testing import tiny_model

    from bench_lens import prompt_of

    lm = long_tiny_gpt2(lens_layers)
    lens = mw.logit_lens(lm, prompt_of(lm, n_tokens), progress=False)
    small_lens = mw.logit_lens(lm, "The capital of France is", progress=False)

    corpus = emotions()
    docs = corpus[::max(1, len(corpus) // n_texts)][:n_texts]
    areas = mw.ActivationAreas(tiny_model("llama", n_layers=grid_layers), docs, progress=False)
    small_areas = mw.ActivationAreas(tiny_model("gpt2"), docs[:40], grid=4, progress=False)

    rng = np.random.default_rng(0)
    L = 30
    R = n_nodes // L
    layer, row = np.repeat(np.arange(L), R), np.tile(np.arange(R), L)
    src_l = rng.integers(0, L - 1, n_edges)
    edges = {"source": src_l * R + rng.integers(0, R, n_edges), "target": (src_l + 1) * R + rng.integers(0, R, n_edges),
             "weight": rng.integers(1, 20, n_edges).astype(float)}
    nodes = {"x": layer * 140.0, "y": row * 22.0, "size": rng.uniform(6, 28, L * R),
             "parts": rng.integers(0, 10, (L * R, 4)), "label": [f"{r}" for r in row],
             "select": [{"layer": int(a), "region": int(b)} for a, b in zip(layer, row)]}
    return {"lens": lens, "small_lens": small_lens, "areas": areas, "small_areas": small_areas,
            "graph_nodes": nodes, "graph_edges": edges, "heat_tokens": [" The", " cat", " sat", "."]}


SETUP = f"""\
import sys
sys.path.insert(0, {str(HERE)!r})
import mri_widgets as mw
import bench_views
inp = bench_views.large_inputs()
small_nodes = {{"x": [0.0, 100.0, 200.0], "y": [0.0, 50.0, 0.0]}}
small_edges = {{"source": [0, 1], "target": [1, 2]}}
"""

HEAT = "mw.TokenHeat(inp['heat_tokens'], [0.1, 0.5, 0.9, 0.2])"

# (key, cell source, root selector, what counts as drawn: JS predicate on the root element)
_TOKS = "(r) => r.querySelectorAll('.mri-tok').length >= 4"
_GRAPH = "(r) => r.dataset.firstRenderMs !== undefined"
_LENS = "(r) => r.querySelectorAll('.mri-lens-cell').length > 0"


def _grid_done(n_svg: int) -> str:
    return f"(r) => r.querySelectorAll('svg').length >= {n_svg} && !!r.querySelector('rect.mri-cell')"


def render_cells(n_grid_svgs: int = 31) -> list[tuple[str, str, str, str]]:
    """The measured cells, in order: cold (first of its kind, bundle loads) then large ones."""
    return [
        ("token_heat_cold", HEAT, ".mri-token_heat", _TOKS),
        ("lens_table_cold", "mw.LensTable.from_result(inp['small_lens'])", ".mri-lens_table", _LENS),
        ("graph_view_cold", "mw.GraphView(small_nodes, small_edges)", ".mri-graph_view", _GRAPH),
        ("layer_grid_cold", "mw.LayerGrid(inp['small_areas'])", ".mri-layer_grid", _grid_done(4)),
        ("token_heat", HEAT, ".mri-token_heat", _TOKS),
        ("lens_table_512x33", "mw.LensTable.from_result(inp['lens'])", ".mri-lens_table", _LENS),
        ("graph_view_5000_edges", "mw.GraphView(inp['graph_nodes'], inp['graph_edges'], "
                                  "part_names=['a', 'b', 'c', 'd'], height=500)", ".mri-graph_view", _GRAPH),
        ("layer_grid_30_layers", "mw.LayerGrid(inp['areas'])", ".mri-layer_grid", _grid_done(n_grid_svgs)),
        ("coactivation_30_layers", "coact = mw.CoactivationGraph(inp['areas'])\ncoact", ".mri-graph_view", _GRAPH),
        ("token_heat_again", HEAT, ".mri-token_heat", _TOKS),
    ]


# In the page: arm a recorder on cell i's output area, then run that cell alone.
_JS_ARM = """
async ([path, index, rootSel, doneSrc]) => {
  const app = window.jupyterapp;
  let panel = null;
  for (const w of app.shell.widgets('main')) if (w && w.context && w.context.path === path && w.content) panel = w;
  const nb = panel.content;
  const cell = nb.widgets[index];
  const out = cell.outputArea.node;
  const done = eval(doneSrc);
  const rec = {run: performance.now(), output: null, view: null, drawn: null, painted: null};
  window.__mriBench = window.__mriBench || {};
  window.__mriBench[index] = rec;
  const check = () => {
    const now = performance.now();
    if (rec.output === null && out.querySelector('.jp-OutputArea-output')) rec.output = now;
    const root = out.querySelector(rootSel);
    if (rec.view === null && root && root.isConnected) rec.view = now;
    if (rec.drawn === null && root && root.isConnected && done(root)) {
      rec.drawn = now;
      rec.buildMs = root.dataset.buildMs ? Number(root.dataset.buildMs) : null;
      rec.firstRenderMs = root.dataset.firstRenderMs ? Number(root.dataset.firstRenderMs) : null;
      obs.disconnect();
      requestAnimationFrame(() => requestAnimationFrame(() => { rec.painted = performance.now(); }));
    }
  };
  const obs = new MutationObserver(check);
  obs.observe(out, {childList: true, subtree: true, attributes: true, attributeFilter: ['data-first-render-ms']});
  nb.deselectAll();
  nb.activeCellIndex = index;
  cell.node.scrollIntoView({block: 'start'});
  await app.commands.execute('notebook:run-cell');
  return true;
}
"""


def _chromium_problem() -> str | None:
    from tests.e2e.harness import CHROMIUM_PATH

    if not os.path.exists(CHROMIUM_PATH):
        return f"{CHROMIUM_PATH} not found (apt-get install chromium, or set MRI_E2E_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def measure_render(timeout: float = 180.0) -> dict:
    """Part 2: first-render time of large views in JupyterLab + headless Chromium (see module docstring)."""
    problem = _chromium_problem()
    if problem:
        print(f"[views] first-render part skipped: {problem}")
        return {"skipped": problem}
    from playwright.sync_api import sync_playwright

    from tests.e2e.harness import (CHROMIUM_ARGS, CHROMIUM_PATH, attach_console_collector, open_notebook,
                                   kernel_eval, start_jupyter_server, write_notebook)

    cells = render_cells()
    name = "bench_views.ipynb"
    server = start_jupyter_server()
    try:
        write_notebook(server.root_dir, name, [SETUP] + [src for _, src, _, _ in cells])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                errors = attach_console_collector(page)
                open_notebook(page, server, name, timeout=90)
                t0 = time.perf_counter()
                # the setup cell alone (the view cells run one at a time below, each measured)
                page.evaluate("""async (path) => {
                  const app = window.jupyterapp;
                  for (const w of app.shell.widgets('main')) if (w && w.context && w.context.path === path && w.content) {
                    w.content.deselectAll(); w.content.activeCellIndex = 0; }
                  await app.commands.execute('notebook:run-cell');
                }""", name)
                _wait_idle(page, name, 0, timeout)
                setup_s = time.perf_counter() - t0
                recs = {}
                for i, (key, _, root_sel, done) in enumerate(cells, start=1):
                    page.evaluate(_JS_ARM, [name, i, root_sel, done])
                    try:
                        page.wait_for_function(f"() => window.__mriBench[{i}].painted !== null",
                                               timeout=timeout * 1000)
                    except Exception as e:  # report which view did not draw
                        _wait_idle(page, name, i, 5, raise_timeout=False)
                        raise RuntimeError(f"{key} did not draw within {timeout:.0f} s: {e}; "
                                           f"front-end errors: {list(errors)}") from e
                    recs[key] = page.evaluate(f"() => window.__mriBench[{i}]")
                    _wait_idle(page, name, i, timeout)
                coact = kernel_eval(server, name, "(coact._n_nodes, coact._n_edges, len(inp['areas'].layer_ids))")
            finally:
                browser.close()
    finally:
        server.stop()
    out = _report_render(recs, setup_s, list(errors))
    n_nodes, n_edges, n_layers = ast.literal_eval(coact)  # the tuple the kernel printed
    out["coactivation_30_layers"] = {"nodes": n_nodes, "edges": n_edges, "layers": n_layers}
    print(f"[views]   (coactivation_30_layers: {n_nodes} nodes, {n_edges} edges over {n_layers} layers; the cold "
          f"rows are each view's first, small instance, when its bundle loads)")
    return out


def _wait_idle(page, name, index, timeout, raise_timeout=True):
    """Wait until cell ``index`` has an execution count and the kernel is idle; raise on a Python error."""
    from tests.e2e.harness import _state

    deadline = time.monotonic() + timeout
    while True:
        st = _state(page, name)
        cells = st.get("cells", [])
        if index < len(cells):
            for e in cells[index]["errors"]:
                raise RuntimeError(f"bench notebook cell {index} raised {e['ename']}: {e['evalue']}\n{e['traceback']}")
            if cells[index]["count"] is not None and st.get("status") == "idle":
                return
        if time.monotonic() > deadline:
            if raise_timeout:
                raise TimeoutError(f"bench notebook cell {index} did not finish within {timeout:.0f} s")
            return
        time.sleep(0.1)


def _report_render(recs: dict, setup_s: float, errors: list) -> dict:
    out = {"setup_cell_s": round(setup_s, 2), "front_end_errors": errors, "views": {}}
    for key, r in recs.items():
        out["views"][key] = {
            "output_to_painted_ms": r["painted"] - r["output"],
            "view_to_painted_ms": r["painted"] - r["view"],
            "output_to_drawn_ms": r["drawn"] - r["output"],
            "run_to_painted_ms": r["painted"] - r["run"],
            "graph_build_ms": r.get("buildMs"), "graph_first_render_ms": r.get("firstRenderMs"),
        }
    v = out["views"]
    base = min(v["token_heat"]["output_to_painted_ms"], v["token_heat_again"]["output_to_painted_ms"])
    out["token_heat_ms"] = base
    print(f"[views] first render in headless Chromium (JupyterLab), output appearing -> view drawn and "
          f"the next frame painted; ratio to a trivial TokenHeat ({base:.0f} ms; "
          f"{v['token_heat']['output_to_painted_ms']:.0f} / {v['token_heat_again']['output_to_painted_ms']:.0f} ms "
          f"before / after the large views)")
    for key, r in v.items():
        if key in ("token_heat", "token_heat_again"):
            continue
        r["over_token_heat"] = r["output_to_painted_ms"] / base
        extra = ""
        if r["graph_build_ms"] is not None:
            extra = f"; cytoscape build {r['graph_build_ms']:.0f} ms, its first render {r['graph_first_render_ms']:.0f} ms"
        print(f"[views]   {key:<24}{r['output_to_painted_ms']:>8.0f} ms {r['over_token_heat']:>7.1f}x"
              f"   (view attached -> painted {r['view_to_painted_ms']:.0f} ms; cell run -> painted "
              f"{r['run_to_painted_ms']:.0f} ms{extra})")
    if errors:
        print(f"[views]   front-end errors: {errors}")
    return out


# ============================================================================ main


def _first_render(w) -> int:
    """Bytes before a view's first render: its state message (``_esm`` / ``_css`` left out) plus
    every piece of the traits sent in pieces (the view fetches them before it draws)."""
    from ipywidgets.widgets.widget import _remove_buffers

    from mri_widgets.widgets.transport import message_bytes

    state = {k: v for k, v in w.get_state().items() if k not in ("_esm", "_css")}
    st, _, bufs = _remove_buffers(state)
    return message_bytes(st, bufs) + sum(v["nbytes"] for v in st.values() if isinstance(v, dict) and "mri_chunked" in v)


def _json_len_rows(a) -> int:
    """Length of ``json.dumps(a.tolist())`` (compact) computed one leading row at a time."""
    if a.ndim <= 1:
        return _dumps_len(_listify(a))
    return 2 + max(0, len(a) - 1) + sum(_json_len_rows(row) for row in a)


def lens_whole_json_bytes(res) -> int:
    """The whole content of a LensTable as JSON text: every cell's top-k (ids into a string table,
    probabilities), entropy, target probability and rank, the per-position arrays and strings."""
    uniq, first = np.unique(res.top_ids.reshape(-1), return_index=True)
    vocab = [str(x) for x in res.top_tokens.reshape(-1)[first]]
    idx = np.searchsorted(uniq, res.top_ids).astype(np.int32)
    small = {"tokens": [str(x) for x in res.tokens], "layer_names": list(res.layer_names), "vocab": vocab,
             "target_tokens": [str(x) for x in res.target_tokens], "best_layer": _listify(res.best_layer),
             "commitment_layer": _listify(res.commitment_layer), "vocab_size": res.vocab_size}
    big = {"top_idx": idx, "top_probs": res.top_probs, "entropy": res.entropy, "target_probs": res.target_probs,
           "target_ranks": res.target_ranks}
    return _dumps_len(small) + sum(len(json.dumps(k)) + 2 + _json_len_rows(np.asarray(v)) for k, v in big.items())


def measure_first_render_bytes(n_docs: int = 5000, n_layers: int = 31,
                               lens_cases=((2000, 20), (8192, 100)), lens_layers: int = 33) -> dict:
    """Bytes a view needs before its first render against its whole content as JSON text.

    Synthetic regions (``mri_widgets.testing.synthetic_areas``, no model): a CoactivationGraph of
    ``n_docs`` documents on a grid of 100 and a LayerGrid on a grid of 300; synthetic lens results
    (``mri_widgets.testing.synthetic_lens``: ``lens_layers`` columns) of (tokens, k) in
    ``lens_cases`` shown by ``LensTable.from_result``. "Before first render" is the state message
    (JSON + buffers, the ``_esm`` bundle left out) plus every piece of the traits sent in pieces
    (the view fetches them before it draws); "whole content" is the view's whole data
    (``GraphView.whole``: every node and edge; the lens: every cell's top-k and numbers, see
    :func:`lens_whole_json_bytes`) with arrays as JSON lists. Target: 1/10.
    """
    import mri_widgets as mw
    from mri_widgets.testing import synthetic_areas, synthetic_lens

    out = {}
    cases = [("coactivation_grid100", lambda: mw.CoactivationGraph(synthetic_areas(n_docs, n_layers, 100))),
             ("layer_grid_grid300", lambda: mw.LayerGrid(synthetic_areas(n_docs, n_layers, 300)))]
    for name, make in cases:
        w = make()
        first = _first_render(w)
        whole = _dumps_len(_listify(w.whole if hasattr(w, "whole") else w.data))
        out[name] = {"first_render_bytes": first, "whole_json_bytes": whole, "ratio": first / whole}
        print(f"[views] {name} ({n_docs} documents): {first / 2**20:.2f} MiB before first render, whole content "
              f"{whole / 2**20:.2f} MiB as JSON: ratio {first / whole:.3f} (target <= 0.1)")
    for n_tokens, k in lens_cases:
        res = synthetic_lens(n_tokens, lens_layers, k)
        w = mw.LensTable.from_result(res)
        first, whole = _first_render(w), lens_whole_json_bytes(res)
        name = f"lens_table_{n_tokens}tok_k{k}"
        out[name] = {"first_render_bytes": first, "whole_json_bytes": whole, "ratio": first / whole}
        print(f"[views] {name} ({n_tokens} tokens x {lens_layers} layers, k={k}): {first / 2**20:.2f} MiB before "
              f"first render, whole content {whole / 2**20:.2f} MiB as JSON: ratio {first / whole:.4f} (target <= 0.1)")
        del w, res
    return out


def main() -> dict:
    t = time.perf_counter()
    out = {"bytes": measure_bytes()}
    out["bytes_s"] = round(time.perf_counter() - t, 1)
    out["first_render_bytes"] = measure_first_render_bytes()
    t = time.perf_counter()
    try:
        out["render"] = measure_render()
    except Exception as e:  # the bytes figures still count; the runner writes the error
        import traceback

        traceback.print_exc()
        out["render"] = {"error": f"{type(e).__name__}: {e}"}
    out["render_s"] = round(time.perf_counter() - t, 1)
    return out


if __name__ == "__main__":
    main()
