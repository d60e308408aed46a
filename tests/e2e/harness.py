"""Real-browser test harness: JupyterLab / Notebook 7 server, Chromium pages, kernel access.

The pytest fixtures live in ``conftest.py`` (``jupyter_server``, ``browser``, ``page``); this
module holds the pieces they and the tests use:

- :class:`JupyterServer` - a JupyterLab server on a free loopback port with token auth, started
  by :func:`start_jupyter_server` and always stopped by :meth:`JupyterServer.stop`.
- :func:`write_notebook` - write an nbformat v4 notebook (with ``kernelspec`` metadata).
- :func:`open_notebook`, :func:`run_all`, :func:`wait_for_view` - drive the page.
- :func:`kernel_exec`, :func:`kernel_eval`, :func:`wait_for_python`, :func:`python_eval` - read
  and change Python state in the notebook's own kernel, through its connection file.
- :func:`attach_console_collector`, :func:`save_screenshot` - front-end errors and screenshots.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

try:  # re-exported for tests; without Playwright the fixtures skip (or fail in CI) with the reason
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover
    expect = None

#: Debian's Chromium (``playwright install`` cannot download a browser here); another binary
#: can be named with the environment variable ``MRI_E2E_CHROMIUM``.
CHROMIUM_PATH = os.environ.get("MRI_E2E_CHROMIUM", "/usr/bin/chromium")
#: Flags that work as root with no network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers: shared memory through /tmp, not a small /dev/shm
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Screenshots of failing tests and of the README gallery.
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
#: Repository root, put on the server's (and so the kernel's) PYTHONPATH.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Front-end errors that Jupyter's own front ends raise in this bare, offline setup and that
# say nothing about our views.  Each is matched with re.search against the error's message
# plus its stack (page errors) or source URL (console errors), so the patterns also pin where
# the error comes from.
BENIGN_CONSOLE_ERRORS = (
    # Notebook 7's shortcuts plugin reacts to a settings change of a plugin it does not have.
    r"reading 'schema'\)[\s\S]*/static/notebook/notebook_core\.",
    # Notebook 7's notebook page has no file browser, yet something asks it to open a path.
    r"Command 'filebrowser:open-path' not registered[\s\S]*/static/notebook/",
    r"Failed to load resource: .*(favicon|/api/translations)",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- server


@dataclass
class JupyterServer:
    """A running Jupyter server (JupyterLab, with Notebook 7 pages under ``/notebooks``).

    Attributes
    ----------
    url : str
        Base URL, e.g. ``"http://127.0.0.1:45678"`` (no trailing slash).
    token : str
        The random auth token.
    root_dir : pathlib.Path
        The server's root directory: write notebooks here.
    runtime_dir : pathlib.Path
        ``JUPYTER_RUNTIME_DIR`` of the server: holds ``kernel-<id>.json`` connection files.
    proc : subprocess.Popen
        The server process (leader of its own process group).
    log_path : pathlib.Path
        Server stdout + stderr.
    """

    url: str
    token: str
    root_dir: Path
    runtime_dir: Path
    proc: subprocess.Popen
    log_path: Path
    base_dir: Path
    _clients: dict = field(default_factory=dict, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # -- REST -------------------------------------------------------------------------
    def api(self, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        """Call the server's REST API with the token; return the decoded JSON (or None).

        Parameters
        ----------
        path : str
            Path below the base URL, e.g. ``"/api/sessions"``.
        method : str
            HTTP method.
        body : object, optional
            JSON-serialisable request body.
        timeout : float
            Seconds before the request gives up.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def page_url(self, path: str) -> str:
        """Absolute URL of a front-end page, with the token in the query string."""
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path}{sep}token={self.token}"

    def log_tail(self, n: int = 60) -> str:
        """The last ``n`` lines of the server log (for error messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no server log>"
        return "\n".join(lines[-n:])

    # -- kernels ----------------------------------------------------------------------
    def kernel_id(self, notebook: str, timeout: float = 30.0) -> str:
        """Kernel id of the session opened for ``notebook`` (path relative to the root).

        Waits up to ``timeout`` seconds for the front end to create the session.
        """
        notebook = _norm_path(notebook)
        deadline = time.monotonic() + timeout
        paths: list[str] = []
        while True:
            sessions = self.api("/api/sessions")
            paths = [s.get("path") for s in sessions]
            for s in sessions:
                if _norm_path(s.get("path", "")) == notebook and s.get("kernel"):
                    return s["kernel"]["id"]
            if time.monotonic() > deadline:
                raise KeyError(
                    f"no kernel session for notebook {notebook!r} (sessions: {paths}); "
                    "open it first with open_notebook(page, server, name)"
                )
            time.sleep(0.2)

    def kernel_client(self, notebook: str):
        """A connected, ready ``jupyter_client.BlockingKernelClient`` for ``notebook``'s kernel.

        Clients are cached per kernel id and closed by :meth:`shutdown_sessions` / :meth:`stop`.
        """
        from jupyter_client import BlockingKernelClient

        kid = self.kernel_id(notebook)
        client = self._clients.get(kid)
        if client is not None:
            return client
        cf = self.runtime_dir / f"kernel-{kid}.json"
        deadline = time.monotonic() + 10
        while not cf.exists():
            if time.monotonic() > deadline:
                raise FileNotFoundError(
                    f"connection file {cf} not found for kernel {kid}; files in the runtime "
                    f"dir: {sorted(p.name for p in self.runtime_dir.iterdir())}"
                )
            time.sleep(0.1)
        client = BlockingKernelClient()
        client.load_connection_file(str(cf))
        client.start_channels()
        client.wait_for_ready(timeout=30)
        self._clients[kid] = client
        return client

    def shutdown_sessions(self) -> None:
        """Close cached kernel clients and delete every session (stops their kernels)."""
        for client in self._clients.values():
            try:
                client.stop_channels()
            except Exception:  # best effort cleanup
                pass
        self._clients.clear()
        try:
            for s in self.api("/api/sessions"):
                self.api(f"/api/sessions/{s['id']}", method="DELETE", timeout=30)
        except (urllib.error.URLError, OSError):
            pass

    def stop(self) -> None:
        """Kill the server's whole process group (kernels included) and remove its temp dir.

        Safe to call more than once (it is also registered with :mod:`atexit`).
        """
        if self._stopped:
            return
        self._stopped = True
        for client in self._clients.values():
            try:
                client.stop_channels()
            except Exception:  # best effort cleanup
                pass
        self._clients.clear()
        _kill_group(self.proc)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _norm_path(p: str) -> str:
    return p.strip("/").replace("\\", "/")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while kernels (same group) linger: always sweep with SIGKILL.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def _lab_settings(settings_dir: Path) -> None:
    """User settings for tests: no news / update toasts; every cell attached to the DOM.

    ``windowingMode: none`` keeps outputs of cells far down a long notebook in the DOM and
    laid out, so locators find and see them without scrolling tricks.
    """
    settings = {
        ("apputils-extension", "notification"): {"fetchNews": "false", "checkForUpdates": False},
        ("notebook-extension", "tracker"): {"windowingMode": "none"},
    }
    for (ext, plugin), values in settings.items():
        target = settings_dir / "@jupyterlab" / ext
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))


def start_jupyter_server(timeout: float = 60.0) -> JupyterServer:
    """Start JupyterLab on a free loopback port, token auth, temporary root; wait until ready.

    The server runs ``sys.executable -m jupyter lab`` in its own process group, with
    ``HF_HUB_OFFLINE=1``, the repository root on ``PYTHONPATH`` (so kernels import
    ``mri_widgets``), ``MRI_WIDGETS_CACHE`` passed through unchanged when set, and private
    runtime / settings / workspace directories.  ``window.jupyterapp`` is exposed in both
    JupyterLab and Notebook 7 pages.

    Parameters
    ----------
    timeout : float
        Seconds to wait for ``/api/status`` to answer.

    Returns
    -------
    JupyterServer
        Call :meth:`JupyterServer.stop` when done (the ``jupyter_server`` fixture does).

    Raises
    ------
    RuntimeError
        If the server exits or does not answer in time; the message holds the log tail.
    """
    base = Path(tempfile.mkdtemp(prefix="mri-e2e-"))
    root, runtime, settings, workspaces = (base / d for d in ("root", "runtime", "settings", "ws"))
    for d in (root, runtime, settings, workspaces):
        d.mkdir()
    _lab_settings(settings)
    token = secrets.token_hex(24)
    port = free_port()
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(workspaces)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env.pop("JUPYTER_TOKEN", None)
    # MRI_WIDGETS_CACHE: inherited as is when the parent sets it (never overridden here).
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    log_path = base / "server.log"
    log = open(log_path, "wb")  # handed to the child, closed below
    try:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    finally:
        log.close()
    server = JupyterServer(
        url=f"http://127.0.0.1:{port}", token=token, root_dir=root, runtime_dir=runtime,
        proc=proc, log_path=log_path, base_dir=base,
    )
    atexit.register(server.stop)  # belt and braces: also stopped if the fixture never tears down
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with code {proc.returncode} before it was ready:\n"
                    + server.log_tail()
                )
            try:
                urllib.request.urlopen(f"{server.url}/api/status?token={token}", timeout=2).read()
                return server
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyter lab did not answer on {server.url} within {timeout:.0f} s:\n"
                    + server.log_tail()
                )
            time.sleep(0.25)
    except BaseException:
        server.stop()
        raise


# --------------------------------------------------------------------------- notebooks


def write_notebook(root: str | os.PathLike, name: str, cells: list[str]) -> Path:
    """Write a Python 3 notebook of code cells (nbformat v4, with ``kernelspec`` metadata).

    Parameters
    ----------
    root : path-like
        Directory to write into (usually ``jupyter_server.root_dir``).
    name : str
        File name relative to ``root``, ending in ``.ipynb``; sub-folders are created.
    cells : list of str
        Source of each code cell, in order.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(name, str) or not name.endswith(".ipynb"):
        raise ValueError(f"notebook name must be a str ending in '.ipynb', got {name!r}")
    if isinstance(cells, str) or not all(isinstance(c, str) for c in cells):
        raise TypeError("cells must be a list of source strings, one per code cell")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = Path(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# JS helpers: find the panel of a notebook path in the app shell (Lab or Notebook 7).
_JS_FIND = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of app.shell.widgets('main')) {
    if (w && w.context && w.context.path === path && w.content && w.sessionContext) return w;
  }
  return null;
};
"""

_JS_STATE = _JS_FIND + """
(path) => {
  const p = findPanel(path);
  if (!p) return {found: false};
  const k = p.sessionContext.session && p.sessionContext.session.kernel;
  const cells = [];
  for (const c of p.content.model.cells) {
    if (c.type !== 'code') continue;
    const errors = [];
    for (let i = 0; i < c.outputs.length; i++) {
      const o = c.outputs.get(i).toJSON();
      if (o.output_type === 'error') {
        errors.push({ename: o.ename, evalue: o.evalue, traceback: (o.traceback || []).join('\\n')});
      }
    }
    cells.push({source: c.sharedModel.getSource(), count: c.executionCount, errors});
  }
  return {found: true, ready: p.context.isReady && p.sessionContext.isReady,
          status: k ? k.status : null, cells};
}
"""


def _state(page, name: str) -> dict:
    return page.evaluate(_JS_STATE, _norm_path(name))


def _poll(fn, timeout: float, what: str, interval: float = 0.1):
    """Call ``fn`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def open_notebook(page, server: JupyterServer, name: str, *, notebook7: bool = False,
                  timeout: float = 60.0) -> None:
    """Open ``name`` in JupyterLab (or Notebook 7) and wait until its kernel is idle.

    Parameters
    ----------
    page : playwright.sync_api.Page
    server : JupyterServer
    name : str
        Notebook path relative to ``server.root_dir``.
    notebook7 : bool
        Open the Notebook 7 page ``/notebooks/<name>`` instead of ``/lab/tree/<name>``.
    timeout : float
        Seconds to wait for the page, the notebook and the kernel.
    """
    name = _norm_path(name)
    if not (server.root_dir / name).is_file():
        raise FileNotFoundError(
            f"{name!r} is not in the server root {server.root_dir}; write it with write_notebook"
        )
    quoted = urllib.parse.quote(name)
    # ?reset: start from an empty workspace, so notebooks of earlier tests are not restored.
    path = f"/notebooks/{quoted}" if notebook7 else f"/lab/tree/{quoted}?reset"
    page.goto(server.page_url(path), wait_until="domcontentloaded", timeout=timeout * 1000)
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout * 1000)
    page.evaluate("async () => { await window.jupyterapp.started; await window.jupyterapp.restored; }")

    def ready():
        st = _state(page, name)
        return st.get("found") and st.get("ready") and st.get("status") == "idle"

    _poll(ready, timeout, f"notebook {name!r} to open with an idle kernel")
    page.evaluate(_JS_FIND + "(path) => window.jupyterapp.shell.activateById(findPanel(path).id)",
                  name)


def run_all(page, name: str | None = None, *, timeout: float = 120.0) -> None:
    """Run every cell of the open notebook; wait until each code cell has run and the kernel is idle.

    Parameters
    ----------
    page : playwright.sync_api.Page
    name : str, optional
        Notebook path; defaults to the one in the page URL.
    timeout : float
        Seconds to wait for the run.

    Raises
    ------
    AssertionError
        If a cell raised; the message holds its exception and traceback.
    TimeoutError
        If the cells did not all finish in time.
    """
    name = _norm_path(name or notebook_from_url(page.url))
    page.evaluate(
        _JS_FIND + """async (path) => {
          const app = window.jupyterapp;
          app.shell.activateById(findPanel(path).id);
          await app.commands.execute('notebook:run-all-cells');
        }""",
        name,
    )

    def done():
        st = _state(page, name)
        for i, c in enumerate(st.get("cells", [])):
            for e in c["errors"]:
                raise AssertionError(
                    f"cell {i} of {name} raised {e['ename']}: {e['evalue']}\n"
                    + _ANSI.sub("", e["traceback"])
                )
        pending = [c for c in st["cells"] if c["source"].strip() and c["count"] is None]
        return st.get("status") == "idle" and not pending

    _poll(done, timeout, f"all cells of {name!r} to run")


def wait_for_view(page, css_selector: str, *, timeout: float = 30.0):
    """Wait until an element matching ``css_selector`` is visible; return its Locator (first match)."""
    loc = page.locator(css_selector).first
    loc.wait_for(state="visible", timeout=timeout * 1000)
    return loc


def notebook_from_url(url: str) -> str:
    """Notebook path from a ``/lab/tree/...``, ``/lab/workspaces/<w>/tree/...`` or ``/notebooks/...`` URL."""
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    m = re.search(r"/(?:lab(?:/workspaces/[^/]+)?/tree|notebooks)/(.+\.ipynb)$", path)
    if not m:
        raise ValueError(f"cannot tell which notebook is open from URL {url!r}; pass name=")
    return m.group(1)


# --------------------------------------------------------------------------- kernel access


class KernelError(RuntimeError):
    """Code sent with :func:`kernel_exec` raised in the kernel."""


def kernel_exec(server: JupyterServer, notebook: str, code: str, *, timeout: float = 60.0) -> str:
    """Execute ``code`` in the kernel of an open notebook; return what it printed to stdout.

    Goes through the kernel's connection file (not the browser), so it is independent of the
    page; comm messages it causes (``w.count = 10``) still reach the front end.  Runs with
    ``store_history=False``: cell execution counts in the notebook do not change.

    Raises
    ------
    KernelError
        If the code raised; the message holds the traceback.
    """
    client = server.kernel_client(notebook)
    out: list[str] = []
    err: list[str] = []

    def hook(msg):
        t = msg["msg_type"]
        if t == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif t == "error":
            c = msg["content"]
            err.append(f"{c['ename']}: {c['evalue']}\n" + _ANSI.sub("", "\n".join(c["traceback"])))

    reply = client.execute_interactive(
        code, store_history=False, output_hook=hook, timeout=timeout, allow_stdin=False
    )
    if err or reply["content"]["status"] != "ok":
        c = reply["content"]
        raise KernelError(
            f"kernel_exec raised in {notebook}:\n"
            + ("\n".join(err) or f"{c.get('ename')}: {c.get('evalue')}")
        )
    return "".join(out)


_SENTINEL = "<<<MRI_E2E>>>"


def kernel_eval(server: JupyterServer, notebook: str, expr: str, *, timeout: float = 60.0) -> str:
    """``repr`` of the Python expression ``expr`` evaluated in the notebook's kernel."""
    code = f"print({_SENTINEL!r} + repr(({expr})) + {_SENTINEL!r})"
    out = kernel_exec(server, notebook, code, timeout=timeout)
    m = re.search(re.escape(_SENTINEL) + r"(.*)" + re.escape(_SENTINEL), out, re.S)
    if not m:
        raise KernelError(f"no value printed for {expr!r}; stdout was {out!r}")
    return m.group(1)


def python_eval(page, server: JupyterServer, expr: str, *, timeout: float = 60.0) -> str:
    """``repr`` of ``expr`` in the kernel of the notebook open in ``page`` (see :func:`kernel_eval`)."""
    return kernel_eval(server, notebook_from_url(page.url), expr, timeout=timeout)


def wait_for_python(server: JupyterServer, notebook: str, expr: str, expected: Any, *,
                    timeout: float = 10.0) -> None:
    """Poll until ``repr(expr)`` in the kernel equals ``repr(expected)``.

    Use it after a browser interaction: a click's comm message travels browser -> server ->
    kernel on another connection than :func:`kernel_exec`, so it may land a moment later.

    Raises
    ------
    AssertionError
        With the last value seen, if it never matched.
    """
    want = repr(expected)
    deadline = time.monotonic() + timeout
    while True:
        got = kernel_eval(server, notebook, expr)
        if got == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} is {got}, expected {want} (waited {timeout:.0f} s)")
        time.sleep(0.1)


# --------------------------------------------------------------------------- page utilities


class ConsoleErrors(list):
    """Front-end errors of a page: ``console.error`` messages and uncaught exceptions.

    A list of strings, minus :data:`BENIGN_CONSOLE_ERRORS`; ``.all`` keeps every one.
    """

    def __init__(self):
        super().__init__()
        self.all: list[str] = []

    def add(self, text: str, where: str = "") -> None:
        """Record ``text``; ``where`` (stack or URL) is used only to recognise benign errors."""
        self.all.append(text + (f"\n{where}" if where else ""))
        full = f"{text}\n{where}"
        if not any(re.search(p, full) for p in BENIGN_CONSOLE_ERRORS):
            self.append(text)


def attach_console_collector(page) -> ConsoleErrors:
    """Collect console errors and page errors of ``page`` into ``page.console_errors``."""
    errors = ConsoleErrors()

    def on_console(msg):
        if msg.type == "error":
            loc = msg.location or {}
            errors.add(f"console.error: {msg.text}",
                       f"at {loc.get('url', '')}:{loc.get('lineNumber', '')}")

    def on_pageerror(exc):
        errors.add(f"pageerror: {exc.message}", exc.stack or "")

    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    page.console_errors = errors
    return errors


def save_screenshot(page, name: str) -> Path:
    """Save a full-page PNG to ``tests/e2e/artifacts/<name>.png`` and return its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screenshot"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
