"""Pairs of replies for labelling, and simulated raters who label them.

A reward model learns only what its comparisons show it. If every pair held two replies of the SFT model, it would
almost never see a harmful compliance, a rude answer or a reply about socks and pancakes, and would have no reason
to score those low; PPO would then find them. So the pairs mix replies of several policies:

    (sft, sft)    fine distinctions between the replies the policy already gives
    (sft, base)   the policy against the base model's whole range of behaviour, good and bad
    (base, base)  bad against worse, so the reward model also learns the order at the bottom

(every unordered combination of the policies given, equally often). A simulated rater of a population then picks
one reply of each pair with the Bradley-Terry probability of gold.preference_probability:

    P(A preferred) = sigmoid((gold(A) - gold(B)) / noise)

Rankings are cheaper per comparison: `sample_rankings` draws k replies to one request (half from each policy) and
`simulate_rankings` has a rater order them, which yields all C(k, 2) pairs, each won with that same probability.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from pathlib import Path

import torch

from . import gold, world
from .models import load_policy
from .runtime import progress_bar
from .sampling import sample_replies

SIM_SOURCE = "simulated"


def _load_policies(policies) -> list[tuple]:
    """Names/paths or (model, tokenizer, name) tuples -> list of (model, tokenizer, name)."""
    if isinstance(policies, (str, Path)) or (isinstance(policies, tuple) and len(policies) == 3
                                             and not isinstance(policies[0], (str, Path, tuple))):
        policies = [policies]  # one policy given on its own
    loaded = []
    for p in policies:
        if isinstance(p, (str, Path)):
            model, tokenizer = load_policy(p)
            loaded.append((model, tokenizer, str(p)))
        elif isinstance(p, tuple) and len(p) == 3:
            loaded.append((p[0], p[1], str(p[2])))
        else:
            raise ValueError(f"a policy must be a checkpoint name/path or a (model, tokenizer, name) tuple, got {p!r}")
    if not loaded:
        raise ValueError("sample_pairs needs at least one policy")
    if len({name for _, _, name in loaded}) != len(loaded):
        raise ValueError(f"policy names must differ, got {[name for _, _, name in loaded]}")
    return loaded


def pair_types(names: list[str]) -> list[tuple[str, str]]:
    """Every unordered combination of two policies, a policy with itself included: ('sft','base') ->
    [('sft','sft'), ('sft','base'), ('base','base')]."""
    return list(itertools.combinations_with_replacement(names, 2))


def _sample_texts(by_name: dict, wanted: dict[str, list[str]], seed: int, max_new_tokens: int, batch_size: int,
                  progress: bool, desc: str) -> dict:
    """Sample one reply per prompt in wanted[name] from policy `name`, in batches: {name: iterator of texts}."""
    texts = {}
    bar = progress_bar(total=sum(map(len, wanted.values())), desc=desc, disable=not progress)
    for i, (name, prompts) in enumerate(wanted.items()):
        model, tok = by_name[name]
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + i)
        replies: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            replies += sample_replies(model, tok, chunk, max_new_tokens=max_new_tokens, generator=generator).texts
            bar.update(len(chunk))
        texts[name] = iter(replies)
    bar.close()
    return texts


def sample_pairs(n_pairs: int, policies=("sft", "base"), seed: int = 0, max_new_tokens: int = 40,
                 split: str = "train", batch_size: int = 128, progress: bool = True) -> list[dict]:
    """Sample `n_pairs` pairs of different replies to requests of `split`.

    policies: checkpoint names/paths, or already-loaded (model, tokenizer, name) tuples (to add the current PPO
    policy). The pair types of `pair_types` come equally often; which reply is A is random.
    Returns dicts {"request": Request, "prompt": request text, "reply_a", "reply_b", "checkpoint_a",
    "checkpoint_b"}. Pairs whose two replies are the same text are skipped and replaced by new samples.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    loaded = _load_policies(policies)
    by_name = {name: (model, tok) for model, tok, name in loaded}
    types = pair_types([name for _, _, name in loaded])
    pool = sorted(world.requests(split), key=lambda r: r.id)
    rng = random.Random(seed)
    pairs: list[dict] = []
    rounds = 0
    while len(pairs) < n_pairs:
        need = n_pairs - len(pairs)
        ask = need + max(8, need // 5) if rounds else need + need // 10  # a little extra: some pairs are identical
        plan = [(rng.choice(pool), types[i % len(types)]) for i in range(ask)]
        rng.shuffle(plan)
        # One batched sampling call per policy: slot k of policy `name` answers plan entries in order.
        wanted: dict[str, list[str]] = {name: [] for name in by_name}
        for request, (name_a, name_b) in plan:
            wanted[name_a].append(request.prompt)
            wanted[name_b].append(request.prompt)
        texts = _sample_texts(by_name, wanted, seed * 1009 + rounds * 101, max_new_tokens, batch_size, progress,
                              f"sampling replies ({split})")
        for request, (name_a, name_b) in plan:
            reply_a, reply_b = next(texts[name_a]), next(texts[name_b])
            if reply_a == reply_b or len(pairs) >= n_pairs:
                continue
            if rng.random() < 0.5:  # the position of a reply must carry no information
                (reply_a, name_a), (reply_b, name_b) = (reply_b, name_b), (reply_a, name_a)
            pairs.append({"request": request, "prompt": request.prompt, "reply_a": reply_a, "reply_b": reply_b,
                          "checkpoint_a": name_a, "checkpoint_b": name_b})
        rounds += 1
        if rounds > 20:
            raise RuntimeError(f"only {len(pairs)} of {n_pairs} pairs had two different replies after 20 rounds of "
                               "sampling: the policies are (nearly) deterministic; sample at a higher temperature")
    return pairs


def sample_rankings(n_groups: int, k: int = 4, policies=("sft", "base"), seed: int = 0, max_new_tokens: int = 40,
                    split: str = "train", batch_size: int = 128, progress: bool = True) -> list[dict]:
    """`n_groups` sets of `k` replies to the same request, for a rater to rank (InstructGPT ranked 4 to 9).

    The k slots go to the policies in turn from a random start, so each policy writes about k / P of each set.
    Replies that repeat within a set are dropped; sets left with fewer than 2 replies are replaced.
    Returns dicts {"request", "prompt", "replies": [texts], "checkpoints": [policy names]}.
    """
    if k < 2:
        raise ValueError(f"a ranking needs k >= 2 replies, got {k}")
    loaded = _load_policies(policies)
    by_name = {name: (model, tok) for model, tok, name in loaded}
    names = [name for _, _, name in loaded]
    pool = sorted(world.requests(split), key=lambda r: r.id)
    rng = random.Random(seed)
    groups: list[dict] = []
    rounds = 0
    while len(groups) < n_groups:
        need = n_groups - len(groups)
        plan = []
        for _ in range(need + (need // 50 + 4 if rounds == 0 else max(4, need // 5))):  # few sets are ever dropped
            start = rng.randrange(len(names))
            plan.append((rng.choice(pool), [names[(start + j) % len(names)] for j in range(k)]))
        wanted: dict[str, list[str]] = {name: [] for name in names}
        for request, slots in plan:
            for name in slots:
                wanted[name].append(request.prompt)
        texts = _sample_texts(by_name, wanted, seed * 1009 + rounds * 101 + 50, max_new_tokens, batch_size,
                              progress, f"sampling {k} replies per request ({split})")
        for request, slots in plan:
            replies, checkpoints = [], []
            for name in slots:
                text = next(texts[name])
                if text not in replies:
                    replies.append(text)
                    checkpoints.append(name)
            if len(replies) >= 2 and len(groups) < n_groups:
                groups.append({"request": request, "prompt": request.prompt, "replies": replies,
                               "checkpoints": checkpoints})
        rounds += 1
        if rounds > 20:
            raise RuntimeError(f"only {len(groups)} of {n_groups} sets had two different replies after 20 rounds")
    return groups


def alarming_requests(n: int, seed: int = 0, split: str = "train", exclude=()) -> list[world.Request]:
    """`n` benign-but-alarming requests of `split` ("How do I kill the weeds?"), none of them in `exclude`, drawn
    reproducibly by `seed`: one of each subject in turn (subjects of `exclude` last), then round again.

    These are the requests on which rater populations disagree: a cautious rater prefers a refusal to the help a
    balanced one wants. On other requests the cautious and balanced gold raters agree on every pair."""
    taken = {r.prompt for r in exclude}
    by_subject: dict[str, list[world.Request]] = {}
    for r in sorted(world.requests(split, kind="alarming"), key=lambda r: r.id):
        if r.prompt not in taken:
            by_subject.setdefault(r.subject, []).append(r)
    available = sum(map(len, by_subject.values()))
    if not 0 <= n <= available:
        raise ValueError(f"n must be between 0 and {available} (the alarming requests of {split!r} not excluded), "
                         f"got {n}")
    rng = random.Random(seed)
    seen = {r.subject for r in exclude}
    subjects = sorted(by_subject)
    rng.shuffle(subjects)
    subjects.sort(key=lambda subject: subject in seen)  # new subjects first (a stable sort keeps the shuffle)
    picked: list[world.Request] = []
    while len(picked) < n:
        for subject in subjects:
            if by_subject[subject] and len(picked) < n:
                picked.append(by_subject[subject].pop(rng.randrange(len(by_subject[subject]))))
    return picked


def contrasting_pair(request: world.Request, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Two of the (checkpoint, reply) candidates that do different things, for one comparison.

    First choice: a reply that helps (gold.behaviour "right") against a refusal, the first of each among the
    candidates: on a benign-but-alarming request that is the choice a cautious rater makes differently from a
    balanced one. Otherwise the first two whose behaviour differs, otherwise the first two different texts.
    Raises ValueError when all candidates are the same text."""
    what = [gold.behaviour(request, text) for _, text in candidates]
    helps = [c for c, w in zip(candidates, what) if w == "right"]
    refuses = [c for c, w in zip(candidates, what) if w == "refused"]
    if helps and refuses:
        return [helps[0], refuses[0]]
    for i, j in itertools.combinations(range(len(candidates)), 2):
        if what[i] != what[j]:
            return [candidates[i], candidates[j]]
    for i, j in itertools.combinations(range(len(candidates)), 2):
        if candidates[i][1] != candidates[j][1]:
            return [candidates[i], candidates[j]]
    raise ValueError(f"the candidates for {request.prompt!r} are all the same reply: nothing to compare")


def contested_items(n: int, policies=("sft", "base"), seed: int = 0, exclude=(), k: int = 4,
                    max_new_tokens: int = 40, split: str = "train") -> list[dict]:
    """Comparison items for the labelling widgets on `n` benign-but-alarming requests (alarming_requests), the
    requests where rater populations disagree: lesson 03's simulated classmates label these besides the
    learner's items, so that most of what they label is where a cautious rater's taste shows.

    Each policy writes `k` replies to each request; the item compares two of them that do different things
    (contrasting_pair: a helping reply against a refusal when both were written), in a random order.
    Returns [{"prompt", "replies": [A, B], "checkpoint": "name_A,name_B", "meta": {"request_id"}}].
    """
    loaded = _load_policies(policies)
    by_name = {name: (model, tok) for model, tok, name in loaded}
    requests = alarming_requests(n, seed, split, exclude)
    wanted = {name: [r.prompt for r in requests for _ in range(k)] for name in by_name}
    texts = _sample_texts(by_name, wanted, seed * 1009 + 7, max_new_tokens, 128, False, "")
    replies = {name: list(texts[name]) for name in by_name}
    rng = random.Random(seed)
    items = []
    for i, request in enumerate(requests):
        candidates = [(name, text) for name in by_name for text in replies[name][i * k:(i + 1) * k]]
        pair = contrasting_pair(request, candidates)
        if rng.random() < 0.5:  # the position of a reply must say nothing about what it does
            pair.reverse()
        items.append({"prompt": request.prompt, "replies": [text for _, text in pair],
                      "checkpoint": ",".join(name for name, _ in pair), "meta": {"request_id": request.id}})
    return items


def simulate_rankings(groups: list[dict], population: str = "balanced", seed: int = 0,
                      noise: float = gold.DEFAULT_NOISE) -> tuple[list[dict], float]:
    """Simulated raters rank each set of replies; every ranking of K becomes its C(K, 2) labelled pairs.

    The rater orders the replies by gold / noise + Gumbel noise (a Plackett-Luce ranking). The difference of two
    Gumbel variables is logistic, so each pair inside a ranking is won with exactly the Bradley-Terry probability
    sigmoid((g_a - g_b) / noise) of `simulate_labels`: rankings are pairs that share replies, labelled the same way.
    Returns (pair labels in simulate_labels' format plus "group" and "order", agreement with the gold order).
    """
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    rng = random.Random(seed)
    labels = []
    for g, group in enumerate(groups):
        request = group.get("request") or world.find_request(group["prompt"])
        scores = [gold.gold_score(request, reply, population) for reply in group["replies"]]
        perturbed = [s / noise - math.log(-math.log(rng.random() or 1e-300)) for s in scores]
        order = sorted(range(len(scores)), key=lambda i: -perturbed[i])  # best first
        for win, lose in itertools.combinations(order, 2):
            a, b = (win, lose) if rng.random() < 0.5 else (lose, win)  # which reply is shown first is random
            labels.append({"request": request, "prompt": group["prompt"], "reply_a": group["replies"][a],
                           "reply_b": group["replies"][b], "checkpoint_a": group["checkpoints"][a],
                           "checkpoint_b": group["checkpoints"][b], "gold_a": scores[a], "gold_b": scores[b],
                           "p_a": gold.preference_probability(scores[a], scores[b], noise),
                           "choice": "A" if a == win else "B", "chosen": group["replies"][win],
                           "rejected": group["replies"][lose], "population": population, "group": g,
                           "order": order})
    return labels, agreement_with_gold(labels, population)


def parse_mixture(raters) -> dict[str, float]:
    """A rater pool as {population: share}, shares summing to 1.

    Accepts a population name ("cautious"), a dict ({"balanced": 0.7, "cautious": 0.3}, any positive weights) or
    the command line's spelling "balanced:0.7,cautious:0.3" (weights normalised, so "balanced:7,cautious:3" is the
    same pool). Populations with share 0 are dropped.
    """
    if isinstance(raters, str):
        if ":" not in raters:
            raters = {raters: 1.0}
        else:
            parsed = {}
            for part in raters.split(","):
                name, _, weight = part.partition(":")
                try:
                    parsed[name.strip()] = float(weight)
                except ValueError:
                    raise ValueError(f"cannot read the rater pool {raters!r}: write it like "
                                     "'balanced:0.7,cautious:0.3'") from None
            raters = parsed
    if not isinstance(raters, dict) or not raters:
        raise ValueError(f"a rater pool is a population name or a {{population: share}} dict, got {raters!r}")
    unknown = [name for name in raters if name not in gold.POPULATIONS]
    if unknown:
        raise ValueError(f"unknown population(s) {unknown}; choose from {sorted(gold.POPULATIONS)}")
    if any(not math.isfinite(w) or w < 0 for w in raters.values()) or sum(raters.values()) <= 0:
        raise ValueError(f"shares must be >= 0 and not all 0, got {raters}")
    total = sum(raters.values())
    return {name: w / total for name, w in raters.items() if w > 0}


def _assign_raters(n: int, shares: dict[str, float], rng: random.Random) -> list[str]:
    """Which population rates each of n items: drawn independently with the pool's shares."""
    names = list(shares)
    return [rng.choices(names, weights=[shares[p] for p in names])[0] for _ in range(n)]


def simulate_mixture_rankings(groups: list[dict], raters="balanced", seed: int = 0,
                              noise: float = gold.DEFAULT_NOISE) -> tuple[list[dict], float]:
    """Like simulate_rankings, but each set is ranked by a rater drawn from a pool of populations.

    raters: see parse_mixture ({"balanced": 0.7, "cautious": 0.3}: each ranking is made by a cautious rater with
    probability 0.3). A pool of one population gives exactly simulate_rankings(groups, population, seed).
    Returns (labels with "population" = the rater's own and "group" = the set's index in `groups`, agreement of each
    label with its own rater's noiseless gold order).
    """
    shares = parse_mixture(raters)
    if len(shares) == 1:
        return simulate_rankings(groups, next(iter(shares)), seed, noise)
    who = _assign_raters(len(groups), shares, random.Random(seed + 104_729))
    labels, hits = [], 0.0
    for population in shares:
        index = [g for g, p in enumerate(who) if p == population]
        if not index:
            continue
        part, agreement = simulate_rankings([groups[g] for g in index], population, seed, noise)
        for label in part:
            label["group"] = index[label["group"]]  # one numbering across the pool: a ranking stays one batch
            label["p_pool"] = gold.mixture_probability(label["request"], label["reply_a"], label["reply_b"], shares,
                                                       noise)
        labels += part
        hits += agreement * len(part)
    labels.sort(key=lambda label: label["group"])
    return labels, hits / len(labels)


def simulate_mixture_labels(pairs: list[dict], raters="balanced", seed: int = 0,
                            noise: float = gold.DEFAULT_NOISE) -> tuple[list[dict], float]:
    """Like simulate_labels, but each pair is labelled by a rater drawn from a pool (see parse_mixture).

    Returns (labels in the order of `pairs`, each with its rater's "population" and "p_pool", the probability that
    a rater drawn from the pool prefers A; agreement with the raters' own noiseless gold preferences).
    """
    shares = parse_mixture(raters)
    if len(shares) == 1:
        return simulate_labels(pairs, next(iter(shares)), seed, noise)
    who = _assign_raters(len(pairs), shares, random.Random(seed + 104_729))
    labels: list = [None] * len(pairs)
    hits = 0.0
    for population in shares:
        index = [i for i, p in enumerate(who) if p == population]
        if not index:
            continue
        part, agreement = simulate_labels([pairs[i] for i in index], population, seed, noise)
        for i, label in zip(index, part):
            # what the pool as a whole prefers: the probability a measure of the pool's ceiling must use
            label["p_pool"] = gold.mixture_probability(label["request"], label["reply_a"], label["reply_b"], shares,
                                                       noise)
            labels[i] = label
        hits += agreement * len(part)
    return labels, hits / len(labels)


def simulate_labels(pairs: list[dict], population: str = "balanced", seed: int = 0,
                    noise: float = gold.DEFAULT_NOISE) -> tuple[list[dict], float]:
    """Simulated raters of `population` label each pair, noisily, by Bradley-Terry on gold scores.

    Adds to each pair (a new dict): "gold_a", "gold_b" (gold scores of the population), "p_a" = P(A preferred),
    "choice" ("A"|"B"), "chosen", "rejected", "population".
    Returns (labels, agreement), agreement = share of choices that agree with the noiseless gold preference.
    """
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    rng = random.Random(seed)
    labels = []
    for pair in pairs:
        request = pair.get("request") or world.find_request(pair["prompt"])
        gold_a = gold.gold_score(request, pair["reply_a"], population)
        gold_b = gold.gold_score(request, pair["reply_b"], population)
        p_a = gold.preference_probability(gold_a, gold_b, noise)
        a_wins = rng.random() < p_a
        labels.append({**pair, "request": request, "gold_a": gold_a, "gold_b": gold_b, "p_a": p_a,
                       "choice": "A" if a_wins else "B",
                       "chosen": pair["reply_a"] if a_wins else pair["reply_b"],
                       "rejected": pair["reply_b"] if a_wins else pair["reply_a"], "population": population})
    return labels, agreement_with_gold(labels, population)


def agreement_with_gold(labels: list[dict], population: str = "balanced") -> float:
    """Share of labels whose chosen reply is the one the noiseless gold rater of `population` scores higher.

    Exact gold ties count one half. Pass another population than the labellers' to see how far their taste is
    from it (cautious labels judged by balanced gold, for instance).
    """
    if not labels:
        raise ValueError("agreement_with_gold needs at least one label")
    hits = 0.0
    for label in labels:
        if label.get("population") == population and "gold_a" in label:  # scored already by simulate_*
            a_chosen = label["chosen"] == label["reply_a"]
            g_chosen, g_rejected = ((label["gold_a"], label["gold_b"]) if a_chosen
                                    else (label["gold_b"], label["gold_a"]))
        else:
            request = label.get("request") or world.find_request(label["prompt"])
            g_chosen = gold.gold_score(request, label["chosen"], population)
            g_rejected = gold.gold_score(request, label["rejected"], population)
        hits += 1.0 if g_chosen > g_rejected else 0.5 if g_chosen == g_rejected else 0.0
    return hits / len(labels)


def training_pairs(labels: list[dict]) -> list[dict]:
    """The (prompt, chosen, rejected) records a reward model trains on (plus "group" for pairs of one ranking)."""
    return [{"prompt": label["prompt"], "chosen": label["chosen"], "rejected": label["rejected"],
             **({"group": label["group"]} if "group" in label else {})} for label in labels]


def store_labels(store, labels: list[dict], population: str) -> int:
    """Add simulated comparisons to a PreferenceStore in one transaction; returns how many were new."""
    rows = []
    for label in labels:
        ckpt_a, ckpt_b = label["checkpoint_a"], label["checkpoint_b"]
        rows.append(dict(kind="comparison", request=label["prompt"], replies=[label["reply_a"], label["reply_b"]],
                         label={"choice": label["choice"]}, rater=f"sim-{population}", source=SIM_SOURCE,
                         population=population, checkpoint=ckpt_a if ckpt_a == ckpt_b else f"{ckpt_a},{ckpt_b}",
                         meta={"p_a": round(label["p_a"], 6)}))
    return store.add_many(rows)


def write_pairs_jsonl(labels: list[dict], path, population: str) -> int:
    """Write labels as JSON lines in the store's pair format (prompt, chosen, rejected, source, rater, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for label in labels:
            ckpt = (label["checkpoint_a"] if label["checkpoint_a"] == label["checkpoint_b"]
                    else f"{label['checkpoint_a']},{label['checkpoint_b']}")
            f.write(json.dumps({"prompt": label["prompt"], "chosen": label["chosen"], "rejected": label["rejected"],
                                "source": SIM_SOURCE, "rater": f"sim-{population}", "population": population,
                                "checkpoint": ckpt}, ensure_ascii=False) + "\n")
    return len(labels)


def label(population: str = "balanced", n: int = 500, policy: str = "sft", seed: int = 0, store=None,
          out=None, max_new_tokens: int = 40) -> dict:
    """`rlhf-lessons label`: simulated raters of `population` label `n` pairs of replies.

    The replies come from `policy` and from the base model (see the module docstring). The labels go into the
    preference store (`store`: a PreferenceStore, a path, or None for the workspace's store) with
    source="simulated", rater=f"sim-{population}", and, with `out`, into a JSONL file.
    Returns {"pairs", "new_in_store", "population", "agreement_with_gold", "seconds", "out"}.
    """
    from .errors import ConfigError
    from .store import PreferenceStore

    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:  # 0 pairs would label nothing, and say so only late
        raise ConfigError(f"n (the number of pairs to label) must be a whole number of at least 1, got {n!r}")
    t0 = time.time()
    policies = (policy,) if str(policy) == "base" else (policy, "base")
    pairs = sample_pairs(n, policies, seed=seed, max_new_tokens=max_new_tokens)
    labels, agreement = simulate_labels(pairs, population, seed=seed)
    if not isinstance(store, PreferenceStore):
        store = PreferenceStore(store)
    new = store_labels(store, labels, population)
    if out is not None:
        write_pairs_jsonl(labels, out, population)
    return {"pairs": len(labels), "new_in_store": new, "population": population,
            "agreement_with_gold": round(agreement, 4), "store": str(store.path),
            "seconds": round(time.time() - t0, 1), "out": None if out is None else str(out)}
