"""Lesson 05's exercise checks accept the reference answers and reject the classic mistakes."""

import pytest
import torch

from rlhf_lessons.exercises import check_clipped_policy_loss, check_gae
from rlhf_lessons.ppo import clipped_policy_loss, gae, gae_vectorised

# ----- GAE -----


def gae_forward(rewards, values, mask, gamma, lam):  # the recursion run the wrong way
    m = mask.float()
    adv, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    for t in range(rewards.shape[1]):
        next_value = values[:, t + 1] * m[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv * m, (adv + values) * m


def gae_no_mask(rewards, values, mask, gamma, lam):  # bootstraps from padding after EOS
    adv, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv * mask, (adv + values) * mask


def gae_mask_ignored_entirely(rewards, values, mask, gamma, lam):  # no mask anywhere
    adv, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv, adv + values


def gae_mask_only_in_delta(rewards, values, mask, gamma, lam):  # the recursion itself crosses EOS
    m = mask.float()
    adv, running = torch.zeros_like(rewards), torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] * m[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv * m, (adv + values) * m


def gae_no_lambda(rewards, values, mask, gamma, lam):  # forgot lambda: Monte Carlo advantages
    return gae(rewards, values, mask, gamma, 1.0)


def gae_returns_without_values(rewards, values, mask, gamma, lam):
    adv, _ = gae(rewards, values, mask, gamma, lam)
    return adv, adv


def gae_advantages_only(rewards, values, mask, gamma, lam):  # a right answer that returns advantages alone
    return gae(rewards, values, mask, gamma, lam)[0]


def test_gae_check_accepts_reference_and_equivalents(capsys):
    check_gae(gae)
    assert capsys.readouterr().out.startswith("correct")
    check_gae(gae_vectorised)
    check_gae(gae_advantages_only)


@pytest.mark.parametrize("wrong, hint", [
    (gae_forward, "forwards"),
    (gae_no_mask, "after EOS leaked"),
    (gae_mask_ignored_entirely, "after EOS are not 0"),
    (gae_mask_only_in_delta, "after EOS leaked"),
    (gae_no_lambda, "expected"),
    (gae_returns_without_values, r"advantages \+ values"),
    (lambda r, v, m, g, l: [[0.0]], "torch tensor"),
])
def test_gae_check_rejects_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_gae(wrong)


# ----- the clipped policy loss -----


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def terms(logp_new, logp_old, adv, clip, low=None, high=None):
    ratio = torch.exp(logp_new - logp_old)
    low = 1 - clip if low is None else low
    high = 1 + clip if high is None else high
    return -adv * ratio, -adv * torch.clamp(ratio, low, high)


def loss_min_max_swapped(logp_new, logp_old, adv, mask, clip):
    a, b = terms(logp_new, logp_old, adv, clip)
    return masked_mean(torch.min(a, b), mask)


def loss_objective_not_negated(logp_new, logp_old, adv, mask, clip):
    ratio = torch.exp(logp_new - logp_old)
    return masked_mean(torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)), mask)


def loss_wrong_side_bounds(logp_new, logp_old, adv, mask, clip):  # bounds the wrong way round
    a, b = terms(logp_new, logp_old, adv, clip, low=1 + clip, high=1 - clip)
    return masked_mean(torch.max(a, b), mask)


def loss_upper_side_only(logp_new, logp_old, adv, mask, clip):
    ratio = torch.exp(logp_new - logp_old)
    return masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(max=1 + clip)), mask)


def loss_lower_side_only(logp_new, logp_old, adv, mask, clip):
    ratio = torch.exp(logp_new - logp_old)
    return masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(min=1 - clip)), mask)


def loss_clips_advantage(logp_new, logp_old, adv, mask, clip):
    ratio = torch.exp(logp_new - logp_old)
    return masked_mean(torch.max(-adv * ratio, -adv.clamp(-clip, clip) * ratio), mask)


def loss_clips_log_ratio(logp_new, logp_old, adv, mask, clip):
    log_ratio = logp_new - logp_old
    return masked_mean(torch.max(-adv * log_ratio.exp(), -adv * log_ratio.clamp(-clip, clip).exp()), mask)


def loss_no_mask(logp_new, logp_old, adv, mask, clip):
    a, b = terms(logp_new, logp_old, adv, clip)
    return torch.max(a, b).mean()


def loss_summed(logp_new, logp_old, adv, mask, clip):
    a, b = terms(logp_new, logp_old, adv, clip)
    return (torch.max(a, b) * mask).sum()


def loss_per_reply(logp_new, logp_old, adv, mask, clip):
    a, b = terms(logp_new, logp_old, adv, clip)
    return ((torch.max(a, b) * mask).sum(1) / mask.sum(1)).mean()


def loss_unclipped(logp_new, logp_old, adv, mask, clip):  # plain policy gradient with importance ratio
    ratio = torch.exp(logp_new - logp_old)
    return masked_mean(-adv * ratio, mask)


def loss_by_objectives(logp_new, logp_old, adv, mask, clip):  # a right answer written another way
    ratio = torch.exp(logp_new - logp_old)
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    return -(objective * mask).sum() / mask.sum()


def test_policy_loss_check_accepts_reference_and_equivalents(capsys):
    check_clipped_policy_loss(clipped_policy_loss)
    assert capsys.readouterr().out.startswith("correct")
    check_clipped_policy_loss(loss_by_objectives)


@pytest.mark.parametrize("wrong, hint", [
    (loss_min_max_swapped, "min/max swapped"),
    (loss_objective_not_negated, "negate"),
    (loss_wrong_side_bounds, "wrong way round"),
    (loss_upper_side_only, "only the top"),
    (loss_lower_side_only, "only the bottom"),
    (loss_clips_advantage, "clipped the advantage"),
    (loss_clips_log_ratio, "log-ratio"),
    (loss_no_mask, "after EOS"),
    (loss_summed, "summed"),
    (loss_per_reply, "per reply"),
    (loss_unclipped, "expected"),
    (lambda *args: 0.5, "0-dim tensor"),
])
def test_policy_loss_check_rejects_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_clipped_policy_loss(wrong)
