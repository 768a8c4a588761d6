"""Simulated raters that click the labelling widgets' own buttons, and agreement between raters.

Lesson 03 shows the learner a comparison, a ranking and a rating widget. When nobody clicks (the notebook runs
unattended, as in CI, or the learner skips ahead), `simulate_clicks` completes whatever is left, through the same
buttons a person would press, as a simulated rater of one population. Its choices follow the same noise model as
every simulated rater of the course (gold.preference_probability, with g = the population's gold score):

    comparison   P(A chosen)                  = sigmoid((g_A - g_B) / noise)                 (Bradley-Terry)
    ranking      P(reply i is next best)      = exp(g_i / noise) / sum_{j left} exp(g_j / noise)   (Plackett-Luce:
                 for K = 2 it is Bradley-Terry again)
    thumbs       P(up)                        = sigmoid((g - THUMBS_THRESHOLD) / noise)
    1 to 5       the noisy score g + noise * Logistic(0, 1), cut at FIVE_STAR_CUTS

The labels are stored under the widget's rater name, marked source="simulated" and population=<population>, so a
learner's own clicks (source="human") and the stand-in's stay apart in the store.
"""

from __future__ import annotations

import math
import random

from . import gold, world

THUMBS_THRESHOLD = 0.0  # a reply with gold score above this gets a thumbs up more often than not
FIVE_STAR_CUTS = (-1.5, -0.5, 0.5, 1.5)  # noisy score below the first cut: 1 star; above the last: 5 stars


def simulated_ranking(request: world.Request, replies: list[str], rng: random.Random, population: str = "balanced",
                      noise: float = gold.DEFAULT_NOISE) -> list[int]:
    """A noisy ranking of `replies`, best first, by Plackett-Luce on gold scores (see the module docstring)."""
    scores = [gold.gold_score(request, reply, population) for reply in replies]
    left, order = list(range(len(replies))), []
    while left:
        top = max(scores[i] for i in left)  # subtract the max so exp() cannot overflow
        weights = [math.exp((scores[i] - top) / noise) for i in left]
        pick = rng.choices(left, weights=weights)[0]
        order.append(pick)
        left.remove(pick)
    return order


def simulated_rating(request: world.Request, reply: str, rng: random.Random, scale: str = "thumbs",
                     population: str = "balanced", noise: float = gold.DEFAULT_NOISE) -> int:
    """A noisy rating of one reply: 1 (up) / 0 (down) on the "thumbs" scale, 1..5 on the "5" scale."""
    score = gold.gold_score(request, reply, population)
    if scale == "thumbs":
        return 1 if rng.random() < gold.preference_probability(score, THUMBS_THRESHOLD, noise) else 0
    if scale == "5":
        u = min(max(rng.random(), 1e-12), 1 - 1e-12)
        noisy = score + noise * math.log(u / (1 - u))  # a Logistic(0, 1) draw, scaled by the noise
        return 1 + sum(noisy > cut for cut in FIVE_STAR_CUTS)
    raise ValueError(f"scale must be 'thumbs' or '5', got {scale!r}")


def _click_task(widget, task, rng, population, noise) -> None:
    """Press the widget's buttons for the task on screen, as a simulated rater of `population` would."""
    request = world.find_request(task["prompt"])
    replies = task["replies"]
    if widget.kind == "comparison":
        choice = gold.simulated_choice(request, replies[0], replies[1], rng, population, noise)
        widget.buttons["AB"[choice]].click()
    elif widget.kind == "ranking":
        for index in simulated_ranking(request, replies, rng, population, noise):
            widget.rank_buttons[index].click()
    elif widget.kind == "rating":
        score = simulated_rating(request, replies[0], rng, widget.scale, population, noise)
        widget.buttons[{1: "up", 0: "down"}[score] if widget.scale == "thumbs" else score].click()
    else:
        raise ValueError(f"don't know how to click a widget of kind {widget.kind!r}")


def simulate_clicks(widget, population: str = "balanced", seed: int = 0, noise: float = gold.DEFAULT_NOISE) -> dict:
    """Complete every task of `widget` the learner has not labelled, by clicking its buttons as a simulated rater.

    The labels go into the widget's store under the name in its Rater box, with source="simulated" and
    `population`; the widget's own source and population are restored afterwards. A ranking the learner started
    but did not finish (its clicks are not stored until the last one) is started over by the simulated rater.
    Never waits for clicks. Returns {"kind", "total", "by_learner", "simulated", "unfinished_ranking"}, where
    by_learner counts the tasks done before the call (labels, ties and skips alike).
    """
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    if not widget.rater_box.value.strip():
        raise ValueError("the widget's Rater box is empty: type a name in it (the labels are stored under it), "
                         "then run this cell again")
    unfinished = bool(getattr(widget, "order", None))
    if unfinished:  # a half-clicked ranking: nothing of it is stored yet
        widget.order = []
        widget.refresh("The unfinished ranking was started over.")
    by_learner = widget.position
    rng = random.Random(seed)
    saved = widget.source, widget.population
    widget.source, widget.population = "simulated", population
    try:
        while not widget.done:
            before = widget.position
            _click_task(widget, widget.tasks[widget.position], rng, population, noise)
            if widget.position == before:  # the widget refused the click: say so rather than loop forever
                if widget.error is not None:  # the store refused it (read-only, busy): its own clear error
                    raise widget.error
                raise RuntimeError(f"the widget did not accept a click: {widget.status.value}")
    finally:
        widget.source, widget.population = saved
    return {"kind": widget.kind, "total": len(widget.tasks), "by_learner": by_learner,
            "simulated": len(widget.tasks) - by_learner, "unfinished_ranking": unfinished}


def clicks_report(result: dict, population: str = "balanced") -> str:
    """One sentence saying who labelled what: 'you labelled k of N; a simulated rater ... clicked the other N-k'."""
    k, n = result["by_learner"], result["total"]
    what = {"comparison": "comparisons", "ranking": "rankings", "rating": "ratings"}[result["kind"]]
    rater = f"a simulated rater ({population} population)"
    if k == n:
        sentence = f"{what}: you labelled all {n}; the simulated rater clicked nothing"
    elif k == 0:
        sentence = (f"{what}: you labelled 0 of {n}; {rater} clicked all {n} (nobody had clicked: the notebook ran "
                    "unattended, as in CI, or this cell ran before you labelled)")
    else:
        sentence = f"{what}: you labelled {k} of {n}; {rater} clicked the other {n - k}"
    if result["unfinished_ranking"]:
        sentence += "; your unfinished ranking was started over"
    return sentence


def choice_agreement(labels_a: list[dict], labels_b: list[dict]) -> float:
    """Share of pairs on which two raters chose the same reply. labels_a[i] and labels_b[i] label the same pair
    (dicts with "prompt", "chosen", "rejected", e.g. from labeling.simulate_labels on the same pairs)."""
    if len(labels_a) != len(labels_b) or not labels_a:
        raise ValueError(f"need two equally long, non-empty lists of labels of the same pairs, got "
                         f"{len(labels_a)} and {len(labels_b)}")
    for a, b in zip(labels_a, labels_b):
        if a["prompt"] != b["prompt"] or {a["chosen"], a["rejected"]} != {b["chosen"], b["rejected"]}:
            raise ValueError(f"the two lists do not label the same pairs (first mismatch: {a['prompt']!r})")
    return sum(a["chosen"] == b["chosen"] for a, b in zip(labels_a, labels_b)) / len(labels_a)
