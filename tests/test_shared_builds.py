"""conftest's build_once: make test's two slow streams share the default run instead of training it twice."""

import multiprocessing

import pytest

import conftest


def _slow_build(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "builds.log", "a") as log:  # one line per build, from whichever process
        log.write("built\n")
    return {"root": str(folder), "value": 1.5, "pair": (1, 2)}


def _ask(shared, queue):
    conftest.SHARED_RUNS = shared
    queue.put(conftest._build_once("run", _slow_build, None))


def test_two_processes_build_once_and_read_the_same_summary(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_ask, args=(str(tmp_path), queue)) for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join()
    assert results[0] == results[1] == {"root": str(tmp_path / "run"), "value": 1.5, "pair": [1, 2]}
    assert (tmp_path / "builds.log").read_text() == "built\n"  # the second process waited and read it


def test_a_failed_build_leaves_no_summary_and_the_next_one_starts_clean(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED_RUNS", str(tmp_path))

    def dies(folder):
        folder.mkdir(parents=True)
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        conftest._build_once("run", dies, None)
    assert not (tmp_path / "run.json").exists()
    assert conftest._build_once("run", _slow_build, None)["value"] == 1.5


def test_without_a_shared_folder_each_session_builds_its_own(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED_RUNS", None)
    first = conftest._build_once("run", _slow_build, tmp_path_factory)
    second = conftest._build_once("run", _slow_build, tmp_path_factory)
    assert first["root"] != second["root"] and first["pair"] == [1, 2]
