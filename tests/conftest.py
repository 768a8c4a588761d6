"""Shared fixtures: every test runs against a fresh workspace, never the learner's own."""

import os

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


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """SFT, reward model and PPO at their default settings (seed 0), built once per test session for the slow
    outcome tests that judge them: {"root", "sft", "reward", "ppo"} (the stages' summaries)."""
    from rlhf_lessons.ppo import run_ppo_stage
    from rlhf_lessons.reward import run_reward_stage
    from rlhf_lessons.sft import SFTConfig, train_sft

    root = tmp_path_factory.mktemp("default_run")
    sft = train_sft(SFTConfig(seed=0), base="base", out_dir=root / "sft")
    rm = run_reward_stage(init=root / "sft", out=root / "rm", seed=0, use_store=False, progress=False)
    ppo = run_ppo_stage(policy=str(root / "sft"), reward=str(root / "rm"), out=root / "ppo", seed=0)
    return {"root": root, "sft": sft, "reward": rm, "ppo": ppo}
