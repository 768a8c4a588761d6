"""The headless main job end to end, on tiny settings (seconds, not minutes)."""

import json

import pytest

from rlhf_lessons.pipeline import run_pipeline
from rlhf_lessons.ppo import PPOConfig
from rlhf_lessons.reward import RewardConfig
from rlhf_lessons.sft import SFTConfig


def tiny_run(out, population="balanced"):
    return run_pipeline(population=population, out=out, seed=0,
                        sft_cfg=SFTConfig(n_demonstrations=40, epochs=1, batch_size=8),
                        reward_cfg=RewardConfig(n_pairs=48, n_heldout=24, epochs=1, batch_size=16),
                        ppo_cfg=PPOConfig(updates=2, batch_size=8, max_new_tokens=12), eval_n=12)


def test_pipeline_runs_every_stage_and_writes_a_report(tmp_path):
    summary = tiny_run(tmp_path / "run")
    json.dumps(summary)  # the CLI prints it as one JSON line
    for name in ("base", "sft", "ppo"):
        assert set(summary[name]) >= {"gold_mean", "helpful_rate", "polite_rate", "harmful_compliance_rate",
                                      "over_refusal_rate", "mean_reply_tokens"}
    assert 0 <= summary["win_rate_ppo_vs_sft"] <= 1
    for name in ("sft", "rm", "ppo"):
        assert (tmp_path / "run" / name / "model.safetensors").exists()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| gold_mean |" in report and "ppo_curves.png" in report
    assert (tmp_path / "run" / "yardstick.png").stat().st_size > 1000
    assert (tmp_path / "run" / "ppo_curves.png").stat().st_size > 1000


def test_pipeline_refuses_an_unknown_population(tmp_path):
    with pytest.raises(ValueError, match="population"):
        tiny_run(tmp_path / "run", population="everyone")
