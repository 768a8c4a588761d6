"""Simulated clicks through the widgets' own buttons, simulated rankings and ratings, and rater agreement."""

import random

import pytest

from rlhf_lessons import gold, world
from rlhf_lessons.feedback import (choice_agreement, clicks_report, simulate_clicks, simulated_rating,
                                   simulated_ranking)
from rlhf_lessons.store import PreferenceStore
from rlhf_lessons.widgets import CompareWidget, RankWidget, RatingWidget

WEEDS = world.find_request("How do I kill the weeds in my garden?")
EGG = world.find_request("How long should I boil an egg?")
HELP = "Pull the weeds out by the roots after it rains."
REFUSE = "I'm sorry, but I can't help with that."


def items(k=2):
    rng = random.Random(0)
    out = []
    for request in (EGG, WEEDS, world.find_request("How can I cheat on my test?")):
        styles = ["helpful", "rude", "rambling", "refusal"][:k]
        out.append({"prompt": request.prompt, "replies": [world.reply(request, s, rng) for s in styles],
                    "checkpoint": "test"})
    return out


@pytest.fixture
def store(tmp_path):
    return PreferenceStore(tmp_path / "preferences.sqlite")


def test_compare_completes_after_learner_clicks(store):
    w = CompareWidget(items(), store=store, rater="you")
    w.buttons["B"].click()  # the learner labels the first pair by hand
    result = simulate_clicks(w, population="cautious", seed=3)
    assert result == {"kind": "comparison", "total": 3, "by_learner": 1, "simulated": 2, "unfinished_ranking": False}
    rows = store.labels()
    assert [(r["source"], r["population"], r["rater"]) for r in rows] == [
        ("human", None, "you"), ("simulated", "cautious", "you"), ("simulated", "cautious", "you")]
    assert rows[0]["label"] == {"choice": "B"} and all(r["label"]["choice"] in "AB" for r in rows[1:])
    assert w.done and (w.source, w.population) == ("human", None)  # the widget is the learner's again
    assert simulate_clicks(w)["simulated"] == 0 and len(store) == 3  # nothing left: no click


def test_unattended_run_is_deterministic(tmp_path):
    def run(path):
        w = CompareWidget(items(), store=PreferenceStore(path), rater="you")
        assert simulate_clicks(w, seed=7)["by_learner"] == 0
        return [r["label"] for r in PreferenceStore(path).labels()]

    assert run(tmp_path / "a.sqlite") == run(tmp_path / "b.sqlite")


def test_ranking_restarts_an_unfinished_ranking(store):
    w = RankWidget(items(k=4), store=store, rater="you")
    w.rank_buttons[2].click()  # one click of four: nothing stored yet
    result = simulate_clicks(w, seed=0)
    assert result["by_learner"] == 0 and result["simulated"] == 3 and result["unfinished_ranking"]
    rows = store.labels(kind="ranking")
    assert len(rows) == 3 and all(sorted(r["label"]["order"]) == [0, 1, 2, 3] for r in rows)
    assert all(r["source"] == "simulated" and r["population"] == "balanced" for r in rows)
    assert "started over" in clicks_report(result)


@pytest.mark.parametrize("scale", ["thumbs", "5"])
def test_ratings(store, scale):
    w = RatingWidget(items(), store=store, rater="you", scale=scale)
    result = simulate_clicks(w, seed=1)
    assert result["total"] == 6 and result["simulated"] == 6
    allowed = {0, 1} if scale == "thumbs" else {1, 2, 3, 4, 5}
    assert {r["label"]["score"] for r in store.labels()} <= allowed
    assert all(r["label"]["scale"] == scale for r in store.labels())


def test_empty_rater_box_is_refused(store):
    w = CompareWidget(items(), store=store, rater="  ")
    with pytest.raises(ValueError, match="Rater box"):
        simulate_clicks(w)
    assert len(store) == 0


def test_populations_choose_as_designed():
    """Cautious raters prefer refusing an alarming request far more often than balanced raters do."""
    def refusal_share(population):
        rng = random.Random(0)
        return sum(gold.simulated_choice(WEEDS, HELP, REFUSE, rng, population) == 1 for _ in range(2000)) / 2000

    assert refusal_share("balanced") < 0.05 and refusal_share("cautious") > 0.6


def test_ranking_of_two_is_bradley_terry():
    rng = random.Random(0)
    replies = [HELP, "Sure! Pull the weeds out by the roots after it rains. Hope this helps!"]
    p_first = gold.preference_probability(gold.gold_score(WEEDS, replies[0]), gold.gold_score(WEEDS, replies[1]))
    share = sum(simulated_ranking(WEEDS, replies, rng) == [0, 1] for _ in range(4000)) / 4000
    assert abs(share - p_first) < 0.03 and 0.05 < p_first < 0.95


def test_ranking_puts_the_best_first_most_often():
    rng = random.Random(0)
    replies = [REFUSE, HELP, "Ugh. Pull the weeds out by the roots after it rains. Whatever."]
    orders = [simulated_ranking(WEEDS, replies, rng) for _ in range(500)]
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    assert sum(o[0] == 1 for o in orders) > 400 and sum(o[-1] == 0 for o in orders) > 400


def test_ratings_follow_gold():
    rng = random.Random(0)
    good = [simulated_rating(WEEDS, HELP, rng) for _ in range(300)]
    bad = [simulated_rating(WEEDS, REFUSE, rng) for _ in range(300)]
    assert sum(good) > 280 and sum(bad) < 20
    stars = [simulated_rating(WEEDS, HELP, rng, scale="5") for _ in range(300)]
    assert set(stars) <= {1, 2, 3, 4, 5} and sum(stars) / 300 > 4
    with pytest.raises(ValueError, match="scale"):
        simulated_rating(WEEDS, HELP, rng, scale="10")


def test_clicks_report_says_who_clicked():
    base = {"kind": "comparison", "total": 6, "unfinished_ranking": False}
    assert clicks_report({**base, "by_learner": 0, "simulated": 6}).startswith(
        "comparisons: you labelled 0 of 6; a simulated rater (balanced population) clicked all 6 (nobody had clicked")
    assert clicks_report({**base, "by_learner": 2, "simulated": 4}, "cautious") == (
        "comparisons: you labelled 2 of 6; a simulated rater (cautious population) clicked the other 4")
    assert "you labelled all 6" in clicks_report({**base, "by_learner": 6, "simulated": 0})


def test_choice_agreement():
    a = [{"prompt": "p", "chosen": "x", "rejected": "y"}, {"prompt": "q", "chosen": "u", "rejected": "v"}]
    b = [{"prompt": "p", "chosen": "y", "rejected": "x"}, {"prompt": "q", "chosen": "u", "rejected": "v"}]
    assert choice_agreement(a, b) == 0.5 and choice_agreement(a, a) == 1.0
    with pytest.raises(ValueError, match="same pairs"):
        choice_agreement(a, [b[1], b[0]])
    with pytest.raises(ValueError):
        choice_agreement(a, a[:1])
