"""Lesson 03's exercise check accepts correct answers and rejects the classic mistakes, each with its own message."""

import itertools

import pytest

from rlhf_lessons import exercises
from rlhf_lessons.store import ranking_pairs


def test_accepts_the_reference(capsys):
    exercises.check_ranking_pairs(ranking_pairs)
    assert "correct" in capsys.readouterr().out


def test_accepts_other_correct_answers():
    def loops(order):  # same pairs, listed loser-major and as lists
        return [[order[i], order[j]] for j in range(len(order)) for i in range(j)]

    def by_position(order):
        place = {reply: i for i, reply in enumerate(order)}
        return [(a, b) for a, b in itertools.permutations(order, 2) if place[a] < place[b]]

    exercises.check_ranking_pairs(loops)
    exercises.check_ranking_pairs(by_position)
    exercises.check_ranking_pairs(lambda order: iter(ranking_pairs(order)))  # any iterable of pairs


@pytest.mark.parametrize("wrong, message", [
    (lambda o: list(zip(o, o[1:])), "only neighbours"),
    (lambda o: [(b, a) for a, b in ranking_pairs(o)], "loser, winner"),
    (lambda o: ranking_pairs(o) + ranking_pairs(o)[:1], "appears 2 times"),
    (lambda o: [(o[i], o[j]) for i in range(len(o)) for j in range(i, len(o))], "with itself"),
    (lambda o: list(itertools.permutations(o, 2)), "both"),
    (lambda o: list(itertools.combinations(range(len(o)), 2)), "places"),
    (lambda o: ranking_pairs(o)[:-1], "pairs; for"),
    (lambda o: [(o[0], x) for x in o[1:]], "pairs; for"),  # only the winner's pairs
    (lambda o: None, "return a list of"),
    (lambda o: [o[0]] if o else [], "pair of two"),
    (lambda o: [(str(a), str(b)) for a, b in ranking_pairs(o)], "pair of two"),
])
def test_rejects_classic_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_ranking_pairs(wrong)


def test_rejects_a_same_length_wrong_answer():
    def swapped_one(order):
        pairs = ranking_pairs(order)
        if len(pairs) > 3:
            a, b = pairs[3]
            pairs[3] = (a, a + 100)
        return pairs

    with pytest.raises(AssertionError, match="missing"):
        exercises.check_ranking_pairs(swapped_one)
