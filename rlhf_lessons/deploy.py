"""A deployed model and the feedback its users leave: the data a product collects for its next round of RLHF.

The model "ships" to simulated users. Each session is one user, drawn from the product's own mix of the gold rater's
populations (not the rater pool that trained the model), sending one request drawn with the product's own mix of
request kinds. The model replies, and the user does what users of real products mostly do, nothing, or sometimes:

    feels        satisfied = a noisy thumb (feedback.simulated_rating, the lesson 03 noise model), up or down
    rates        P(leaves feedback) = feedback_rate * (unhappy_factor if unhappy else 1), capped at 1, for the
                 users the product hears (`heard`: everyone, only unhappy users, or one population)
    compares     a user who rates is shown, with P = compare_rate, a second reply beside the first and picks one
                 (simulated_choice: the lesson 03 comparison), as chat products ask "which response do you prefer?"
    regenerates  an unhappy user who rates asks for another reply with P = regenerate_rate, and rates that one too
    corrects     an unhappy user who rates edits the reply instead with P = correction_rate: the edit is the reply of
                 the world's styles this user's population scores highest

Everything goes into a label store by the lesson 03 rules: thumbs as "rating" labels, one rater per user, so that two
replies to one request rated differently by one user become a pair (PreferenceStore.pairs); a choice between two
replies as a "comparison" (meta feedback="comparison"); a correction as a
"comparison" with the edited reply chosen over the original (meta feedback="correction"), and as a demonstration
(`corrections`). Only requests of the training split are sent: the yardstick's splits stay unseen.

Who gives feedback is the point: unhappy users rate more often, so the feedback over-represents what went wrong, and
a population that rates more is heard more. The summary shows both: each population's share of the traffic against
its share of the feedback, and the share of feedback that comes from unhappy sessions.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from . import gold, world
from .config_checks import AT_LEAST_ONE, FRACTION, SEED, Bounds, refuse_bad_settings, setting_problems
from .errors import ConfigError
from .feedback import simulated_rating

CORRECTION_STYLES = ("helpful", "terse", "refusal")  # what a user may rewrite a reply into
HEARD = ("everyone", "unhappy", *sorted(gold.POPULATIONS))  # DeployConfig.heard: who can leave feedback


@dataclass
class DeployConfig:
    sessions: int = 400  # user sessions: one request each
    users: str = "balanced:0.5,cautious:0.3,terse:0.2"  # the product's users: population:share, shares sum to 1
    kinds: str = "fact:0.4,open:0.3,alarming:0.15,harmful:0.1,greeting:0.05"  # the product's mix of requests
    feedback_rate: float = 0.1  # chance that a satisfied user leaves a thumb
    unhappy_factor: float = 4.0  # an unhappy user is this many times likelier to leave one
    regenerate_rate: float = 0.5  # chance that an unhappy user who rates asks for a second reply (and rates it)
    correction_rate: float = 0.2  # chance that an unhappy user who rates edits the reply instead
    compare_rate: float = 0.25  # chance that a user who rates (and does not correct) is asked to pick between two
    heard: str = "everyone"  # who can leave feedback at all: everyone, unhappy (users the reply let down), or one
    #                          population's users (a product that only asks, say, its cautious customers)
    max_new_tokens: int = 40
    seed: int = 0


DEPLOY_BOUNDS = {
    "sessions": AT_LEAST_ONE, "feedback_rate": FRACTION, "regenerate_rate": FRACTION, "correction_rate": FRACTION,
    "compare_rate": FRACTION,
    "unhappy_factor": Bounds(1, note="unhappy users rate at least as often as satisfied ones"),
    "max_new_tokens": AT_LEAST_ONE, "seed": SEED,
}


def parse_mix(text: str, allowed, what: str) -> dict[str, float]:
    """"balanced:0.5,cautious:0.5" -> {"balanced": 0.5, "cautious": 0.5}; shares must be >= 0 and sum to 1."""
    mix = {}
    for part in str(text).split(","):
        name, sep, share = part.strip().partition(":")
        if not sep or name not in allowed:
            raise ConfigError(f"{what} {text!r}: each entry is NAME:SHARE with NAME one of {', '.join(allowed)} "
                              f"(got {part.strip()!r})")
        try:
            mix[name] = float(share)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: the share of {name} must be a number (got {share!r})") from None
        if not 0 <= mix[name] <= 1:
            raise ConfigError(f"{what} {text!r}: the share of {name} must be from 0 to 1 (got {mix[name]})")
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise ConfigError(f"{what} {text!r}: the shares add up to {sum(mix.values()):g}, not 1")
    return mix


def check_deploy_config(cfg: DeployConfig) -> tuple[dict, dict]:
    """Refuse bad settings before any sampling; returns the parsed (users, kinds) mixes."""
    refuse_bad_settings("deploy", setting_problems(cfg, DEPLOY_BOUNDS))
    users = parse_mix(cfg.users, sorted(gold.POPULATIONS), "users")
    kinds = parse_mix(cfg.kinds, world.KIND_NAMES, "kinds")
    if cfg.heard not in HEARD:
        raise ConfigError(f"heard {cfg.heard!r}: who leaves feedback is one of {', '.join(HEARD)}")
    if cfg.heard in gold.POPULATIONS and users.get(cfg.heard, 0) == 0:
        raise ConfigError(f"heard {cfg.heard!r}: the product has no {cfg.heard} users ({cfg.users}), so nobody "
                          "would leave feedback; add them to users or hear another population")
    return users, kinds


def corrected_reply(request: world.Request, population: str, rng: random.Random) -> str:
    """The edit a user of `population` makes: of one reply in each CORRECTION_STYLES, the one they score highest."""
    candidates = [world.reply(request, style, rng) for style in CORRECTION_STYLES]
    return max(candidates, key=lambda text: gold.gold_score(request, text, population))


def _draw(mix: dict[str, float], rng: random.Random) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def deploy(model, cfg: DeployConfig | None = None, store=None, name: str = "deployment",
           first_replies: list[str] | None = None) -> dict:
    """Run `cfg.sessions` user sessions against `model` (a checkpoint name or folder, or a loaded (model, tokenizer)
    pair) and store the feedback in `store` (a PreferenceStore; None keeps it in memory only).

    first_replies: the model's replies to these sessions' requests when already sampled: a deployment with the same
    sessions, users, kinds and seed draws the same sessions, so another way of hearing the same traffic
    (round_two.FEEDBACK_VARIANTS) need not sample them again.

    Returns {"config", "sessions": [one dict per session], "labels": [the feedback, as add_many's dicts], "stored":
    how many labels were new to the store (None without one), "corrections": [(prompt, edited reply)],
    "summary": feedback_summary(...)}.
    """
    from .evaluate import loaded_policy
    from .sampling import sample_in_batches  # here, not at the top: the CLI reads DeployConfig without torch's weight

    cfg = cfg or DeployConfig()
    users, kinds = check_deploy_config(cfg)
    rng = random.Random(cfg.seed)
    pool = {kind: world.requests("train", kind) for kind in kinds if kinds[kind] > 0}
    sessions = []
    for i in range(cfg.sessions):
        kind = _draw({k: s for k, s in kinds.items() if k in pool}, rng)
        sessions.append({"user": f"user-{i:04d}", "population": _draw(users, rng), "request": rng.choice(pool[kind])})
    policy, tokenizer = loaded_policy(model)
    checkpoint = "(loaded model)" if isinstance(model, tuple) else str(model)
    if first_replies is not None and len(first_replies) != len(sessions):
        raise ValueError(f"{len(first_replies)} first replies for {len(sessions)} sessions")
    replies = first_replies if first_replies is not None else sample_in_batches(
        policy, tokenizer, [s["request"].prompt for s in sessions], seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)

    for session, reply in zip(sessions, replies, strict=True):
        request, population = session["request"], session["population"]
        thumb = simulated_rating(request, reply, rng, "thumbs", population)
        chance = min(1.0, cfg.feedback_rate * (cfg.unhappy_factor if thumb == 0 else 1.0))
        session.update(reply=reply, gold=gold.gold_score(request, reply, population), unhappy=thumb == 0,
                       feedback=None, thumbs=[])
        can_rate = cfg.heard == "everyone" or cfg.heard == population or (cfg.heard == "unhappy" and thumb == 0)
        if rng.random() >= chance or not can_rate:
            continue  # most users leave nothing
        edited = corrected_reply(request, population, rng) if thumb == 0 and rng.random() < cfg.correction_rate else None
        if edited is not None and edited != reply:  # an edit that changes nothing is no correction
            session.update(feedback="correction", edited=edited)
        elif rng.random() < cfg.compare_rate:
            session.update(feedback="comparison", compared=True)
        else:
            regenerated = thumb == 0 and rng.random() < cfg.regenerate_rate
            session.update(feedback="thumbs", thumbs=[thumb], regenerated=regenerated)

    again = [s for s in sessions if s.get("regenerated") or s.get("compared")]
    second = sample_in_batches(policy, tokenizer, [s["request"].prompt for s in again], seed=cfg.seed + 1,
                               max_new_tokens=cfg.max_new_tokens) if again else []
    for session, reply in zip(again, second, strict=True):
        session["second_reply"] = reply
        if session.get("compared"):
            session["choice"] = gold.simulated_choice(session["request"], session["reply"], reply, rng,
                                                      session["population"])
        else:
            session["thumbs"].append(simulated_rating(session["request"], reply, rng, "thumbs",
                                                      session["population"]))

    labels, corrections = [], []
    for s in sessions:
        common = {"request": s["request"].prompt, "rater": s["user"], "source": "simulated",
                  "population": s["population"], "checkpoint": checkpoint}
        if s["feedback"] == "correction":
            labels.append({**common, "kind": "comparison", "replies": [s["edited"], s["reply"]],
                           "label": {"choice": "A"}, "meta": {"feedback": "correction", "deployment": name}})
            corrections.append((s["request"].prompt, s["edited"]))
        if s["feedback"] == "comparison" and s["second_reply"] != s["reply"]:  # two equal replies say nothing
            labels.append({**common, "kind": "comparison", "replies": [s["reply"], s["second_reply"]],
                           "label": {"choice": "AB"[s["choice"]]}, "meta": {"feedback": "comparison",
                                                                             "deployment": name}})
        for reply, thumb in zip([s["reply"], s.get("second_reply")], s["thumbs"]):
            labels.append({**common, "kind": "rating", "replies": [reply], "label": {"score": thumb, "scale": "thumbs"},
                           "meta": {"feedback": "thumbs", "deployment": name}})
    stored = store.add_many(labels) if store is not None else None  # a repeated label (same reply, same thumb) once
    return {"config": asdict(cfg), "sessions": sessions, "labels": labels, "stored": stored,
            "corrections": corrections, "summary": feedback_summary(sessions, users)}


def feedback_summary(sessions: list[dict], users: dict[str, float]) -> dict:
    """Who used the product and who was heard: per population, its share of the sessions and of the feedback."""
    heard = [s for s in sessions if s["feedback"]]
    traffic, voices = Counter(s["population"] for s in sessions), Counter(s["population"] for s in heard)
    unhappy = [s for s in sessions if s["unhappy"]]
    return {
        "sessions": len(sessions),
        "with_feedback": len(heard),
        "feedback_rate": round(len(heard) / len(sessions), 4),
        "unhappy_share_of_sessions": round(len(unhappy) / len(sessions), 4),
        "unhappy_share_of_feedback": round(sum(s["unhappy"] for s in heard) / len(heard), 4) if heard else None,
        "thumbs": sum(len(s["thumbs"]) for s in sessions),
        "regenerated": sum(bool(s.get("regenerated")) for s in sessions),
        "corrections": sum(s["feedback"] == "correction" for s in sessions),
        "comparisons": sum(s["feedback"] == "comparison" for s in sessions),
        "by_population": {p: {"share_of_users": users[p], "share_of_sessions": round(traffic[p] / len(sessions), 4),
                              "share_of_feedback": round(voices[p] / len(heard), 4) if heard else None,
                              "mean_gold": (round(sum(s["gold"] for s in sessions if s["population"] == p)
                                                  / traffic[p], 4) if traffic[p] else None)}
                          for p in users},
    }


def corrections(store) -> list[tuple[str, str]]:
    """(prompt, edited reply) of every correction in `store`: demonstrations for another round of SFT."""
    return [(row["request"], row["replies"][0]) for row in store.labels(kind="comparison")
            if row["meta"].get("feedback") == "correction"]


def write_sessions(result: dict, path: str | Path) -> Path:
    """The sessions of a deploy() run as JSON lines (request, population, reply, feedback), for a learner to read."""
    import json

    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for s in result["sessions"]:
            f.write(json.dumps({**{k: v for k, v in s.items() if k != "request"}, "request": s["request"].prompt},
                               ensure_ascii=False) + "\n")
    return path
