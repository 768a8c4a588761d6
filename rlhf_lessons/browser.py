"""A real JupyterLab on localhost and Debian's Chromium driven by Playwright: what the browser test clicks through,
and what makes the widget screenshots the notebooks show (`python -m rlhf_lessons.course screenshots`).

Nothing is downloaded: Playwright drives /usr/bin/chromium (`apt-get install chromium`), and JupyterLab runs with
config, data and runtime folders of its own, so a learner's settings neither leak in nor get changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
TOKEN = "rlhf-lessons-local-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={TOKEN}", timeout=5) as response:
        return json.loads(response.read())


def wait_for(condition, timeout: float, what: str, errors=(OSError, ValueError)):
    """Poll condition() until it returns something truthy; raise TimeoutError saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except errors:
            result = None
        if result:
            return result
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@contextlib.contextmanager
def jupyter_lab(folder: Path, root: Path, rlhf_home: Path):
    """A JupyterLab server on a free port serving `root`, with its own config/data/runtime folders under `folder`
    and the course's workspace at `rlhf_home`. Yields the port; the server is stopped on exit."""
    dirs = {name: folder / name for name in ("home", "config", "data", "runtime")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    # no "official Jupyter news?" toast: it can cover the buttons
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, HOME=str(dirs["home"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_DATA_DIR=str(dirs["data"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               RLHF_LESSONS_HOME=str(rlhf_home), PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("MPLBACKEND", None)  # the kernel's plots use the inline backend
    port = free_port()
    log_path = folder / "jupyter.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.token={TOKEN}",
             "--ServerApp.ip=127.0.0.1", f"--port={port}", "--allow-root", f"--ServerApp.root_dir={root}",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            wait_for(lambda: api(port, "/api/status"), 60, f"JupyterLab to start (see {log_path})")
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A headless Chromium page (Playwright); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_and_run_all(page, port: int, notebook: str, timeout: float = 60) -> None:
    """Open `notebook` (relative to the server's root) in JupyterLab, wait for its kernel, and Run All Cells."""
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={TOKEN}")
    wait_for(lambda: any(k["execution_state"] == "idle" and k["connections"] > 0 for k in api(port, "/api/kernels")),
             timeout, "the notebook's kernel to be idle")
    page.locator("#jp-MainMenu").get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
