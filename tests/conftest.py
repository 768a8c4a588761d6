"""Shared fixtures: every test runs against a fresh workspace, never the learner's own."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("RLHF_LESSONS_THREADS", "1")))


@pytest.fixture(autouse=True)
def fresh_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LESSONS_HOME", str(tmp_path / "workspace"))
    return tmp_path / "workspace"


@pytest.fixture(scope="session")
def base_tokenizer():
    from rlhf_lessons.models import load_tokenizer

    return load_tokenizer("base")


@pytest.fixture
def tiny_model(base_tokenizer):
    """A one-layer random GPT-2 with the course tokenizer: for fast tests of the mechanics."""
    from transformers import GPT2LMHeadModel

    from rlhf_lessons.models import tiny_config

    torch.manual_seed(0)
    return GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2)).eval()


# `make test` runs the slow tests in two streams side by side; this folder lets them share the costly builds.
SHARED_RUNS = os.environ.get("RLHF_LESSONS_SHARED_RUNS")


def _paths_as_text(value):
    """JSON for a Path; anything else that JSON cannot hold is an error, not silently turned into its repr."""
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a shared build must be JSON (and paths); a {type(value).__name__} cannot be shared")


def _build_once(name: str, build, tmp_path_factory) -> dict:
    """build(folder) -> a JSON-able summary, run once even when two test processes ask for it.

    With RLHF_LESSONS_SHARED_RUNS set (make test sets it), the folder and the summary live there: the first process
    builds while holding a lock, and the other waits for it and reads the summary instead of building again.
    Without it, every test session builds its own in a temporary folder."""
    if not SHARED_RUNS:  # read back through JSON all the same, so both ways give the same types
        return json.loads(json.dumps(build(tmp_path_factory.mktemp(name)), default=_paths_as_text))
    import fcntl

    root = Path(SHARED_RUNS)
    root.mkdir(parents=True, exist_ok=True)
    folder, summary_file = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if summary_file.exists():
            return json.loads(summary_file.read_text())
        shutil.rmtree(folder, ignore_errors=True)  # what a build that died half way left
        summary = build(folder)
        partial = summary_file.with_suffix(".partial")
        partial.write_text(json.dumps(summary, default=_paths_as_text))
        partial.replace(summary_file)  # the summary appears whole or not at all
        return json.loads(summary_file.read_text())


@pytest.fixture(scope="session")
def outcomes():
    """benchmarks/outcomes.py as a module: its `claims` are the bars, its README block the table (a script, not a
    package module, so it is loaded from its file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("outcomes", Path(__file__).parents[1] / "benchmarks" / "outcomes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def build_once(tmp_path_factory):
    """build_once(name, build): conftest._build_once for tests that share a costly build (the rater pools)."""
    return lambda name, build: _build_once(name, build, tmp_path_factory)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """SFT, reward model and PPO at their default settings (seed 0), built once for the slow outcome tests that
    judge them: {"root", "sft", "reward", "ppo"} (the stages' summaries)."""
    from rlhf_lessons.ppo import run_ppo_stage
    from rlhf_lessons.reward import run_reward_stage
    from rlhf_lessons.sft import SFTConfig, train_sft

    def build(root):
        sft = train_sft(SFTConfig(seed=0), base="base", out_dir=root / "sft")
        rm = run_reward_stage(init=root / "sft", out=root / "rm", seed=0, use_store=False, progress=False)
        ppo = run_ppo_stage(policy=str(root / "sft"), reward=str(root / "rm"), out=root / "ppo", seed=0)
        return {"root": str(root), "sft": sft, "reward": rm, "ppo": ppo}

    run = _build_once("default_run", build, tmp_path_factory)
    return {**run, "root": Path(run["root"])}
