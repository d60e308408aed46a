"""The browser chain works: notebook -> kernel -> anywidget view -> click -> Python, and back."""

from __future__ import annotations

import json

import pytest
from .harness import (
    KernelError,
    expect,
    kernel_eval,
    kernel_exec,
    notebook_from_url,
    open_notebook,
    python_eval,
    run_all,
    save_screenshot,
    wait_for_python,
    wait_for_view,
    write_notebook,
)

pytestmark = pytest.mark.e2e

COUNTER_CELL = '''
import anywidget, traitlets

class Counter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const btn = document.createElement("button");
      btn.className = "e2e-counter";
      const update = () => { btn.textContent = `count is ${model.get("count")}`; };
      btn.addEventListener("click", () => {
        model.set("count", model.get("count") + 1);
        model.save_changes();
      });
      model.on("change:count", update);
      update();
      el.appendChild(btn);
    }
    export default { render };
    """
    count = traitlets.Int(0).tag(sync=True)

w = Counter()
w
'''


def _check_counter_roundtrip(page, server, name):
    button = wait_for_view(page, "button.e2e-counter")
    expect(button).to_have_text("count is 0")
    for _ in range(3):
        button.click()
    expect(button).to_have_text("count is 3")
    # JS -> Python: the clicks reached the kernel's widget.
    wait_for_python(server, name, "w.count", 3)
    # Python -> JS: a change made in the kernel shows in the DOM.
    kernel_exec(server, name, "w.count = 10")
    expect(button).to_have_text("count is 10")
    assert kernel_eval(server, name, "w.count") == "10"
    assert python_eval(page, server, "w.count") == "10"
    assert list(page.console_errors) == []


def test_counter_widget_lab(page, jupyter_server):
    name = "counter_lab.ipynb"
    write_notebook(jupyter_server.root_dir, name, [COUNTER_CELL, "print('second cell ran')"])
    open_notebook(page, jupyter_server, name)
    run_all(page)
    _check_counter_roundtrip(page, jupyter_server, name)
    # kernel_exec returns stdout and does not touch the notebook's execution counts.
    assert kernel_exec(jupyter_server, name, "print(1 + 1)") == "2\n"
    save_screenshot(page, "harness_counter_lab")


def test_counter_widget_notebook7(page, jupyter_server):
    name = "sub dir/counter nb7.ipynb"  # spaces and a folder: URL quoting is exercised
    write_notebook(jupyter_server.root_dir, name, [COUNTER_CELL])
    open_notebook(page, jupyter_server, name, notebook7=True)
    assert notebook_from_url(page.url) == name
    run_all(page)
    _check_counter_roundtrip(page, jupyter_server, name)


def test_run_all_reports_cell_errors(page, jupyter_server):
    name = "raises.ipynb"
    write_notebook(jupyter_server.root_dir, name, ["x = 1", "raise ValueError('boom 42')"])
    open_notebook(page, jupyter_server, name)
    with pytest.raises(AssertionError, match="ValueError: boom 42"):
        run_all(page)
    # kernel_exec surfaces Python errors too.
    with pytest.raises(KernelError, match="ZeroDivisionError"):
        kernel_exec(jupyter_server, name, "1 / 0")
    assert kernel_eval(jupyter_server, name, "x + 1") == "2"


def test_write_notebook_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=".ipynb"):
        write_notebook(tmp_path, "nb.txt", ["1"])
    with pytest.raises(TypeError, match="list of source strings"):
        write_notebook(tmp_path, "nb.ipynb", "print(1)")
    path = write_notebook(tmp_path, "a/b.ipynb", ["x = 1", "x"])
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert ["".join(c["source"]) for c in nb["cells"]] == ["x = 1", "x"]
