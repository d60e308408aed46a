"""The whole chain with our own widget base: binary arrays in, shared selection out, both ways,
in JupyterLab and in Notebook 7."""

import pytest

from .harness import write_notebook, kernel_exec, open_notebook, run_all, save_screenshot, wait_for_python, wait_for_view

CELLS = [
    "import mri_widgets as mw\n"
    "sel = mw.Selection()\n"
    "a = mw.TokenHeat(['The', ' <b>cat</b>', ' sat'], [0.2, -1.0, 0.9], title='first', selection=sel)\n"
    "a",
    "b = mw.TokenHeat(['The', ' <b>cat</b>', ' sat'], [1.0, 0.5, 0.1], title='second', selection=sel)\n"
    "b",
]


def _spans(page, title):
    return page.locator(f".mri-token_heat:has(.mri-title:text-is('{title}')) .mri-tok")


@pytest.mark.parametrize("front_end", ["lab", "notebook7"])
def test_token_heat_links_views_and_python(jupyter_server, page, front_end):
    nb = f"foundation_{front_end}.ipynb"
    write_notebook(jupyter_server.root_dir, nb, CELLS)
    open_notebook(page, jupyter_server, nb, notebook7=front_end == "notebook7")
    run_all(page)
    wait_for_view(page, ".mri-token_heat .mri-tok")
    first, second = _spans(page, "first"), _spans(page, "second")
    assert first.count() == 3 and second.count() == 3
    # corpus / token text is shown as text, never parsed as HTML
    assert first.nth(1).text_content() == " <b>cat</b>"
    assert page.locator(".mri-token_heat b").count() == 0
    # click in the first view: Python's selection and the second view follow
    first.nth(2).click()
    wait_for_python(jupyter_server, nb, "sel.position", 2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mri-token_heat')].every(v => v.querySelectorAll('.mri-tok.mri-selected').length === 1)")
    # set from Python: both views move
    kernel_exec(jupyter_server, nb, "sel.position = 0")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mri-token_heat')].every(v => v.querySelector('.mri-tok.mri-selected')?.dataset.position === '0')")
    # new arrays from Python update the view in place
    kernel_exec(jupyter_server, nb, "a.set_tokens(['x', 'y', 'z', 'w'], [1, 2, 3, 4], title='first')")
    page.wait_for_function("() => document.querySelectorAll('.mri-token_heat')[0].querySelectorAll('.mri-tok').length === 4")
    if front_end == "lab":
        save_screenshot(page, "token_heat")
    assert list(page.console_errors) == []
