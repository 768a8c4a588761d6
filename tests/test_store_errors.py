"""Bad input to the label store, its files, its widgets and the terminal (issue 16): each one fails loudly, with
one clear sentence that names the file, line or path, and loses nothing already stored."""

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from rlhf_lessons import cli, widgets, world
from rlhf_lessons.errors import CourseError, WorkspaceError
from rlhf_lessons.feedback import simulate_clicks
from rlhf_lessons.store import (LabelFileError, PreferenceStore, StoreBusyError, read_label_file, terminal_safe)
from rlhf_lessons.widgets import CompareWidget, RankWidget, text_block

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores file permissions


@pytest.fixture
def store(tmp_path):
    return PreferenceStore(tmp_path / "preferences.sqlite")


def pair_line(prompt="p", chosen="good", rejected="bad", **extra):
    return json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra})


def write_lines(path, lines, end="\n"):
    path.write_text("".join(line + end for line in lines), encoding="utf-8", newline="")
    return path


def items(n=2):
    """n comparisons of two replies to requests of the world (simulated raters score only those)."""
    return [{"prompt": request.prompt, "replies": [f"reply {i}.a", f"reply {i}.b"]}
            for i, request in enumerate(world.requests()[:n])]


def snapshot(store):
    return [(row["id"], row["hash"]) for row in store.labels()]


@contextmanager
def read_only_stores():
    """Every store connection read-only, the way a read-only file is: SQLite itself refuses each write with
    SQLITE_READONLY (the tests may run as root, whom chmod does not stop)."""
    connect = PreferenceStore._connect

    def read_only_connect(self, busy_timeout=None):
        db = connect(self, busy_timeout)
        db.execute("PRAGMA query_only = ON")
        return db

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreferenceStore, "_connect", read_only_connect)
        yield


@pytest.fixture
def read_only():
    with read_only_stores():
        yield


def run_cli(capsys, *args):
    code = cli.main(["--threads", "1", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


# ----- 1. read-only store or workspace -----

def test_read_only_store_names_the_path_and_keeps_its_labels(store, read_only):
    with pytest.raises(WorkspaceError, match="read-only") as error:
        store.add("comparison", "p", ["a", "b"], {"choice": "A"}, rater="ann")
    assert str(store.path) in str(error.value)
    assert len(store) == 0  # reading still works


def test_read_only_store_in_the_cli(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    PreferenceStore(store).add("comparison", "p", ["a", "b"], {"choice": "A"}, rater="ann")
    new = write_lines(tmp_path / "new.jsonl", [pair_line()])
    with read_only_stores():
        code, summary, _ = run_cli(capsys, "feedback", "stats", "--store", str(store))
        assert code == 0 and summary["labels"] == 1  # a read-only store can still be read
        code, summary, err = run_cli(capsys, "feedback", "import", str(new), "--store", str(store))
    assert code == 2 and "read-only" in summary["error"] and str(store) in err and "Traceback" not in err
    assert len(PreferenceStore(store)) == 1


@pytest.mark.skipif(IS_ROOT, reason="root can write a read-only file")
def test_really_read_only_file(tmp_path):
    store = PreferenceStore(tmp_path / "s.sqlite")
    store.add("comparison", "p", ["a", "b"], {"choice": "A"}, rater="ann")
    store.path.chmod(0o444)
    with pytest.raises(WorkspaceError, match="read-only"):
        store.add("comparison", "p", ["a", "c"], {"choice": "A"}, rater="ann")
    assert len(store) == 1


def test_workspace_that_cannot_be_created(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RLHF_LESSONS_HOME", str(blocker / "workspace"))
    with pytest.raises(WorkspaceError, match="RLHF_LESSONS_HOME"):
        PreferenceStore()
    with pytest.raises(WorkspaceError, match="a-file"):
        PreferenceStore(blocker / "workspace" / "preferences.sqlite")


def test_store_folder_without_permission(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(WorkspaceError, match="read-only") as error:
        PreferenceStore(tmp_path / "locked" / "preferences.sqlite")
    assert "locked" in str(error.value)


def test_widget_click_on_a_read_only_store_is_shown_and_loses_nothing(store):
    w = CompareWidget(items(), store=store, rater="ann")
    w.buttons["A"].click()
    before = snapshot(store)
    with read_only_stores():
        w.buttons["B"].click()
        assert "not saved" in w.status.value and "read-only" in w.status.value
        assert w.position == 1 and "1 of 2" in w.progress.value and "reply 1.a" in w.html.value
        w.undo_button.click()  # the stored label stays stored, and the widget says why
        assert "read-only" in w.status.value and w.position == 1
        with pytest.raises(WorkspaceError, match="read-only"):  # a simulated rater stops with the store's error
            simulate_clicks(w)
    assert snapshot(store) == before
    w.buttons["B"].click()  # writable again: the same click now counts
    assert w.done and len(store) == 2 and w.error is None


# ----- 2. another program holds the lock -----

@pytest.fixture
def locked(store):
    """Another connection holds an exclusive lock on the store, as a program in the middle of a write does."""
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    yield other
    other.close()


def test_click_on_a_locked_store_says_busy_quickly(store, locked, monkeypatch):
    monkeypatch.setattr(widgets, "CLICK_BUSY_TIMEOUT", 0.1)
    w = CompareWidget(items(), store=store, rater="ann")
    t0 = time.monotonic()
    w.buttons["A"].click()
    assert time.monotonic() - t0 < 5  # not the store's 30 s
    assert "busy (another program is writing to it); your click was not saved, try again" in w.status.value
    assert w.position == 0 and isinstance(w.error, StoreBusyError)
    locked.execute("ROLLBACK")
    w.buttons["A"].click()
    assert w.position == 1 and len(store) == 1


def test_busy_store_is_a_workspace_error(store, locked):
    with pytest.raises(StoreBusyError, match="busy") as error:
        store.add("comparison", "p", ["a", "b"], {"choice": "A"}, rater="ann", busy_timeout=0.05)
    assert isinstance(error.value, WorkspaceError) and str(store.path) in str(error.value)


# ----- 3. import files: errors that name the file and the line -----

HOSTILE_LINES = [
    # (text of the file, line named, field named, words in the message)
    (pair_line() + "\n" + '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 2, None, "nested too deeply"),
    (pair_line(prompt="\ud800") + "\n", 1, "prompt", "lone surrogate"),
    (pair_line(rater="sim\udfff") + "\n", 1, "rater", "lone surrogate"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "n": ' + "7" * 5000 + "}\n", 1, None, "too long"),
    (pair_line(rater="   ") + "\n", 1, "rater", "non-empty"),
    (pair_line(chosen=" \n\t") + "\n", 1, "chosen", "non-empty"),
    (pair_line() + "\n" + pair_line(rejected="  ") + "\n", 2, "rejected", "non-empty"),
    (pair_line(population="everyone", source="simulated") + "\n", 1, "population", "unknown population"),
    (pair_line(prompt="tell me " * 100) + "\n", 1, "prompt", "too long"),
    (pair_line(chosen="so " * 200 + "yes", rejected="so " * 200 + "no") + "\n", 1, "prompt", "same text"),
]


@pytest.mark.parametrize("text,line,field,words", HOSTILE_LINES)
def test_bad_line_named(store, tmp_path, text, line, field, words):
    store.add("comparison", "already", ["a", "b"], {"choice": "A"}, rater="ann")
    before = snapshot(store)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(LabelFileError) as error:
        store.import_jsonl([bad])
    assert (error.value.path, error.value.line, error.value.field) == (str(bad), line, field)
    assert words in str(error.value) and f"line {line}" in str(error.value)
    assert isinstance(error.value, CourseError) and snapshot(store) == before
    with pytest.raises(LabelFileError):  # reward --prefs reads files through the same check
        read_label_file(bad)


def test_long_pairs_that_still_differ_are_accepted(store, tmp_path):
    path = write_lines(tmp_path / "long.jsonl", [pair_line(chosen="yes " + "so " * 200, rejected="no " + "so " * 200),
                                                 pair_line(population="cautious", source="simulated")])
    assert store.import_jsonl([path])["imported"] == 2


@pytest.mark.skipif(IS_ROOT, reason="root can read a file without read permission")
def test_unreadable_file_really(store, tmp_path):
    path = write_lines(tmp_path / "secret.jsonl", [pair_line()])
    path.chmod(0)
    with pytest.raises(LabelFileError, match="secret.jsonl: cannot be read"):
        store.import_jsonl([path])


def test_unreadable_file(store, tmp_path, monkeypatch):
    path = write_lines(tmp_path / "secret.jsonl", [pair_line()])

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(LabelFileError, match="secret.jsonl: cannot be read: Permission denied"):
        store.import_jsonl([path])


def test_not_a_file_says_what_it_is(store, tmp_path):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.jsonl")
    for name, words in [("folder", "a folder, not a file"), ("pipe", "named pipe (FIFO)"),
                        ("loop", "symbolic link loop"), ("dangling", "symbolic link to a file that does not exist"),
                        ("nothing.jsonl", "no such file")]:
        with pytest.raises(LabelFileError) as error:
            store.import_jsonl([tmp_path / name])
        assert words in str(error.value)


def test_cr_only_line_ends_are_read(store, tmp_path):
    lines = [pair_line(), pair_line(chosen="fine"), pair_line(chosen="great")]
    unix = read_label_file(write_lines(tmp_path / "unix.jsonl", lines))
    assert read_label_file(write_lines(tmp_path / "unix.jsonl", lines, end="\r")) == unix
    assert read_label_file(write_lines(tmp_path / "unix.jsonl", lines, end="\r\n")) == unix
    cut = tmp_path / "cut.jsonl"
    cut.write_text(pair_line() + "\r" + pair_line()[:-3], newline="")
    with pytest.raises(LabelFileError, match="line 2.*cut off"):
        read_label_file(cut)


def test_same_file_twice(store, tmp_path):
    path = write_lines(tmp_path / "ann.jsonl", [pair_line()])
    (tmp_path / "link.jsonl").symlink_to(path)
    for twice in ([path, path], [path, str(path)], [path, tmp_path / "." / "ann.jsonl"], [path, tmp_path / "link.jsonl"]):
        with pytest.raises(LabelFileError, match="given twice"):
            store.import_jsonl(twice)
    assert len(store) == 0


# ----- 5. export to a folder, a store that is not a store -----

def test_export_to_a_folder_leaves_nothing_behind(store, tmp_path):
    store.add("comparison", "p", ["a", "b"], {"choice": "A"}, rater="ann")
    (tmp_path / "out").mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(WorkspaceError, match="is a folder"):
        store.export_jsonl(tmp_path / "out")
    with pytest.raises(WorkspaceError, match="cannot write"):
        store.export_jsonl(tmp_path / "missing" / "pairs.jsonl")
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "out") == []


def test_store_that_is_a_jsonl_file_or_a_folder(tmp_path, capsys):
    jsonl = write_lines(tmp_path / "pairs.jsonl", [pair_line()])
    before = jsonl.read_bytes()
    with pytest.raises(WorkspaceError, match="not a label store.*feedback import"):
        PreferenceStore(jsonl)
    assert jsonl.read_bytes() == before
    with pytest.raises(WorkspaceError, match="is a folder, not a label store"):
        PreferenceStore(tmp_path)
    code, summary, err = run_cli(capsys, "feedback", "stats", "--store", str(jsonl))
    assert code == 2 and "not a label store" in summary["error"] and "Traceback" not in err


# ----- 6. hostile text -----

HOSTILE_NAME = "\x1b[2J\x1b[31mmallory\u202eevil\u2066"


def test_terminal_safe_shows_control_characters():
    assert terminal_safe(HOSTILE_NAME) == "\\x1b[2J\\x1b[31mmallory\\u202eevil\\u2066"
    assert terminal_safe("plain text, ümlauts and 中文 stay") == "plain text, ümlauts and 中文 stay"
    assert terminal_safe("a\tb\nc\rd\0") == "a\\tb\\nc\\rd\\x00"


def test_hostile_rater_does_not_reach_the_terminal(tmp_path, capsys):
    path = write_lines(tmp_path / "mallory.jsonl", [pair_line(rater=HOSTILE_NAME)])
    store = tmp_path / "s.sqlite"
    assert run_cli(capsys, "feedback", "import", str(path), "--store", str(store))[0] == 0
    code, summary, err = run_cli(capsys, "feedback", "stats", "--store", str(store))
    assert code == 0 and HOSTILE_NAME in summary["by_rater"]  # the store keeps the name as it was given
    assert "\x1b" not in err and "\u202e" not in err and "\\x1b[31mmallory\\u202eevil" in err


def test_hostile_file_name_in_an_error(tmp_path):
    path = write_lines(tmp_path / "bad\x1b[31m.jsonl", ["not json"])
    with pytest.raises(LabelFileError) as error:
        read_label_file(path)
    assert "\x1b" not in str(error.value) and "bad\\x1b[31m.jsonl" in str(error.value)


def test_widgets_show_bidi_controls_visibly(store):
    reply = "harmless \u202egnp.exe\u202c and \u2067isolated\u2069 <b>"
    block = text_block("Reply", reply)
    assert not any(c in block for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert "\\u202e" in block and "\\u2067" in block and "&lt;b&gt;" in block
    w = RankWidget([{"prompt": "p \u202d", "replies": [reply, "other"]}], store=store, rater="ann\u202e")
    assert "\u202e" not in w.html.value and "\\u202d" in w.html.value
    w.rank_buttons[0].click()
    w.rank_buttons[1].click()
    assert "\u202e" not in w.status.value and "rater: ann<code" in w.status.value and "\\u202e" in w.status.value
    assert store.labels()[0]["replies"][0] == reply  # stored as given; only the display escapes


# ----- labelling nothing -----

@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_label_needs_at_least_one_pair(n):
    from rlhf_lessons.errors import ConfigError
    from rlhf_lessons.labeling import label

    with pytest.raises(ConfigError, match="at least 1"):
        label("balanced", n)
