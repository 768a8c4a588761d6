"""A real browser: Debian's Chromium, driven by Playwright, clicks the widgets in a real JupyterLab on localhost,
and the labels must land in the store. About 10-20 s. Run alone with `pytest -m browser`."""

import json
import sqlite3
from pathlib import Path

import nbformat
import pytest

from rlhf_lessons.browser import CHROMIUM, chromium_page, jupyter_lab, open_and_run_all, wait_for

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (install it: apt-get install -y chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright Python module is missing")

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "compare_widget.ipynb"


def stored_labels(path):
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [(kind, json.loads(label)) for kind, label in db.execute("SELECT kind, label FROM labels ORDER BY id")]


def wait_for_store(condition, timeout, what):
    return wait_for(condition, timeout, what, errors=(OSError, ValueError, sqlite3.Error))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server serving the fixture notebook, without its simulated clicks; yields (port, store path)."""
    root, rlhf_home = tmp_path / "root", tmp_path / "rlhf_home"
    root.mkdir()
    rlhf_home.mkdir()
    nb = nbformat.read(FIXTURE, as_version=4)
    nb.cells = [c for c in nb.cells if "simulated-click" not in c.metadata.get("tags", [])]  # the browser clicks
    nbformat.write(nb, root / "widgets.ipynb")
    with jupyter_lab(tmp_path / "jupyter", root, rlhf_home) as port:
        yield port, rlhf_home / "preferences.sqlite"


def click_output_button(page, name):
    """Click the widget button called `name`, searching only the notebook's output area."""
    button = page.locator(".jp-OutputArea-output").get_by_role("button", name=name, exact=True)
    button.scroll_into_view_if_needed(timeout=30_000)
    button.click(timeout=10_000)


def test_browser_clicks_are_stored(lab, tmp_path):
    port, store_path = lab
    with chromium_page() as page:
        try:
            open_and_run_all(page, port, "widgets.ipynb")

            # the reply with markup is shown as text, never run as HTML
            outputs = page.locator(".jp-OutputArea-output")
            outputs.get_by_text("<b>Go away.</b><script>alert(1)</script>").wait_for(timeout=30_000)
            assert outputs.locator("script, b").count() == 0

            click_output_button(page, "B is better")
            assert wait_for_store(lambda: stored_labels(store_path), 30, "the comparison in the store") == [
                ("comparison", {"choice": "B"})]

            for name in ("Reply 2", "Reply 3", "Reply 1"):
                click_output_button(page, name)
            labels = wait_for_store(lambda: len(stored_labels(store_path)) == 2 and stored_labels(store_path), 30,
                                    "the ranking in the store")
            assert labels[1] == ("ranking", {"order": [1, 2, 0]})
            page.locator(".jp-OutputArea-output").get_by_text("done: 1 label stored").first.wait_for(timeout=10_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise


def test_screenshots_of_every_widget(tmp_path):
    """The tool behind `make screenshots` renders each widget in JupyterLab and saves one PNG per widget."""
    from PIL import Image

    from rlhf_lessons import screenshots

    saved = screenshots.take(tmp_path / "images", workspace=tmp_path / "workspace")
    assert [p.name for p in saved] == [name for name, _, _ in screenshots.WIDGETS]
    for path in saved:
        width, height = Image.open(path).size
        assert width > 300 and height > 60, (path, width, height)
