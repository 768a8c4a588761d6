"""Screenshots of the course's widgets as a learner sees them, for the notebooks' static view (GitHub shows a widget
only as the text `VBox(children=...)`): `make screenshots`, or `python -m rlhf_lessons.screenshots [OUT_DIR]`.

A small notebook builds each widget with replies from the world, JupyterLab runs it in Debian's Chromium
(rlhf_lessons.browser), and each widget's output area is saved as a PNG in notebooks/images/. The chat box uses the
models of the workspace ($RLHF_LESSONS_HOME): run lessons 02 and 05 (or `rlhf-lessons pipeline`) first, or it shows
only the base model. Nothing is clicked, so nothing is stored. The rating widget's thumbs need an emoji font
(Debian: apt-get install fonts-noto-color-emoji), or they show as empty boxes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .course import NOTEBOOK_DIR

IMAGE_DIR = NOTEBOOK_DIR / "images"

SETUP = '''import random
import tempfile
from pathlib import Path

from rlhf_lessons import world
from rlhf_lessons.store import PreferenceStore
from rlhf_lessons.widgets import CompareWidget, RankWidget, RatingWidget

rng = random.Random(0)
egg, weeds = world.find_request("How long should I boil an egg?"), world.find_request("How do I kill the weeds in my garden?")
store = PreferenceStore(Path(tempfile.mkdtemp()) / "scratch.sqlite")  # nothing is clicked, nothing stored
def item(request, styles):
    return {"prompt": request.prompt, "replies": [world.reply(request, s, rng) for s in styles], "checkpoint": "world"}'''

# (image file, the code that displays the widget, text that shows the widget has rendered)
WIDGETS = [
    ("compare_widget.png", 'CompareWidget([item(egg, ["helpful", "rude"])], store=store, rater="you")', "A is better"),
    ("rank_widget.png", 'RankWidget([item(weeds, ["helpful", "refusal", "rambling", "terse"])], store=store, rater="you")',
     "Reply 1"),
    ("rating_widget.png", 'RatingWidget([item(egg, ["wrong"])], store=store, rater="you", scale="thumbs")', "Undo last"),
    ("chat_widget.png", 'from rlhf_lessons.chat import ChatWidget\nChatWidget(text="How do I kill the weeds in my garden?")',
     "The world knows this request"),
]


def screenshot_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook()
    # without a kernelspec JupyterLab asks which kernel to start, and the notebook waits for an answer
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP)] + [nbformat.v4.new_code_cell(code) for _, code, _ in WIDGETS]
    return nb


def take(out_dir: Path = IMAGE_DIR, workspace: Path | None = None) -> list[Path]:
    """Render every widget of WIDGETS in a real JupyterLab and save one PNG each in `out_dir`. Returns the paths."""
    import nbformat

    from .browser import chromium_page, jupyter_lab, open_and_run_all
    from .workspace import workspace_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        nbformat.write(screenshot_notebook(), root / "widgets.ipynb")
        scratch = workspace if workspace is not None else workspace_dir()
        with jupyter_lab(tmp / "jupyter", root, scratch) as port, chromium_page(width=1300) as page:
            open_and_run_all(page, port, "widgets.ipynb", timeout=120)
            cells = page.locator(".jp-CodeCell")
            for i, (name, _, rendered) in enumerate(WIDGETS, start=1):
                output = cells.nth(i).locator(".jp-OutputArea")
                output.get_by_text(rendered).first.wait_for(timeout=120_000)
                page.wait_for_timeout(500)  # let the layout settle
                output.screenshot(path=str(out_dir / name))
                saved.append(out_dir / name)
                print(f"saved {out_dir / name}", file=sys.stderr)
    return saved


if __name__ == "__main__":
    take(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGE_DIR)
