"""Tests of the notebook preamble: seeding, threads, device pick, and the setup() summary."""

import random
import sys
import time
import types

import numpy as np
import pytest
import torch

from rlhf_lessons import runtime


def draw():
    """One draw from each generator a lesson uses."""
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_reproduces_every_generator():
    runtime.set_seed(123)
    first = draw()
    runtime.set_seed(123)
    assert draw() == first


def test_different_seeds_give_different_draws():
    runtime.set_seed(1)
    a = draw()
    runtime.set_seed(2)
    b = draw()
    assert a[0] != b[0] and a[1] != b[1] and a[2] != b[2]


def test_set_seed_accepts_seeds_beyond_32_bits():
    runtime.set_seed(2**40 + 5)
    first = draw()
    runtime.set_seed(2**40 + 5)
    assert draw() == first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        runtime.set_seed(bad)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_set_threads_changes_torch_threads(restore_threads):
    assert runtime.set_threads(1) == 1
    assert torch.get_num_threads() == 1
    runtime.set_threads(2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -2, 1.0, "2"])
def test_set_threads_rejects_bad_counts(bad, restore_threads):
    with pytest.raises(ValueError, match="threads"):
        runtime.set_threads(bad)


def test_default_threads_reads_environment(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.default_threads() == 3


def test_default_threads_is_at_most_two(monkeypatch):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 64)
    assert runtime.default_threads() == 2
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 1)
    assert runtime.default_threads() == 1
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: None)
    assert runtime.default_threads() == 1


@pytest.mark.parametrize("bad", ["two", "0", "-1"])
def test_default_threads_rejects_bad_environment(monkeypatch, bad):
    monkeypatch.setenv(runtime.THREADS_ENV, bad)
    with pytest.raises(ValueError, match=runtime.THREADS_ENV):
        runtime.default_threads()


def test_pick_device_returns_a_torch_device(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    device = runtime.pick_device()
    assert isinstance(device, torch.device)
    torch.zeros(1, device=device)  # and it is usable


def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert runtime.pick_device() == torch.device("cpu")
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.pick_device() == torch.device("cuda")


def test_pick_device_honours_explicit_name_and_environment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.pick_device() == torch.device("cpu")
    monkeypatch.delenv(runtime.DEVICE_ENV)
    assert runtime.pick_device("cpu") == torch.device("cpu")


def test_pick_device_rejects_unavailable_or_unknown_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA"):
        runtime.pick_device("cuda")
    with pytest.raises(ValueError, match="MPS"):
        runtime.pick_device("mps")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.pick_device("gpu-please")


@pytest.fixture
def fake_workspace(monkeypatch, tmp_path):
    """A stand-in rlhf_lessons.workspace, so setup() is tested on its own."""
    module = types.ModuleType("rlhf_lessons.workspace")
    module.workspace_dir = lambda: tmp_path
    monkeypatch.setitem(sys.modules, "rlhf_lessons.workspace", module)
    return tmp_path


def test_setup_seeds_sets_threads_and_reports(fake_workspace, capsys, restore_threads, monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    info = runtime.setup(seed=7, threads=1)
    first = draw()
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "setup() prints exactly one line"
    for word in ["python", "torch", "transformers", "device", "threads 1", "seed 7", str(fake_workspace)]:
        assert word in out
    assert info["seed"] == 7 and info["threads"] == 1 and torch.get_num_threads() == 1
    assert isinstance(info["device"], torch.device)
    assert info["workspace"] == fake_workspace
    assert info["torch"] == torch.__version__
    assert set(info) == {"python", "torch", "transformers", "device", "threads", "seed", "workspace"}

    runtime.setup(seed=7, threads=1, quiet=True)
    assert draw() == first, "setup(seed) makes the following draws reproducible"
    assert capsys.readouterr().out == "", "quiet=True prints nothing"


def test_setup_uses_default_threads(fake_workspace, monkeypatch, restore_threads):
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    assert runtime.setup(quiet=True)["threads"] == 1


def test_setup_reports_the_real_workspace(monkeypatch, tmp_path, restore_threads):
    workspace = pytest.importorskip("rlhf_lessons.workspace", reason="workspace.py not written yet")
    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path))
    info = runtime.setup(quiet=True)
    assert info["workspace"] == workspace.workspace_dir()


def test_progress_bar_redraws_at_most_twice_a_second(capsys):
    """A training loop updates its bar every step; in a notebook each redraw is widget messages, and thousands of
    them overflow the kernel's queue (nbval then loses the end of the cell). A second of 1 ms steps draws ~3 times
    (tqdm's default of 10 a second would draw ~11)."""
    bar = runtime.progress_bar(total=1000, desc="steps")
    draws = []
    display = bar.display
    bar.display = lambda *args, **kwargs: draws.append(1) or display(*args, **kwargs)
    start = time.time()
    for step in range(1000):
        time.sleep(0.001)
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}", refresh=False)
        bar.update(1)
    elapsed = time.time() - start
    bar.close()
    assert len(draws) <= 3 + 2 * elapsed, (len(draws), elapsed)
    assert "steps" in capsys.readouterr().err  # stderr: stdout carries the commands' JSON
