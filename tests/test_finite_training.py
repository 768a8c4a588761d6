"""Fail loudly, lose nothing (issue 16): configs checked before any work, training stopped at the first NaN, and
checkpoints saved whole or not at all. Every run here is tiny: a few steps of the shipped base model."""

import random

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_lessons import ppo, pretrain, reward, sft, world
from rlhf_lessons.config_checks import POSITIVE, SEED_MAX, Bounds, setting_problems
from rlhf_lessons.errors import CheckpointError, ConfigError, TrainingDiverged
from rlhf_lessons.models import load_policy, save_checkpoint, tiny_config
from rlhf_lessons.optim import check_finite_step

NAN, INF = float("nan"), float("inf")


def folder_bytes(path):
    """{relative file name: bytes} of a folder, to show it was not touched."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def leftovers(parent):
    """Temporary folders a save left beside its destination."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture
def good_checkpoint(tmp_path, tiny_model, base_tokenizer):
    """A finite checkpoint where a diverged run will try to save: its bytes must survive."""
    path = save_checkpoint(tiny_model, base_tokenizer, tmp_path / "good", {"stage": "test"})
    return path, folder_bytes(path)


def toy_pairs(n=32, seed=0):
    """Preference pairs of world-written replies: a helpful reply chosen over a rude one."""
    rng = random.Random(seed)
    pool = [r for r in world.requests("train") if r.kind == "fact"]
    return [{"prompt": r.prompt, "chosen": world.reply(r, "helpful", rng), "rejected": world.reply(r, "rude", rng)}
            for r in (rng.choice(pool) for _ in range(n))]


def tiny_ppo(**kw):
    return ppo.PPOConfig(**{**dict(updates=2, batch_size=8, max_new_tokens=8, epochs=2, minibatches=2,
                                   calibration_samples=8), **kw})


# ----- 1. every number checked finite and in range, before any work -----

@pytest.mark.parametrize("setting, value", [("peak_lr", NAN), ("peak_lr", INF), ("peak_lr", 0.0), ("epochs", 0),
                                            ("epochs", -1), ("epochs", 1.5), ("batch_size", 0), ("weight_decay", NAN),
                                            ("max_grad_norm", NAN), ("eval_fraction", NAN), ("seed", 2**64),
                                            ("seed", -1), ("warmup_steps", -1), ("n_demonstrations", 0)])
def test_sft_refuses_a_bad_number_before_loading_anything(setting, value, tmp_path):
    # the base checkpoint does not exist: a check that ran after loading would fail with "no checkpoint" instead
    with pytest.raises(ConfigError, match=rf"{setting} must be .*\(got {value!r}\)"):
        sft.train_sft(sft.SFTConfig(**{setting: value}), base=str(tmp_path / "missing"))


def test_sft_refuses_a_split_that_leaves_nothing_to_train_on():
    with pytest.raises(ConfigError, match="no demonstration to train on"):
        sft.check_config(sft.SFTConfig(n_demonstrations=1))


@pytest.mark.parametrize("setting, value", [("peak_lr", NAN), ("epochs", 0), ("margin", NAN), ("k", 1),
                                            ("warmup_fraction", 1.5), ("max_grad_norm", -1.0), ("seed", 2**64)])
def test_reward_model_refuses_a_bad_number_before_labelling(setting, value, tmp_path):
    cfg = reward.RewardConfig(**{setting: value})
    with pytest.raises(ConfigError, match=rf"{setting} must be"):
        reward.train_reward(cfg, toy_pairs(2), init=tmp_path / "missing")
    with pytest.raises(ConfigError, match=rf"{setting} must be"):  # the stage refuses before it samples or trains SFT
        reward.run_reward_stage(cfg=cfg, init=tmp_path / "missing", use_store=False, progress=False)


@pytest.mark.parametrize("setting, value", [("kl_coef", NAN), ("kl_coef", -0.1), ("lr", NAN), ("lr", INF),
                                            ("temperature", NAN), ("gamma", NAN), ("lam", 2.0), ("clip", NAN),
                                            ("vf_coef", NAN), ("adam_eps", 0.0), ("max_grad_norm", NAN),
                                            ("unended_penalty", NAN), ("target_kl", NAN), ("kl_horizon", 0),
                                            ("updates", 0), ("seed", 2**64)])
def test_ppo_refuses_a_bad_number_before_loading_anything(setting, value, tmp_path):
    with pytest.raises(ConfigError, match=rf"{setting} must be"):
        ppo.train_ppo(tiny_ppo(**{setting: value}), policy=str(tmp_path / "missing"), reward_fn=ppo.gold_reward_fn())


def test_ppo_stage_refuses_a_nan_kl_coef_from_the_command_line(tmp_path):
    # `rlhf-lessons ppo --kl-coef nan --updates 1` once trained a NaN policy over the workspace's ppo/ and exited 0
    with pytest.raises(ConfigError, match=r"kl_coef must be a finite number \(got nan\)"):
        ppo.run_ppo_stage(kl_coef=NAN, updates=1, policy=str(tmp_path / "missing"))


@pytest.mark.parametrize("setting, value", [("steps", 0), ("steps", -1), ("peak_lr", NAN), ("block_size", 4096),
                                            ("n_head", 3), ("vocab_size", 10), ("seed", 2**64)])
def test_pretrain_refuses_a_bad_number_before_preparing_the_data(setting, value, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was prepared before the settings were checked")

    monkeypatch.setattr(world, "pretraining_dialogues", no_data)
    with pytest.raises(ConfigError, match=rf"{setting}|n_embd"):
        pretrain.pretrain(pretrain.PretrainConfig(**{setting: value}), tmp_path / "base")


def test_the_default_settings_pass_every_check():
    sft.check_config(sft.SFTConfig())
    reward.check_config(reward.RewardConfig())
    ppo.check_config(ppo.PPOConfig())
    ppo.check_config(ppo.PPOConfig(target_kl=6.0, kl_coef=0.0, seed=SEED_MAX))
    pretrain.check_config(pretrain.PretrainConfig())


def test_setting_problems_names_every_bad_field_and_allows_none_where_it_is_the_default():
    cfg = ppo.PPOConfig(lr=NAN, epochs=True, batch_size="8")
    problems = setting_problems(cfg, ppo.PPO_BOUNDS)
    assert problems == ["batch_size must be a whole number (got '8')", "epochs must be a whole number (got True)",
                        "lr must be a finite number (got nan)"]
    assert setting_problems(ppo.PPOConfig(target_kl=None), ppo.PPO_BOUNDS) == []
    assert setting_problems(ppo.PPOConfig(packed="no", whiten_scores=1), ppo.PPO_BOUNDS) == [
        "whiten_scores must be True or False (got 1)", "packed must be True or False (got 'no')"]
    assert POSITIVE.describe() == "> 0" and Bounds(0, 1, note="a share").describe() == ">= 0 and <= 1 (a share)"


# ----- 2. training stops at the first non-finite loss or gradient -----

def test_check_finite_step_passes_finite_values_and_names_the_step_otherwise():
    check_finite_step("SFT", "step 1", torch.tensor(2.0), torch.tensor(0.5))
    with pytest.raises(TrainingDiverged, match="SFT training diverged at step 3: the loss is nan"):
        check_finite_step("SFT", "step 3", torch.tensor(NAN), torch.tensor(0.5))
    with pytest.raises(TrainingDiverged, match="gradient norms 1, inf. Nothing was saved; lower the learning rate"):
        check_finite_step("PPO", "update 1", torch.tensor(1.0), torch.tensor(1.0), torch.tensor(INF))


def test_diverged_sft_raises_and_leaves_the_good_checkpoint_byte_identical(good_checkpoint):
    path, before = good_checkpoint
    cfg = sft.SFTConfig(n_demonstrations=40, epochs=1, batch_size=8, peak_lr=1e3)
    with pytest.raises(TrainingDiverged, match=r"SFT training diverged at step \d+ of 5.*lower peak_lr \(it is 1000\)"):
        sft.train_sft(cfg, out_dir=path)
    assert folder_bytes(path) == before and leftovers(path.parent) == []


def test_diverged_reward_model_raises_and_leaves_the_good_checkpoint_byte_identical(good_checkpoint):
    path, before = good_checkpoint
    cfg = reward.RewardConfig(epochs=2, batch_size=8, peak_lr=1e3)
    with pytest.raises(TrainingDiverged, match=r"reward model training diverged at step \d+ of 8.*peak_lr"):
        reward.train_reward(cfg, toy_pairs(), init="base", out_dir=path, progress=False)
    assert folder_bytes(path) == before and leftovers(path.parent) == []


def test_diverged_ppo_raises_and_leaves_the_good_checkpoint_byte_identical(good_checkpoint):
    path, before = good_checkpoint
    with pytest.raises(TrainingDiverged, match=r"PPO training diverged at update 1 of 2, epoch \d, minibatch \d.*lr"):
        ppo.train_ppo(tiny_ppo(lr=1e3), policy="base", out_dir=path, reward_fn=ppo.gold_reward_fn())
    assert folder_bytes(path) == before and leftovers(path.parent) == []


def test_ppo_saves_its_log_inside_the_swapped_in_folder(tmp_path):
    out = ppo.train_ppo(tiny_ppo(updates=1), policy="base", out_dir=tmp_path / "ppo", reward_fn=ppo.gold_reward_fn())
    assert (tmp_path / "ppo" / "log.json").exists() and len(out["log"]) == 1 and leftovers(tmp_path) == []


# ----- 3. save_checkpoint: never a non-finite model, never a damaged good checkpoint -----

def test_save_refuses_a_model_with_a_nan_weight(good_checkpoint, base_tokenizer):
    path, before = good_checkpoint
    torch.manual_seed(1)
    broken = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2))
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = NAN
    with pytest.raises(TrainingDiverged, match="refusing to save the sft model .* 1 of its weights are NaN"):
        save_checkpoint(broken, base_tokenizer, path, {"stage": "sft"})
    assert folder_bytes(path) == before and leftovers(path.parent) == []


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(good_checkpoint, base_tokenizer, monkeypatch):
    path, before = good_checkpoint
    torch.manual_seed(2)
    other = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the learner presses Ctrl-C after the weights, before the tokenizer

    monkeypatch.setattr(type(base_tokenizer), "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(other, base_tokenizer, path, {"stage": "sft"})
    assert folder_bytes(path) == before and leftovers(path.parent) == []


def test_save_replaces_a_checkpoint_whole_and_keeps_the_learners_other_files(good_checkpoint, base_tokenizer):
    path, before = good_checkpoint
    (path / "notes.txt").write_text("my notes")
    torch.manual_seed(3)
    other = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2))
    save_checkpoint(other, base_tokenizer, path, {"stage": "sft"})
    assert folder_bytes(path)["model.safetensors"] != before["model.safetensors"]
    assert (path / "notes.txt").read_text() == "my notes" and leftovers(path.parent) == []
    loaded, _ = load_policy(path, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), other.state_dict().values()))


def test_save_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, tiny_model, base_tokenizer):
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match="holds other files and no checkpoint"):
        save_checkpoint(tiny_model, base_tokenizer, tmp_path / "documents", {"stage": "sft"})
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CheckpointError, match="it is a file"):
        save_checkpoint(tiny_model, base_tokenizer, tmp_path / "a_file", {"stage": "sft"})
    assert (tmp_path / "documents" / "thesis.tex").read_text() == "years of work"
