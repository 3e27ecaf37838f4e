"""JupyterLab in headless Chromium: a server, a notebook page, cells run from the front end.

``tests/test_browser.py`` drives notebook 06's widgets with it; run as a script it refreshes
the explorers' screenshots (notebooks/figures, linked from docs/setup.md)::

    python tests/lab_browser.py --screenshots notebooks/figures

The browser is the system's Chromium (Debian's ``chromium`` package), driven by Playwright's
Python package; Playwright downloads no browser of its own. JupyterLab starts with
``--expose-app-in-browser`` so that the page can run its commands (``window.jupyterapp``).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system's Chromium, or None."""
    return next((path for path in map(shutil.which, CHROMIUM) if path), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@contextlib.contextmanager
def jupyter_lab(notebooks: list[Path], *, env: dict | None = None, timeout: float = 120):
    """A JupyterLab server on 127.0.0.1 with a random token, serving copies of ``notebooks`` in a
    temporary folder (the repository's notebooks are never written: running cells from the page
    would save outputs into them): yields (base URL, token); open a copy by its file name.

    On the way out, also after a failure, every kernel is shut down through the server's API, the
    server is stopped (its whole process group on POSIX) and the folder removed.
    """
    root = Path(tempfile.mkdtemp(prefix="lab-root-"))
    for nb in notebooks:
        shutil.copy(nb, root / Path(nb).name)
    port, token = _free_port(), secrets.token_hex(16)
    settings = Path(tempfile.mkdtemp(prefix="lab-settings-"))  # the user's own settings and layout stay out
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")  # no news toast
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}), encoding="utf-8")  # every cell in the page, not only
    # those in view, so that any cell can be found and shot
    docs = settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
    docs.parent.mkdir(parents=True)
    docs.write_text(json.dumps({"autosave": False}), encoding="utf-8")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--expose-app-in-browser",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={settings}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=os.name == "posix")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}: {log.read().decode()[-2000:]}")
            with contextlib.suppress(OSError):
                _api(base, token, "/api/status")
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.5)
        yield base, token
    finally:
        with contextlib.suppress(Exception):
            for kernel in _api(base, token, "/api/kernels"):
                _api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            if os.name == "posix":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(settings, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def browser_page(*, width: int = 1400, height: int = 1000):
    """A page of headless Chromium (the system's), via Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


_NOTEBOOK = "window.jupyterapp && window.jupyterapp.shell.currentWidget"


def open_notebook(page, base: str, token: str, path: str, *, timeout: float = 120) -> None:
    """Open ``path`` (relative to the server's root) in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{base}/lab/tree/{path}?token={token}")
    page.wait_for_function(f"""() => {{ const w = {_NOTEBOOK};
        return w && w.context && w.context.isReady && w.context.path === {json.dumps(path)}
            && w.sessionContext.session && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.status === 'idle'; }}""", timeout=timeout * 1000)


def run_cell(page, index: int, *, above: bool = False, timeout: float = 300) -> list[dict]:
    """Run cell ``index`` (and, with ``above``, every cell before it) from the front end, wait until it
    has run, and return its outputs (nbformat dicts)."""
    page.evaluate("""async ([index, above]) => {
        const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = index;
        if (above) { await window.jupyterapp.commands.execute('notebook:run-all-above'); }
        await window.jupyterapp.commands.execute('notebook:run-cell');
    }""", [index, above])
    page.wait_for_function("""(index) => { const w = window.jupyterapp.shell.currentWidget;
        const cell = w.content.widgets[index];
        return cell.model.executionCount !== null && !cell.promptNode.textContent.includes('*')
            && w.sessionContext.session.kernel.status === 'idle'; }""", arg=index, timeout=timeout * 1000)
    return page.evaluate("(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.outputs.toJSON()",
                         index)


def cell(page, index: int):
    """The Playwright locator of cell ``index`` of the notebook in view (other notebooks' tabs stay in the page)."""
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)


def take_screenshots(out: Path) -> list[Path]:
    """The pictures of notebook 06's two explorers, as the widgets draw them in JupyterLab (the static
    figures the notebook shows without a live kernel are the widgets' own fallbacks)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {"COURSE_MODE": "test", "MPLBACKEND": "Agg"}
    saved = []
    with jupyter_lab([ROOT / "notebooks" / "06_cvrl.ipynb"], env=env) as (base, token), \
            browser_page(width=1400, height=900) as page:
        open_notebook(page, base, token, "06_cvrl.ipynb")
        for index, name in ((4, "augmentation_explorer.png"), (10, "sampler_explorer.png")):
            run_cell(page, index, above=index == 4)
            area = cell(page, index).locator(".jp-OutputArea")
            area.locator(".jupyter-widgets img").first.wait_for(state="visible")
            page.wait_for_timeout(1000)
            area.screenshot(path=out / name)
            saved.append(out / name)
    return saved


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--screenshots", type=Path, required=True, help="folder for the PNG files")
    for path in take_screenshots(parser.parse_args().screenshots):
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")
