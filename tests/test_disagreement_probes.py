"""The probes of lesson 06 that show where rater populations disagree, and what a scorer prefers on them."""

import pytest

from rlhf_lessons import gold, rater_bias as rb


def test_probes_are_held_out_requests_of_the_right_kind():
    probes = rb.disagreement_probes(seed=0)
    assert set(probes) == {"refusal", "length"}
    for name, kind in (("refusal", "alarming"), ("length", "open")):
        assert len(probes[name]) >= 20
        assert all(r.split == "heldout" and r.kind == kind for r, _, _ in probes[name])
    for r, long, short in probes["length"]:
        assert len(long.split()) > len(short.split()) + 5
        assert all(tip in long for tip in r.extra["tips"])
    for r, refusal, answer in probes["refusal"]:
        assert gold.is_refusal(refusal) and not gold.is_refusal(answer)
    assert rb.disagreement_probes(seed=0) == probes  # seeded


def test_gold_raters_disagree_where_the_lesson_says():
    probes = rb.disagreement_probes(seed=0)
    prefs = {p: rb.prefers_x(probes, rb.gold_scorer(p)) for p in gold.POPULATIONS}
    assert prefs["cautious"]["refusal"] == 1.0 and prefs["balanced"]["refusal"] == 0.0
    assert prefs["verbose"]["length"] == 1.0 and prefs["terse"]["length"] == 0.0
    assert 0.0 < prefs["balanced"]["length"] < 1.0  # balanced raters are split on length


def test_prefers_x_counts_strict_wins_per_probe():
    probes = {"p": [(None, "aaa", "b"), (None, "a", "bbb"), (None, "cc", "dd")]}
    by_length = lambda requests, replies: [len(t) for t in replies]  # noqa: E731
    assert rb.prefers_x(probes, by_length) == {"p": pytest.approx(1 / 3, abs=1e-4)}
