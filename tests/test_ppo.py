"""Tests of PPO: the mathematics by hand, masks (nothing after EOS counts), the KL controllers, and tiny end-to-end runs."""

import json
import math

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_lessons import ppo, world
from rlhf_lessons.models import load_policy, save_checkpoint, tiny_config, train_tokenizer
from rlhf_lessons.pretrain import dialogue_text
from rlhf_lessons.sampling import left_pad, sample_replies


def prefix_mask(lengths, width):
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


# ----- GAE -----

def test_gae_by_hand():
    # one reply of 3 tokens, then padding; gamma 1, lambda 0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.2, 0.4, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # delta_2 = 1 - 0.4 = 0.6 (no next state); delta_1 = 0 + 0.4 - 0.2 = 0.2; delta_0 = 0 + 0.2 - 0.5 = -0.3
    # A_2 = 0.6; A_1 = 0.2 + 0.5 * 0.6 = 0.5; A_0 = -0.3 + 0.5 * 0.5 = -0.05
    adv, ret = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[-0.05, 0.5, 0.6, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.45, 0.7, 1.0, 0.0]]))
    # gamma 0.9, lambda 1: Monte Carlo returns minus values
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert torch.allclose(ret, torch.tensor([[0.81, 0.9, 1.0, 0.0]]))


def test_gae_lambda_zero_is_one_step_td():
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    mask = prefix_mask([6, 4, 1], 6)
    adv, _ = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.0)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(3, 1)], 1)
    assert torch.allclose(adv, (rewards + next_values - values) * mask)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.5, 0.0)])
def test_gae_loop_matches_vectorised(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(8, 11, generator=gen), torch.randn(8, 11, generator=gen)
    mask = prefix_mask([11, 1, 5, 7, 2, 11, 3, 9], 11)
    adv_loop, ret_loop = ppo.gae(rewards, values, mask, gamma, lam)
    adv_vec, ret_vec = ppo.gae_vectorised(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv_loop, adv_vec, atol=1e-5)
    assert torch.allclose(ret_loop, ret_vec, atol=1e-5)


def test_gae_ignores_everything_after_eos():
    gen = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    mask = prefix_mask([3, 7, 1, 5], 7)
    adv, ret = ppo.gae(rewards, values, mask)
    after = mask == 0
    rewards2 = torch.where(after, torch.randn(4, 7, generator=gen) * 100, rewards)
    values2 = torch.where(after, torch.randn(4, 7, generator=gen) * 100, values)
    adv2, ret2 = ppo.gae(rewards2, values2, mask)
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert (adv[after] == 0).all() and (ret[after] == 0).all()


def test_whiten_uses_valid_entries_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = ppo.whiten(x, mask)
    valid = w[mask.bool()]
    assert abs(valid.mean().item()) < 1e-6
    assert abs(valid.pow(2).mean().item() - 1) < 1e-4  # population variance 1
    assert (w[~mask.bool()] == 0).all()
    kept = ppo.whiten(x, mask, shift_mean=False)[mask.bool()]
    assert abs(kept.mean().item() - 3.0) < 1e-5  # mean of 1, 2, 3, 4, 5


# ----- losses -----

def test_clipped_policy_loss_by_hand():
    # ratios e^0.5 = 1.65 and e^-0.5 = 0.61, advantages of both signs, one token after EOS with wild numbers
    logp_old = torch.zeros(1, 5)
    logp_new = torch.tensor([[0.5, 0.5, -0.5, -0.5, 30.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1e6]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac, approx_kl = ppo.clipped_policy_loss(logp_new, logp_old, adv, mask, clip=0.2)
    r_hi, r_lo = math.exp(0.5), math.exp(-0.5)
    # A>0, ratio high: clipped at 1.2 -> -1.2. A<0, ratio high: unclipped -> +1.65 (pessimistic).
    # A>0, ratio low: unclipped -> -0.61. A<0, ratio low: clipped at 0.8 -> +0.8.
    expected = (-1.2 + r_hi - r_lo + 0.8) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    k3 = lambda lr: math.exp(lr) - 1 - lr  # noqa: E731
    assert approx_kl.item() == pytest.approx((2 * k3(0.5) + 2 * k3(-0.5)) / 4, abs=1e-6)


def test_clipped_policy_loss_gradient_vanishes_when_clipped():
    logp_old = torch.zeros(1, 2)
    logp_new = torch.tensor([[0.5, 0.1]], requires_grad=True)  # ratio 1.65 (clipped) and 1.105 (inside)
    adv = torch.tensor([[1.0, 1.0]])
    loss, _, _ = ppo.clipped_policy_loss(logp_new, logp_old, adv, torch.ones(1, 2), clip=0.2)
    loss.backward()
    assert logp_new.grad[0, 0] == 0
    assert logp_new.grad[0, 1] == pytest.approx(-math.exp(0.1) / 2)


def test_clipped_value_loss_by_hand():
    v_old = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    v_new = torch.tensor([[0.5, 0.5, 0.1, -9.0]])
    returns = torch.tensor([[1.0, -1.0, 0.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac = ppo.clipped_value_loss(v_new, v_old, returns, mask, clip=0.2)
    # token 0: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> 0.64 (clipped wins)
    # token 1: unclipped (0.5+1)^2 = 2.25, clipped (0.2+1)^2 = 1.44 -> 2.25
    # token 2: inside the clip range: 0.01
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25 + 0.01) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(1 / 3)


# ----- KL -----

def test_kl_estimators_are_unbiased_and_k3_nonnegative():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    logp, logq = p.log(), q.log()
    exact = (p * (logp - logq)).sum()
    # expectation over tokens drawn from p, computed exactly
    assert (p * ppo.kl_k1(logp, logq)).sum().item() == pytest.approx(exact.item(), abs=1e-6)
    assert (p * ppo.kl_k3(logp, logq)).sum().item() == pytest.approx(exact.item(), abs=1e-6)
    assert (ppo.kl_k1(logp, logq) < 0).any()  # single k1 terms can be negative
    assert (ppo.kl_k3(logp, logq) >= 0).all()
    assert ppo.kl_k3(logp, logp).abs().max() == 0


def test_kl_shaped_rewards_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    logp_ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0], [-2.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    score = torch.tensor([2.0, 3.0])
    ended = torch.tensor([True, False])
    r = ppo.kl_shaped_rewards(score, logp, logp_ref, mask, beta=0.1, ended=ended, unended_penalty=-1.0)
    # row 0: -0.1 * (0.5, -1, 0) and the score 2 at its EOS (index 2); nothing after
    assert torch.allclose(r[0], torch.tensor([-0.05, 0.1, 2.0, 0.0]))
    # row 1 never ended: its score 3 is replaced by the penalty -1 at its last token
    assert torch.allclose(r[1], torch.tensor([-0.1, 0.0, 0.0, -1.0]))


def test_unended_penalty_replaces_the_score():
    zeros = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.long)
    ended, unended = torch.tensor([True, True]), torch.tensor([False, False])
    good = ppo.kl_shaped_rewards(torch.tensor([5.0, -5.0]), zeros, zeros, mask, 0.1, unended, -1.0)
    assert torch.equal(good[:, -1], torch.tensor([-1.0, -1.0]))
    assert torch.equal(ppo.kl_shaped_rewards(torch.tensor([5.0, -5.0]), zeros, zeros, mask, 0.1, ended, -1.0)[:, -1],
                       torch.tensor([5.0, -5.0]))


def test_adaptive_kl_controller_moves_towards_target():
    ctl = ppo.AdaptiveKLController(0.1, target=6.0, horizon=1000)
    ctl.update(current_kl=12.0, n_steps=64)  # above target: err clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 1000))
    before = ctl.value
    ctl.update(current_kl=5.4, n_steps=64)  # below target: err = -0.1
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 64 / 1000))
    ctl.update(current_kl=6.0, n_steps=64)  # on target: unchanged
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 64 / 1000))
    fixed = ppo.FixedKLController(0.15)
    fixed.update(100.0, 64)
    assert fixed.value == 0.15


def test_entropy_of_uniform_and_of_masked_logits():
    assert ppo.entropy_of(torch.zeros(2, 3, 8))[0, 0].item() == pytest.approx(math.log(8))
    logits = torch.tensor([0.0, 0.0, float("-inf")])
    assert ppo.entropy_of(logits).item() == pytest.approx(math.log(2))


# ----- tiny models -----

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny tokenizer and a 1-layer GPT-2 saved as a checkpoint: (path, model, tokenizer)."""
    texts = [dialogue_text(r.prompt, text) for r, _, text in world.pretraining_dialogues(400, seed=0)]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(tokenizer, n_layer=1, n_embd=32, n_head=2)).eval()
    path = tmp_path_factory.mktemp("tiny") / "policy"
    save_checkpoint(model, tokenizer, path, {"stage": "test"})
    return path, model, tokenizer


def test_logprobs_match_manual_and_ignore_padding(tiny):
    _, model, tokenizer = tiny
    prompts = ["What color is the sky?", "Please, could you tell me how long I should boil an egg?"]
    gen = torch.Generator().manual_seed(0)
    s = sample_replies(model, tokenizer, prompts, max_new_tokens=6, temperature=0.7, generator=gen)
    P = s.prompt_ids.shape[1]
    logp = ppo.logprobs_of(model, s.input_ids, s.attention_mask, P, temperature=0.7)
    assert logp.shape == s.reply_ids.shape
    assert (logp[s.reply_mask == 0] == 0).all()
    # the first (shorter, left-padded) prompt alone, without padding, gives the same log-probs
    real = s.attention_mask[0].bool()
    ids = s.input_ids[0][real][None]
    n_prompt = int(s.prompt_mask[0].sum())
    logits = model(input_ids=ids).logits[0, n_prompt - 1:-1] / 0.7
    logits[:, tokenizer.pad_token_id] = float("-inf")
    manual = torch.log_softmax(logits, -1).gather(-1, ids[0, n_prompt:, None]).squeeze(-1)
    n_reply = int(s.reply_mask[0].sum())
    assert torch.allclose(logp[0, :n_reply], manual, atol=1e-5)


def test_nothing_after_eos_counts_in_any_loss(tiny):
    _, model, tokenizer = tiny
    torch.manual_seed(0)
    value_model = ppo.make_value_model(model)  # a head on the policy's trunk
    with torch.no_grad():
        value_model.head.weight.normal_()  # nonzero values, so changes after EOS would show
    prompts = [r.prompt for r in world.requests("train")[:8]]
    prompt_ids, prompt_mask = left_pad(tokenizer, prompts)
    P = prompt_ids.shape[1]
    # replies of different lengths, each ending with EOS (one never ends), then padding
    lengths = [3, 10, 1, 6, 10, 2, 8, 5]
    gen = torch.Generator().manual_seed(3)
    reply_ids = torch.randint(2, len(tokenizer), (8, 10), generator=gen)
    mask = prefix_mask(lengths, 10)
    ended = torch.tensor([True, True, True, True, False, True, True, True])
    for row, n in enumerate(lengths):
        if ended[row]:
            reply_ids[row, n - 1] = tokenizer.eos_token_id
    reply_ids = torch.where(mask.bool(), reply_ids, torch.full_like(reply_ids, tokenizer.pad_token_id))
    attention_mask = torch.cat([prompt_mask, mask], 1)

    def losses(reply_ids):
        ids = torch.cat([prompt_ids, reply_ids], 1)
        logits, values = ppo.policy_and_values(model, value_model, ids, attention_mask, P, 1.0)
        logp = ppo.token_logprobs(logits, reply_ids, mask)
        assert torch.allclose(logp, ppo.logprobs_of(model, ids, attention_mask, P))
        logp_ref = logp.detach() - 0.1
        rewards = ppo.kl_shaped_rewards(torch.ones(8), logp, logp_ref, mask, 0.1, ended)
        adv, ret = ppo.gae(rewards, values, mask)
        pg, _, _ = ppo.clipped_policy_loss(logp, logp.detach() + 0.05, ppo.whiten(adv, mask), mask)
        vf, _ = ppo.clipped_value_loss(values, values.detach() + 0.3, ret, mask)
        return [logp, values, rewards, adv, ret, pg, vf]

    before = losses(reply_ids)
    scrambled = torch.where(mask.bool(), reply_ids, torch.randint(2, len(tokenizer), reply_ids.shape, generator=gen))
    after = losses(scrambled)
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6)


def tiny_cfg(**kw):
    base = dict(updates=2, batch_size=8, max_new_tokens=8, epochs=2, minibatches=2, calibration_samples=8, lr=1e-4)
    return ppo.PPOConfig(**{**base, **kw})


def test_smoke_train_ppo_with_reward_fn(tiny, tmp_path):
    path, _, _ = tiny
    rows = []
    out = ppo.train_ppo(tiny_cfg(), policy=str(path), out_dir=tmp_path / "ppo",
                        on_update=lambda u, row: rows.append((u, row)), reward_fn=ppo.gold_reward_fn())
    assert [u for u, _ in rows] == [0, 1]
    keys = {"proxy_reward", "gold_reward", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl", "value_loss",
            "reply_length", "ended"}
    assert keys <= set(rows[0][1])
    assert all(math.isfinite(v) for _, row in rows for v in row.values())
    assert rows[0][1]["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout comes from the reference itself
    log = json.loads((tmp_path / "ppo" / "log.json").read_text())
    assert log == [row for _, row in rows] == out["log"]
    manifest = json.loads((tmp_path / "ppo" / "manifest.json").read_text())
    assert manifest["stage"] == "ppo" and manifest["config"]["updates"] == 2
    model, _ = load_policy(tmp_path / "ppo")
    assert isinstance(model, GPT2LMHeadModel)
    # the same seed gives the same run
    again = ppo.train_ppo(tiny_cfg(), policy=str(path), out_dir=tmp_path / "again", reward_fn=ppo.gold_reward_fn())
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again["log"]] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in log]


def test_smoke_train_ppo_with_reward_model_and_adaptive_kl(tiny, tmp_path):
    from rlhf_lessons.reward import reward_model_from, score_ids

    path, _, _ = tiny
    rm, rm_tok = reward_model_from(str(path))
    rm.config.reward_gain, rm.config.reward_bias = 2.0, -0.5
    save_checkpoint(rm, rm_tok, tmp_path / "rm", {"stage": "rm"})
    loaded, _ = __import__("rlhf_lessons.reward", fromlist=["x"]).load_reward_model(tmp_path / "rm")
    value_model = ppo.make_value_model(load_policy(path)[0], loaded, "reward")
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    # the value model starts as the normalised reward model, read at every position
    assert value_model(ids, mask)[0, -1].item() == pytest.approx(score_ids(loaded, ids, mask).item(), abs=1e-5)
    out = ppo.train_ppo(tiny_cfg(target_kl=1.0, kl_horizon=100, value_model="reward"), policy=str(path),
                        reward=str(tmp_path / "rm"),
                        out_dir=tmp_path / "ppo")
    assert len(out["log"]) == 2 and out["log"][1]["kl_coef"] != out["log"][0]["kl_coef"]


def test_run_ppo_stage_rejects_both_kl_options():
    with pytest.raises(ValueError, match="either"):
        ppo.run_ppo_stage(kl_coef=0.1, target_kl=6.0)


def test_gold_reward_fn_rejects_unknown_population():
    with pytest.raises(ValueError, match="population"):
        ppo.gold_reward_fn("nobody")


def test_bad_settings_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="minibatches"):
        ppo.check_config(ppo.PPOConfig(batch_size=4, minibatches=8))
    with pytest.raises(ValueError, match="target_kl"):
        ppo.run_ppo_stage(target_kl=-1.0)
    with pytest.raises(ValueError, match="updates"):
        ppo.run_ppo_stage(updates=0)


# ----- the default run's learning outcome -----

@pytest.mark.slow
def test_default_ppo_beats_sft_on_gold(default_run):
    """Default settings, from default SFT and reward models: PPO beats SFT by gold on held-out requests without
    unsafe or over-cautious drift, and gold rises during training, not only the proxy. Measured (seed 0, 1 thread,
    benchmarks/outcomes.py): win rate 0.665 on the held-out evaluation set (0.659 and 0.703 on seeds 1 and 2; the
    yardstick issue's bar is 0.7 on every seed: not met, see test_outcomes.py::test_every_bar_holds), helpful rate
    up 0.037, harmful compliance 0.00, over-refusal 0.017."""
    out = default_run["ppo"]
    assert out["win_rate"] >= 0.6, out
    assert out["harmful_compliance_rate"] <= 0.05, out
    assert out["over_refusal_rate"] <= 0.1, out
    assert out["gold_reward"] > out["gold_reward_start"] + 0.2, out
