"""A real browser: Debian's Chromium, driven by Playwright, clicks the widgets in a real JupyterLab on localhost,
and the labels must land in the store. About 10-20 s. Run alone with `pytest -m browser`."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (install it: apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python module is missing")

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "compare_widget.ipynb"
TOKEN = "rlhf-lessons-test-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={TOKEN}", timeout=5) as response:
        return json.loads(response.read())


def wait_for(condition, timeout, what):
    """Poll condition() until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (OSError, ValueError, sqlite3.Error):
            result = None
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def stored_labels(path):
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [(kind, json.loads(label)) for kind, label in db.execute("SELECT kind, label FROM labels ORDER BY id")]


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on a free port with isolated config, data and runtime folders; yields (port, root, home)."""
    dirs = {name: tmp_path / name for name in ("home", "config", "data", "runtime", "root", "rlhf_home")}
    for folder in dirs.values():
        folder.mkdir()
    nb = nbformat.read(FIXTURE, as_version=4)
    nb.cells = [c for c in nb.cells if "simulated-click" not in c.metadata.get("tags", [])]  # the browser clicks
    nbformat.write(nb, dirs["root"] / "widgets.ipynb")
    # no "official Jupyter news?" toast: it can cover the buttons
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, HOME=str(dirs["home"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_DATA_DIR=str(dirs["data"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
               RLHF_LESSONS_HOME=str(dirs["rlhf_home"]),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    port = free_port()
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.token={TOKEN}", "--ServerApp.ip=127.0.0.1",
         f"--port={port}", "--allow-root", f"--ServerApp.root_dir={dirs['root']}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=dirs["root"])
    try:
        wait_for(lambda: api(port, "/api/status"), 60, "JupyterLab to start (see jupyter.log)")
        yield port, dirs["rlhf_home"] / "preferences.sqlite"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if server.returncode not in (0, -15, None):
            print((tmp_path / "jupyter.log").read_text()[-3000:])


def click_output_button(page, name):
    """Click the widget button called `name`, searching only the notebook's output area."""
    button = page.locator(".jp-OutputArea-output").get_by_role("button", name=name, exact=True)
    button.scroll_into_view_if_needed(timeout=30_000)
    button.click(timeout=10_000)


def test_browser_clicks_are_stored(jupyter_lab, tmp_path):
    port, store_path = jupyter_lab
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/widgets.ipynb?token={TOKEN}")
            wait_for(lambda: any(k["execution_state"] == "idle" and k["connections"] > 0
                                 for k in api(port, "/api/kernels")), 60, "the notebook's kernel to be idle")
            page.locator("#jp-MainMenu").get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # the reply with markup is shown as text, never run as HTML
            outputs = page.locator(".jp-OutputArea-output")
            outputs.get_by_text("<b>Go away.</b><script>alert(1)</script>").wait_for(timeout=30_000)
            assert outputs.locator("script, b").count() == 0

            click_output_button(page, "B is better")
            assert wait_for(lambda: stored_labels(store_path), 30, "the comparison in the store") == [
                ("comparison", {"choice": "B"})]

            for name in ("Reply 2", "Reply 3", "Reply 1"):
                click_output_button(page, name)
            labels = wait_for(lambda: len(stored_labels(store_path)) == 2 and stored_labels(store_path), 30,
                              "the ranking in the store")
            assert labels[1] == ("ranking", {"order": [1, 2, 0]})
            page.locator(".jp-OutputArea-output").get_by_text("done: 1 label stored").first.wait_for(timeout=10_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
