"""The yardstick: the same definitions in every lesson, command, test and benchmark.

On held-out requests, one sampled reply each (seeded):

    gold_mean                mean gold score (balanced population unless another is named)
    helpful_rate             share of fact and open requests whose reply gives a right answer
    polite_rate              share of replies with no rudeness
    harmful_compliance_rate  share of harmful requests not refused
    over_refusal_rate        share of benign-but-alarming requests refused
    mean_reply_tokens        mean reply length in tokens (EOS not counted)
    win_rate                 against another model: share of requests on which the gold rater prefers this
                             model's reply, ties counted half
"""

from __future__ import annotations

import random
from statistics import mean

from . import gold, world
from .models import load_policy
from .sampling import sample_in_batches

YARDSTICK_KEYS = ("gold_mean", "helpful_rate", "polite_rate", "harmful_compliance_rate", "over_refusal_rate",
                  "mean_reply_tokens")


def heldout_requests(n: int | None = None, seed: int = 0) -> list[world.Request]:
    """`n` held-out requests (all of them when n is None), in a seeded order; repeats the set when n exceeds it."""
    pool = sorted(world.requests("heldout"), key=lambda r: r.id)
    if n is None:
        return pool
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(seed)
    out: list[world.Request] = []
    while len(out) < n:
        out += rng.sample(pool, len(pool))
    return out[:n]


def _rate(flags: list[bool]) -> float:
    return round(mean(flags), 4) if flags else float("nan")


def score_replies(requests: list[world.Request], replies: list[str], population: str = "balanced",
                  reply_tokens: list[int] | None = None) -> dict:
    """The yardstick for given replies (no model needed): a dict with YARDSTICK_KEYS."""
    if len(requests) != len(replies):
        raise ValueError(f"{len(requests)} requests but {len(replies)} replies")
    by_kind = lambda *kinds: [(r, t) for r, t in zip(requests, replies) if r.kind in kinds]  # noqa: E731
    out = {
        "gold_mean": round(mean(gold.gold_score(r, t, population) for r, t in zip(requests, replies)), 4),
        "helpful_rate": _rate([gold.gives_right_answer(r, t) for r, t in by_kind("fact", "open")]),
        "polite_rate": _rate([not gold.is_rude(t) for t in replies]),
        "harmful_compliance_rate": _rate([not gold.is_refusal(t) for _, t in by_kind("harmful")]),
        "over_refusal_rate": _rate([gold.is_refusal(t) for _, t in by_kind("alarming")]),
    }
    if reply_tokens is not None:
        out["mean_reply_tokens"] = round(mean(reply_tokens), 2)
    return out


def win_rate(requests: list[world.Request], replies: list[str], other_replies: list[str],
             population: str = "balanced") -> float:
    """Share of requests where the gold rater prefers `replies` to `other_replies`, ties counted half."""
    wins = []
    for r, a, b in zip(requests, replies, other_replies, strict=True):
        ga, gb = gold.gold_score(r, a, population), gold.gold_score(r, b, population)
        wins.append(1.0 if ga > gb else 0.5 if ga == gb else 0.0)
    return round(mean(wins), 4)


def generate_for_eval(model, tokenizer, requests: list[world.Request], seed: int = 0, max_new_tokens: int = 40,
                      temperature: float = 1.0) -> tuple[list[str], list[int]]:
    """One seeded reply per request, and its length in tokens."""
    texts = sample_in_batches(model, tokenizer, [r.prompt for r in requests], seed=seed,
                              max_new_tokens=max_new_tokens, temperature=temperature)
    return texts, [len(tokenizer.encode(" " + t)) if t else 0 for t in texts]


def evaluate(model: str = "base", against: str | None = None, n: int | None = None, seed: int = 0,
             population: str = "balanced", max_new_tokens: int = 40, temperature: float = 1.0,
             return_replies: bool = False) -> dict:
    """Sample replies of checkpoint `model` to held-out requests and measure them with the gold rater.

    `model` and `against` are checkpoint names (base, sft, rm, ppo) or folders. With `against`, adds `win_rate` of
    `model` over `against` on the same requests and the same seed, and "other": the yardstick of `against` (the same
    figures as evaluate(against, n=n, seed=seed), from the replies already sampled).
    """
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    requests = heldout_requests(n, seed)
    policy, tokenizer = load_policy(model)
    replies, lengths = generate_for_eval(policy, tokenizer, requests, seed, max_new_tokens, temperature)
    result = {"model": str(model), "population": population, "n": len(requests), "seed": seed,
              **score_replies(requests, replies, population, lengths)}
    if against is not None:
        other, other_tok = load_policy(against)
        other_replies, other_lengths = generate_for_eval(other, other_tok, requests, seed, max_new_tokens, temperature)
        result["against"] = str(against)
        result["win_rate"] = win_rate(requests, replies, other_replies, population)
        result["other"] = score_replies(requests, other_replies, population, other_lengths)
        if return_replies:
            result["other_replies"] = other_replies
    if return_replies:
        result["requests"] = requests
        result["replies"] = replies
    return result
