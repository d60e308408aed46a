"""LensTable in JupyterLab: hover shows the top-k, click and arrow keys set the selection in Python,
Python changes the view in place, and the image-patch panel of a tiny LLaVA."""

import pytest

from .harness import (expect, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view,
                      write_notebook)

pytestmark = pytest.mark.e2e

NB = "lens_table.ipynb"
CELLS = [
    "from mri_widgets.testing import tiny_model\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt_neox')\n"
    "sel = mw.Selection()\n"
    "w = mw.LensTable(lm, 'The capital of France is Paris. <img src=x onerror=alert(1)> The cat sat on the mat.',"
    " selection=sel)\n"
    "w",
]


def _cell(page, layer, pos):
    return page.locator(f".mri-lens_table .mri-lens-cell[data-layer='{layer}'][data-pos='{pos}']")


def test_lens_table_hover_click_keys_and_python(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, NB, CELLS)
    open_notebook(page, jupyter_server, NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    # token strings are text: the prompt's <img ...> is shown, not parsed
    assert page.locator(".mri-lens_table img").count() == 0
    expect(page.locator(".mri-lens_table .mri-lens-rowhead")).to_contain_text("<")

    # hover a cell: the tooltip lists the top-k tokens with probabilities
    _cell(page, 2, 3).hover()
    tip = page.locator(".mri-lens_table .mri-tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("layer 2 (after block 2)")
    expect(tip.locator("tr")).to_have_count(5)  # fetched from Python on hover

    # click pins the cell and sets the selection in Python
    _cell(page, 2, 3).click()
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (2, 3))
    assert "mri-lens-pinned" in (_cell(page, 2, 3).get_attribute("class") or "")
    # arrow keys move the pinned cell (and JupyterLab does not move notebook cells)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    wait_for_python(jupyter_server, NB, "(sel.layer, sel.position)", (3, 4))

    # Python -> view: the selection, the metric and the prompt update the same view
    kernel_exec(jupyter_server, NB, "sel.update(layer=1, position=0)")
    page.wait_for_function(
        "() => document.querySelector(\".mri-lens-cell.mri-lens-pinned\")?.dataset.pos === '0' &&"
        " document.querySelector('.mri-lens-cell.mri-lens-pinned')?.dataset.layer === '1'")
    kernel_exec(jupyter_server, NB, "w.metric = 'entropy'")
    expect(page.locator(".mri-lens_table select.mri-lens-metric")).to_have_value("entropy")
    kernel_exec(jupyter_server, NB, "w.prompt = 'A quick brown fox jumps over the lazy dog.'")
    expect(page.locator(".mri-lens_table .mri-lens-rowhead")).to_contain_text("jum")
    assert page.locator(".mri-lens_table").count() == 1
    _cell(page, 3, 2).hover()
    save_screenshot(page, "lens_table")
    assert list(page.console_errors) == []


IMG_NB = "lens_image.ipynb"
IMG_CELLS = [
    "import numpy as np\n"
    "from mri_widgets.testing import tiny_model\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('llava')\n"
    "yy, xx = np.mgrid[0:56, 0:56]\n"
    "img = np.stack([xx * 4, yy * 4, 255 - xx * 2], -1).astype(np.uint8)\n"
    "w = mw.LensTable(lm, 'What is in the picture?', image=img)\n"
    "w",
]


def test_lens_table_image_patches(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, IMG_NB, IMG_CELLS)
    open_notebook(page, jupyter_server, IMG_NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-patch")
    patches = page.locator(".mri-lens_table .mri-lens-patch")
    assert patches.count() == 16
    # the image really loaded from the PNG bytes
    page.wait_for_function("() => document.querySelector('.mri-lens-imgbox img')?.naturalWidth === 28")
    # hover patch (1, 2) = image token 6: its row lights up and the info shows its best layer
    patches.nth(6).hover()
    expect(page.locator(".mri-lens_table .mri-lens-info")).to_contain_text("patch (1, 2)")
    page.wait_for_function("() => document.querySelector(\".mri-lens-cell[data-pos='6']\")?.classList.contains('mri-lens-rowhi')")
    patches.nth(6).click()
    best = int(kernel_exec(jupyter_server, IMG_NB, "print(int(w.result.best_layer[6]))").strip())
    wait_for_python(jupyter_server, IMG_NB, "(w.selection.layer, w.selection.position)", (best, 6))
    save_screenshot(page, "lens_table_image")
    assert list(page.console_errors) == []


BIG_NB = "lens_big.ipynb"
BIG_CELLS = [
    "import numpy as np\n"
    "import mri_widgets as mw\n"
    "from mri_widgets.analysis.lens import LensResult\n"
    "L, S, k = 33, 512, 5\n"
    "rng = np.random.default_rng(0)\n"
    "ids = rng.integers(0, 1000, (L, S, k))\n"
    "tops = np.vectorize(lambda i: f' w{i}', otypes=[object])(ids)\n"
    "probs = np.sort(rng.random((L, S, k)).astype(np.float32) / 5, -1)[..., ::-1].copy()\n"
    "res = LensResult(prompt='synthetic', tokens=[f' tok{i}' for i in range(S)], input_ids=np.arange(S),\n"
    "                 layer_names=['emb'] + [str(i) for i in range(1, L)], top_ids=ids, top_tokens=tops,\n"
    "                 top_probs=probs, entropy=rng.random((L, S)).astype(np.float32),\n"
    "                 target_ids=ids[-1, :, 0], target_tokens=list(tops[-1, :, 0]), target_probs=probs[..., 0],\n"
    "                 target_ranks=np.zeros((L, S), np.int64), vocab_size=1000, model_name='synthetic')\n"
    "w = mw.LensTable.from_result(res)\n"
    "w",
]


def test_lens_table_512_by_33_renders_what_is_visible(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, BIG_NB, BIG_CELLS)
    open_notebook(page, jupyter_server, BIG_NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    def count():
        return page.locator(".mri-lens_table .mri-lens-cell").count()

    assert 50 < count() < 1500, count()  # not 512 * 33 = 16,896
    # scroll through the whole table: every step paints only the visible window
    ms = page.evaluate("""async () => {
        const body = document.querySelector('.mri-lens_table .mri-lens-body');
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        const t0 = performance.now();
        for (let i = 1; i <= 40; i++) { body.scrollTop = (body.scrollHeight * i) / 40; body.scrollLeft = (body.scrollWidth * i) / 40; await frame(); }
        await frame();
        return (performance.now() - t0) / 40;
    }""")
    idle = page.evaluate("""async () => {
        const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
        const t0 = performance.now();
        for (let i = 0; i < 40; i++) await frame();
        return (performance.now() - t0) / 40;
    }""")
    print(f"mean frame while scrolling 512 x 33: {ms:.1f} ms (idle frames: {idle:.1f} ms)")
    page.wait_for_function("() => !!document.querySelector(\".mri-lens-cell[data-pos='511'][data-layer='32']\")")
    assert count() < 1500
    # the headers stayed in view and follow the scroll
    expect(page.locator(".mri-lens_table .mri-lens-rowhead")).to_contain_text("tok511")
    expect(page.locator(".mri-lens_table .mri-lens-colhead")).to_contain_text("32")
    save_screenshot(page, "lens_table_big")
    assert list(page.console_errors) == []


GEN_NB = "lens_generate.ipynb"
GEN_CELLS = [
    "from mri_widgets.testing import tiny_model\n"
    "import mri_widgets as mw\n"
    "lm = tiny_model('gpt_neox')\n"
    "w = mw.LensTable(lm, 'The capital of France is', generate=6, height=320)\n"
    "w",
]


def test_lens_table_generated_rows_and_commitment(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, GEN_NB, GEN_CELLS)
    open_notebook(page, jupyter_server, GEN_NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    n_prompt = int(kernel_exec(jupyter_server, GEN_NB, "print(w.result.n_prompt)").strip())
    n_all = int(kernel_exec(jupyter_server, GEN_NB, "print(w.result.n_positions)").strip())
    commit = int(kernel_exec(jupyter_server, GEN_NB, "print(int(w.result.commitment_layer[w.result.n_prompt]))").strip())
    assert n_all == n_prompt + 6 and commit >= 0
    # the generated rows are marked, the first one carries the separator
    heads = page.locator(".mri-lens_table .mri-lens-rowhead .mri-lens-h")
    expect(heads).to_have_count(n_all)
    gen = page.locator(".mri-lens_table .mri-lens-rowhead .mri-lens-h.mri-lens-gen")
    expect(gen).to_have_count(6)
    assert gen.first.get_attribute("data-row") == str(n_prompt)
    assert "mri-lens-gensep-r" in (gen.first.get_attribute("class") or "")
    # the commitment marker sits on the row predicting the first generated token; hover says the layer
    target = _cell(page, commit, n_prompt - 1)
    assert "mri-lens-commit" in (target.get_attribute("class") or "")
    assert page.locator(f".mri-lens_table .mri-lens-cell.mri-lens-commit[data-pos='{n_prompt - 1}']").count() == 1
    target.hover()
    tip = page.locator(".mri-lens_table .mri-tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"committed from layer {commit if commit else 'emb'}")
    expect(page.locator(".mri-lens_table")).to_contain_text("6 generated (greedy)")
    save_screenshot(page, "lens_table_generate")
    # Python -> view: fewer tokens redraw the same view
    kernel_exec(jupyter_server, GEN_NB, "w.generate = 2")
    expect(page.locator(".mri-lens_table .mri-lens-rowhead .mri-lens-h.mri-lens-gen")).to_have_count(2)
    # view -> Python: the toolbar's generate box
    box = page.locator(".mri-lens_table input.mri-lens-generate")
    expect(box).to_have_value("2")
    box.fill("4")
    box.press("Enter")
    box.blur()
    wait_for_python(jupyter_server, GEN_NB, "w.result.n_generated", 4)
    assert page.locator(".mri-lens_table").count() == 1
    assert list(page.console_errors) == []


RELOAD_NB = "lens_table_reload.ipynb"
RELOAD_CELLS = [
    "import mri_widgets as mw\n"
    "from mri_widgets.testing import synthetic_lens\n"
    "res = synthetic_lens(2000, 33, 20)\n"
    "w = mw.LensTable.from_result(res)\n"
    "w",
    "display(w)",
]


def _whole(page, k):
    """Both views of the widget drawn, and hovering a cell of each fills its top-k from Python."""
    tables = page.locator(".mri-lens_table")
    expect(tables).to_have_count(2)
    for i in range(2):
        t = tables.nth(i)
        expect(t.locator(".mri-lens-cell[data-layer='3'][data-pos='4']")).to_have_count(1)
        t.locator(".mri-lens-cell[data-layer='3'][data-pos='4']").hover()
        tip = t.locator(".mri-tooltip")
        expect(tip).to_be_visible()
        expect(tip).to_contain_text("#4")
        expect(tip.locator("tr")).to_have_count(k, timeout=20000)
        expect(tip).not_to_contain_text("loading...")
        # the tooltip's first row is the result's top-1 token (the cell's own text)
        first = tip.locator("tr").first.locator("td").first.inner_text()
        assert first.strip('"') == t.locator(".mri-lens-cell[data-layer='3'][data-pos='4']").inner_text().replace("\u2423", " ")


def test_lens_table_displayed_twice_and_after_a_reload(jupyter_server, page):
    write_notebook(jupyter_server.root_dir, RELOAD_NB, RELOAD_CELLS)
    open_notebook(page, jupyter_server, RELOAD_NB)
    run_all(page)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell")
    _whole(page, 20)
    save_screenshot(page, "lens_table_twice")
    # save the outputs (the widget views), then load the page again: the views come back whole
    # from the kernel's live widget state, and the top-k lists are fetched again
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(1000)
    open_notebook(page, jupyter_server, RELOAD_NB)
    wait_for_view(page, ".mri-lens_table .mri-lens-cell", timeout=60)
    _whole(page, 20)
    save_screenshot(page, "lens_table_reloaded")
