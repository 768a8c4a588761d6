"""Lesson 04's exercise checks accept the reference answers and reject the classic mistakes."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from rlhf_lessons.exercises import check_bradley_terry_loss, check_kwise_loss
from rlhf_lessons.reward import bradley_terry_loss, kwise_ranking_loss

# ----- Bradley-Terry -----


def bt_sign_flipped(r_chosen, r_rejected):
    return -F.logsigmoid(r_rejected - r_chosen).mean()


def bt_unstable(r_chosen, r_rejected):
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def bt_summed(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).sum()


def bt_no_log(r_chosen, r_rejected):
    return (1 - torch.sigmoid(r_chosen - r_rejected)).mean()


def bt_margin_ignored(r_chosen, r_rejected, margin=0.0):
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def bt_margin_wrong_sign(r_chosen, r_rejected, margin=0.0):
    return -F.logsigmoid(r_chosen - r_rejected + margin).mean()


def bt_per_pair(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected)


def bt_python_float(r_chosen, r_rejected):
    return float(-F.logsigmoid(r_chosen - r_rejected).mean())


def bt_stable_by_hand(r_chosen, r_rejected):  # a correct answer written another way
    return F.softplus(r_rejected - r_chosen).mean()


def test_bt_check_accepts_reference_and_equivalents(capsys):
    check_bradley_terry_loss(bradley_terry_loss)
    assert capsys.readouterr().out.startswith("correct")
    check_bradley_terry_loss(bt_stable_by_hand)
    check_bradley_terry_loss(lambda r_chosen, r_rejected: -F.logsigmoid(r_chosen - r_rejected).mean())


@pytest.mark.parametrize("wrong, hint", [
    (bt_sign_flipped, "opposite"),
    (bt_unstable, "logsigmoid"),
    (bt_summed, "mean"),
    (bt_no_log, "expected"),
    (bt_margin_ignored, "margin"),
    (bt_margin_wrong_sign, "margin"),
    (bt_per_pair, "one number"),
    (bt_python_float, "torch tensor"),
])
def test_bt_check_rejects_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_bradley_terry_loss(wrong)


def test_bt_unstable_mutant_really_is_unstable():
    """The reason the check exists: log(sigmoid(x)) breaks at x = -1e4, logsigmoid does not."""
    r = torch.tensor([-1e4], requires_grad=True)
    assert torch.isinf(bt_unstable(r, torch.zeros(1)))
    assert torch.isfinite(bradley_terry_loss(r, torch.zeros(1)))


# ----- K-wise -----


def kwise_summed_over_pairs(rewards):
    K = rewards.size(1)
    return -sum(F.logsigmoid(rewards[:, i] - rewards[:, j]) for i, j in itertools.combinations(range(K), 2)).mean()


def kwise_divided_by_k(rewards):
    return kwise_summed_over_pairs(rewards) / rewards.size(1)


def kwise_reversed(rewards):
    return kwise_ranking_loss(rewards.flip(1))


def kwise_unstable(rewards):
    K = rewards.size(1)
    pairs = list(itertools.combinations(range(K), 2))
    return -sum(torch.log(torch.sigmoid(rewards[:, i] - rewards[:, j])) for i, j in pairs).mean() / len(pairs)


def kwise_summed_over_batch(rewards):
    K = rewards.size(1)
    pairs = list(itertools.combinations(range(K), 2))
    return -sum(F.logsigmoid(rewards[:, i] - rewards[:, j]) for i, j in pairs).sum() / len(pairs)


def kwise_adjacent_only(rewards):  # only the K-1 neighbouring pairs, not all C(K,2)
    return -F.logsigmoid(rewards[:, :-1] - rewards[:, 1:]).mean()


def kwise_loop(rewards):  # a correct answer written as a loop
    K = rewards.size(1)
    pairs = list(itertools.combinations(range(K), 2))
    return -sum(F.logsigmoid(rewards[:, i] - rewards[:, j]) for i, j in pairs).mean() / len(pairs)


def test_kwise_check_accepts_reference_and_equivalents(capsys):
    check_kwise_loss(kwise_ranking_loss)
    assert capsys.readouterr().out.startswith("correct")
    check_kwise_loss(kwise_loop)


@pytest.mark.parametrize("wrong, hint", [
    (kwise_summed_over_pairs, "summed over"),
    (kwise_divided_by_k, "divided by K"),
    (kwise_reversed, "revers"),
    (kwise_unstable, "logsigmoid"),
    (kwise_summed_over_batch, "batch"),
    (kwise_adjacent_only, "expected"),
])
def test_kwise_check_rejects_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_kwise_loss(wrong)
