"""Lesson 06's exercise checks accept the reference answers and reject the classic mistakes."""

import math

import pytest

from rlhf_lessons import gold, rater_bias
from rlhf_lessons.exercises import check_bestofn_weights, check_flip_share
from rlhf_lessons.overoptimization import bestofn_weights

# ----- best-of-n's order-statistics weights -----


def test_the_reference_weights_pass(capsys):
    check_bestofn_weights(bestofn_weights)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, says", [
    (lambda m, n: list(reversed(bestofn_weights(m, n))), "wrong order"),
    (lambda m, n: [1 / n if i < n else 0.0 for i in range(m)], "averages the n best"),
    (lambda m, n: [((m - i) ** n - (m - i - 1) ** n) / m ** n for i in range(m)], "with replacement"),
    (lambda m, n: [math.comb(m - i, n - 1) / math.comb(m, n) for i in range(m)], "off-by-one"),
    (lambda m, n: [math.comb(m - 1 - i, n - 1) for i in range(m)], "sum to"),
    (lambda m, n: bestofn_weights(m, n)[:-1], "return"),
    (lambda m, n: None, "return the list"),
    (lambda m, n: [w * 0.9 + 0.1 / m for w in bestofn_weights(m, n)], "differ from"),
])
def test_wrong_weights_are_rejected_with_the_reason(wrong, says):
    with pytest.raises(AssertionError, match=says):
        check_bestofn_weights(wrong)


# ----- the share at which a pool flips -----


def test_flip_share_solves_the_mixture_and_says_none_when_nothing_flips():
    assert rater_bias.flip_share(0.2, 0.8) == pytest.approx(0.5)
    assert rater_bias.flip_share(0.1, 0.7) == pytest.approx(2 / 3)
    s = rater_bias.flip_share(0.1, 0.7)
    assert s * 0.7 + (1 - s) * 0.1 == pytest.approx(0.5)
    assert rater_bias.flip_share(0.3, 0.4) is None and rater_bias.flip_share(0.6, 0.9) is None
    assert rater_bias.flip_share(0.4, 0.4) is None


def test_predicted_flips_match_the_mixture_probability_of_the_pool():
    probes = rater_bias.disagreement_probes(seed=0)["refusal"][:10]
    for (request, x, y), share in zip(probes, rater_bias.predicted_flips(probes)):
        assert share is not None  # balanced answers, cautious refuses: every refusal probe flips somewhere
        p = gold.mixture_probability(request, x, y, {"cautious": share, "balanced": 1 - share})
        assert p == pytest.approx(0.5, abs=1e-9)


def test_the_reference_flip_share_passes(capsys):
    check_flip_share(rater_bias.flip_share)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, says", [
    (lambda p_maj, p_min: 0.5, "not a majority vote"),
    (lambda p_maj, p_min: 1 - rater_bias.flip_share(p_maj, p_min) if rater_bias.flip_share(p_maj, p_min) is not None
     else None, "majority's share"),
    (lambda p_maj, p_min: min(1.0, max(0.0, (0.5 - p_maj) / (p_min - p_maj))), "return None"),
    (lambda p_maj, p_min: None, "does flip"),
    (lambda p_maj, p_min: (0.5 - p_min) / (p_maj - p_min) * 0.9 if p_maj != p_min else None, "crosses 1/2"),
])
def test_wrong_flip_shares_are_rejected_with_the_reason(wrong, says):
    with pytest.raises(AssertionError, match=says):
        check_flip_share(wrong)
