"""Exercise checks of lessons 00-02 accept the reference answer and reject the classic mistakes."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_lessons import exercises, gold
from rlhf_lessons.sampling import temperature_probs
from rlhf_lessons.sft import IGNORE, masked_lm_loss


def test_single_pair_ceiling():
    exercises.check_single_pair_ceiling(gold.noise_ceiling([(1.0, 0.0)]))
    for wrong in [None, 0.5, 1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(-2)), 1.0]:
        with pytest.raises(AssertionError):
            exercises.check_single_pair_ceiling(wrong)


def test_temperature_probs():
    exercises.check_temperature_probs(temperature_probs)
    mutants = [lambda l, t: torch.softmax(l, -1),  # ignores temperature
               lambda l, t: torch.softmax(l * t, -1),  # multiplies
               lambda l, t: l / t,  # no softmax
               lambda l, t: torch.softmax(l / t, 0)]  # wrong dimension
    for mutant in mutants:
        with pytest.raises(AssertionError):
            exercises.check_temperature_probs(mutant)


def reference_reply_loss(logits, input_ids, reply_mask):
    return masked_lm_loss(logits, input_ids.masked_fill(reply_mask == 0, IGNORE))


def test_reply_loss_accepts_the_reference_and_an_independent_correct_answer():
    exercises.check_reply_loss(reference_reply_loss)

    def by_hand(logits, input_ids, reply_mask):
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        m = reply_mask[:, 1:].float()
        return -(logp * m).sum() / m.sum()

    exercises.check_reply_loss(by_hand)


@pytest.mark.parametrize("mistake", ["prompt_too", "no_shift", "mask_not_shifted", "mean_over_all"])
def test_reply_loss_rejects_classic_mistakes(mistake):
    def mutant(logits, input_ids, reply_mask):
        V = logits.size(-1)
        if mistake == "prompt_too":
            return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))
        if mistake == "no_shift":
            labels = input_ids.masked_fill(reply_mask == 0, IGNORE)
            return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=IGNORE)
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        if mistake == "mask_not_shifted":
            m = reply_mask[:, :-1].float()
            return -(logp * m).sum() / m.sum()
        m = reply_mask[:, 1:].float()
        return -(logp * m).sum() / m.numel()

    with pytest.raises(AssertionError):
        exercises.check_reply_loss(mutant)
