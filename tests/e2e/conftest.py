"""Fixtures for real-browser tests: a JupyterLab server, Debian's Chromium, one page per test.

Fixtures
--------
jupyter_server (package: one for all of tests/e2e)
    :class:`harness.JupyterServer`: ``.url``, ``.token``, ``.root_dir`` (write notebooks here),
    ``.api(path)``.  Killed (whole process group) after the last e2e test, even on failure, so
    a full ``pytest tests/`` run does not keep JupyterLab and Chromium alive for other tests.
browser (package)
    A Playwright Chromium ``Browser`` on ``/usr/bin/chromium``.
page (function)
    A fresh page (own context, 1400x1000) with ``page.console_errors`` collecting front-end
    errors.  When the test fails, a full-page screenshot goes to
    ``tests/e2e/artifacts/<test name>.png``.  After each test every kernel session is shut down.

Without ``/usr/bin/chromium`` (or Playwright) the tests are skipped, unless ``CI`` is set: then
they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import (
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    attach_console_collector,
    save_screenshot,
    start_jupyter_server,
)

_HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: real-browser test (JupyterLab + Chromium); deselect with -m 'not e2e'"
    )


def pytest_collection_modifyitems(config, items):
    # Every test under tests/e2e is an e2e test, marked or not.
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def _require_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or Playwright is missing."""
    problem = None
    if not os.path.exists(CHROMIUM_PATH):
        problem = f"{CHROMIUM_PATH} not found (install it with: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright; no `playwright install`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {problem}", pytrace=False)
        pytest.skip(f"browser tests skipped: {problem}")


@pytest.fixture(scope="package")
def jupyter_server():
    """A JupyterLab server for the whole session (see module docstring)."""
    _require_browser()
    server = start_jupyter_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def _playwright():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(_playwright):
    """Debian's Chromium, headless, launched through Playwright."""
    b = _playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS,
                                    headless=True)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(request, browser, jupyter_server):
    """A fresh page; screenshot on failure; kernels shut down afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    attach_console_collector(pg)
    try:
        yield pg
    finally:
        try:
            failed = any(
                getattr(request.node, f"rep_{when}", None) is not None
                and getattr(request.node, f"rep_{when}").failed
                for when in ("setup", "call")
            )
            if failed:
                try:
                    path = save_screenshot(pg, request.node.name)
                    print(f"\nscreenshot of the failing page: {path}")
                    if pg.console_errors.all:
                        print("browser console errors:\n  " + "\n  ".join(pg.console_errors.all))
                except Exception as exc:  # a screenshot must not mask the failure
                    print(f"\ncould not save a screenshot: {exc}")
        finally:
            context.close()
            jupyter_server.shutdown_sessions()
