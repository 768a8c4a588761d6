"""Headless tests of the labelling widgets: clicks, progress, undo, escaping, durability, and a real kernel."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from rlhf_lessons.store import PreferenceStore
from rlhf_lessons.widgets import CompareWidget, RankWidget, RatingWidget

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "compare_widget.ipynb"
NASTY = "<script>alert(1)</script> and <b>bold</b>"


def browser_click(button):
    """The comm message a browser sends when the button is clicked."""
    button._handle_custom_msg({"event": "click"}, [])


def make_items(n, k=2, checkpoint="sft"):
    return [{"prompt": f"request {i}", "replies": [f"reply {i}.{j}" for j in range(k)], "checkpoint": checkpoint,
             "meta": {"request_id": f"r{i}"}} for i in range(n)]


@pytest.fixture
def store(tmp_path):
    return PreferenceStore(tmp_path / "preferences.sqlite")


# ----- compare -----

def test_compare_clicks_progress_and_storage(store):
    w = CompareWidget(make_items(3), store=store, rater="ann")
    assert "0 of 3" in w.progress.value and "request 0" in w.html.value
    w.buttons["A"].click()
    assert "1 of 3" in w.progress.value and "request 1" in w.html.value
    browser_click(w.buttons["B"])
    w.rater_box.value = "bea"  # the learner names themselves mid-way
    w.buttons["tie"].click()
    rows = store.labels()
    assert [(r["request"], r["label"]["choice"], r["rater"]) for r in rows] == [
        ("request 0", "A", "ann"), ("request 1", "B", "ann"), ("request 2", "tie", "bea")]
    assert rows[0]["replies"] == ["reply 0.0", "reply 0.1"] and rows[0]["checkpoint"] == "sft"
    assert rows[0]["meta"] == {"request_id": "r0"} and rows[0]["source"] == "human" and rows[0]["kind"] == "comparison"
    assert "done: 3 labels stored" in w.html.value and "3 of 3" in w.progress.value
    assert w.controls.children == ()
    w.buttons["A"].click()  # a click after the end stores nothing
    assert len(store) == 3


def test_compare_undo(store):
    w = CompareWidget(make_items(2), store=store, rater="ann")
    w.buttons["A"].click()
    w.buttons["skip"].click()
    assert "done" in w.html.value
    w.undo_button.click()
    assert [r["label"]["choice"] for r in store.labels()] == ["A"]
    assert "1 of 2" in w.progress.value and "request 1" in w.html.value and len(w.controls.children) == 4
    browser_click(w.undo_button)
    assert len(store) == 0 and "0 of 2" in w.progress.value and "request 0" in w.html.value
    w.undo_button.click()
    assert "Nothing to undo" in w.status.value
    w.buttons["B"].click()
    assert [r["label"]["choice"] for r in store.labels()] == ["B"]


def test_no_rater_name_stores_nothing(store):
    w = CompareWidget(make_items(1), store=store, rater="")
    w.buttons["A"].click()
    assert len(store) == 0 and "Rater" in w.status.value and "0 of 1" in w.progress.value
    w.rater_box.value = "  cy "
    w.buttons["A"].click()
    assert [r["rater"] for r in store.labels()] == ["cy"]


def test_simulated_source_and_population(store):
    w = CompareWidget(make_items(1), store=store, rater="sim:cautious", source="simulated", population="cautious")
    w.buttons["A"].click()
    assert store.pairs(population="cautious")[0]["source"] == "simulated"


# ----- rank -----

@pytest.mark.parametrize("k", [2, 3, 4])
def test_ranking_needs_k_clicks(store, k):
    w = RankWidget(make_items(2, k), store=store, rater="ann")
    assert len(w.rank_buttons) == k
    order = list(reversed(range(k)))
    for n, i in enumerate(order[:-1]):
        w.rank_buttons[i].click()
        w.rank_buttons[i].click()  # clicking a ranked reply again changes nothing
        assert w.rank_buttons[i].disabled and f"#{n + 1}" in w.rank_buttons[i].description
    assert len(store) == 0 and "0 of 2" in w.progress.value
    browser_click(w.rank_buttons[order[-1]])
    [row] = store.labels()
    assert row["kind"] == "ranking" and row["label"] == {"order": order}
    assert row["replies"] == make_items(1, k)[0]["replies"]
    assert "1 of 2" in w.progress.value and "request 1" in w.html.value
    assert not any(b.disabled for b in w.rank_buttons)  # the next item starts unranked


def test_ranking_with_varying_k_and_undo(store):
    items = make_items(1, 2) + [dict(make_items(2, 4)[1])]
    w = RankWidget(items, store=store, rater="ann")
    w.rank_buttons[1].click()
    w.rank_buttons[0].click()
    assert len(w.rank_buttons) == 4
    w.rank_buttons[3].click()
    w.rank_buttons[0].click()
    w.undo_button.click()  # mid-ranking: takes back the last click only
    assert not w.rank_buttons[0].disabled and w.rank_buttons[3].disabled and len(store) == 1
    for i in (1, 0, 2):
        w.rank_buttons[i].click()
    assert [r["label"]["order"] for r in store.labels()] == [[1, 0], [3, 1, 0, 2]]
    assert "done: 2 labels stored" in w.html.value
    w.undo_button.click()  # between rankings: deletes the last stored ranking
    assert [r["label"]["order"] for r in store.labels()] == [[1, 0]]
    assert "1 of 2" in w.progress.value and len(w.rank_buttons) == 4


def test_ranking_without_rater_keeps_clicks(store):
    w = RankWidget(make_items(1, 3), store=store, rater="")
    for i in (0, 1, 2):
        w.rank_buttons[i].click()
    assert len(store) == 0 and w.order == [0, 1]
    w.rater_box.value = "ann"
    w.rank_buttons[2].click()
    assert store.labels()[0]["label"] == {"order": [0, 1, 2]}


def test_rank_widget_rejects_too_many_replies(store):
    with pytest.raises(ValueError, match="2 to 4"):
        RankWidget(make_items(1, 5), store=store)
    with pytest.raises(ValueError, match="2 to 2"):
        CompareWidget(make_items(1, 3), store=store)
    with pytest.raises(ValueError, match="non-empty list"):
        CompareWidget([], store=store)
    with pytest.raises(ValueError, match="prompt"):
        CompareWidget([{"replies": ["a", "b"]}], store=store)


# ----- rate -----

def test_thumbs_rating(store):
    w = RatingWidget(make_items(2, 2), store=store, rater="ann")
    assert "0 of 4" in w.progress.value and "reply 0.0" in w.html.value
    w.buttons["up"].click()
    browser_click(w.buttons["down"])
    rows = store.labels()
    assert [(r["replies"], r["label"]) for r in rows] == [(["reply 0.0"], {"score": 1, "scale": "thumbs"}),
                                                          (["reply 0.1"], {"score": 0, "scale": "thumbs"})]
    assert rows[1]["meta"] == {"request_id": "r0", "reply_index": 1}
    assert store.pairs()[0]["chosen"] == "reply 0.0" and "2 of 4" in w.progress.value


def test_five_point_rating_and_undo(store):
    w = RatingWidget(make_items(1, 3), store=store, rater="ann", scale="5")
    assert sorted(w.buttons) == [1, 2, 3, 4, 5]
    for score in (4, 2, 5):
        w.buttons[score].click()
    assert [r["label"]["score"] for r in store.labels()] == [4, 2, 5] and "done: 3 labels" in w.html.value
    w.undo_button.click()
    assert [r["label"]["score"] for r in store.labels()] == [4, 2] and "reply 0.2" in w.html.value
    with pytest.raises(ValueError, match="scale"):
        RatingWidget(make_items(1), store=store, scale="10")


# ----- escaping and display -----

@pytest.mark.parametrize("make", [
    lambda items, store: CompareWidget(items, store=store),
    lambda items, store: RankWidget(items, store=store),
    lambda items, store: RatingWidget(items, store=store),
])
def test_model_text_is_escaped(store, make):
    items = [{"prompt": "say <i>hi</i>", "replies": [NASTY, "plain"], "checkpoint": "sft"}]
    value = make(items, store).html.value
    assert "<script>" not in value and "<b>" not in value and "<i>" not in value
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in value and "&lt;b&gt;bold&lt;/b&gt;" in value
    assert "say &lt;i&gt;hi&lt;/i&gt;" in value
    assert "white-space: pre-wrap" in value  # long text wraps


def test_displayable(store):
    w = CompareWidget(make_items(1), store=store)
    bundle = w._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.widget.model_id
    assert w.rater_box in w.widget.children[0].children and w.undo_button in w.widget.children


def test_default_store_is_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path))
    w = CompareWidget(make_items(1), rater="ann")
    w.buttons["A"].click()
    assert len(PreferenceStore(tmp_path / "preferences.sqlite")) == 1


# ----- the default rater id: one per workspace, kept there, editable -----

LEARNER_ID = r"learner-[0-9a-f]{6}"
PRINT_ID = "from rlhf_lessons.workspace import learner_id; print(learner_id())"


def python_in(home, code):
    """Run `code` in a fresh Python (a restarted kernel, another learner's laptop) with RLHF_LESSONS_HOME=home."""
    env = dict(os.environ, RLHF_LESSONS_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_default_rater_is_the_workspaces_own_id_stable_and_editable(tmp_path, monkeypatch):
    import re

    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path / "ws1"))
    first = CompareWidget(make_items(2)).rater_box.value
    assert re.fullmatch(LEARNER_ID, first), first  # not the "learner" every laptop would share
    assert RankWidget(make_items(1, 3)).rater_box.value == first  # every widget, every run of the lesson
    assert RatingWidget(make_items(1)).rater_box.value == first
    assert (tmp_path / "ws1" / "learner_id").read_text().strip() == first  # kept in the workspace
    assert python_in(tmp_path / "ws1", PRINT_ID).strip() == first  # after a kernel restart too

    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path / "ws2"))  # another learner's workspace
    second = CompareWidget(make_items(1)).rater_box.value
    assert re.fullmatch(LEARNER_ID, second) and second != first

    store = PreferenceStore(tmp_path / "labels.sqlite")  # still editable: the name in the box is stored
    w = CompareWidget(make_items(2), store=store)
    w.buttons["A"].click()
    w.rater_box.value = "ann"
    w.buttons["B"].click()
    assert [r["rater"] for r in store.labels()] == [second, "ann"]
    assert CompareWidget(make_items(1), store=store, rater="bob").rater_box.value == "bob"  # an explicit rater wins


def test_two_kernels_starting_at_once_get_the_same_id(tmp_path):
    import re

    env = dict(os.environ, RLHF_LESSONS_HOME=str(tmp_path / "ws"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    children = [subprocess.Popen([sys.executable, "-c", PRINT_ID], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(4)]
    ids = {child.communicate(timeout=60)[0].strip() for child in children}
    assert len(ids) == 1 and re.fullmatch(LEARNER_ID, ids.pop())
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["learner_id"]  # no temporary file left


def test_an_empty_id_file_gets_a_new_id_and_an_edited_one_is_kept(tmp_path, monkeypatch):
    from rlhf_lessons.workspace import learner_id

    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path))
    (tmp_path / "learner_id").write_text("\n")
    made = learner_id()
    assert made.startswith("learner-") and learner_id() == made
    (tmp_path / "learner_id").write_text("ana-from-room-2\n")  # the learner chose a name for good
    assert CompareWidget(make_items(1), store=tmp_path / "s.sqlite").rater_box.value == "ana-from-room-2"


# ----- durability: SIGKILL right after a burst of clicks -----

BURST = textwrap.dedent("""
    import sys, time
    from rlhf_lessons.widgets import CompareWidget
    items = [{"prompt": f"request {i}", "replies": ["a", "b"], "checkpoint": "sft"} for i in range(50)]
    w = CompareWidget(items, store=sys.argv[1], rater="burst")
    for i in range(50):
        w.buttons["AB"[i % 2]]._handle_custom_msg({"event": "click"}, [])
    print("clicked", flush=True)
    time.sleep(120)  # the parent kills us here: nothing may wait for a clean exit
""")


def test_sigkill_after_burst_loses_nothing(tmp_path):
    path = tmp_path / "preferences.sqlite"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", BURST, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout.readline().strip() == "clicked"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    store = PreferenceStore(path)
    rows = store.labels()
    assert [r["request"] for r in rows] == [f"request {i}" for i in range(50)]
    assert [r["label"]["choice"] for r in rows] == ["AB"[i % 2] for i in range(50)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ----- a real kernel: nbclient runs the fixture notebook -----

@pytest.mark.notebook
def test_notebook_clicks_reach_the_store(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(FIXTURE, as_version=4)
    home = tmp_path / "home"
    env = dict(os.environ, RLHF_LESSONS_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # the kernel gets this environment

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    widget_outputs = [o for c in nb.cells[2:4] for o in c.outputs
                      if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_outputs) == 2  # a bare `compare` / `rank` displays the widget
    store = PreferenceStore(home / "preferences.sqlite")  # the kernel found the store through RLHF_LESSONS_HOME
    rows = store.labels()
    assert [(r["kind"], r["label"], r["rater"]) for r in rows] == [
        ("comparison", {"choice": "A"}, "fixture"), ("ranking", {"order": [2, 0, 1]}, "fixture")]
    assert "1 of 1" in "".join(nb.cells[4].outputs[0]["text"])
