"""Rater bias: RLHF aligns a model with the preferences of the people who gave the feedback, nothing more.

The same pipeline, from the same SFT model and the same sampled replies, run with labels from different raters:

    labels of a rater pool  ->  reward model  ->  PPO  ->  the balanced yardstick on held-out requests

- `cautious` raters reward refusing anything that sounds alarming: the policy learns to refuse to kill weeds or
  shoot a photo (over-refusal), which balanced users count as a failure. Measured on default settings (seed 0,
  1 thread): over-refusal 0.59 against balanced's 0.04.
- `verbose` raters like long replies: the policy learns to pad its answers with pleasantries, and then to repeat
  them ("Have a nice day! Have a nice day!"): length hacking. Measured on default settings (seed 0, 1 thread):
  24.6 reply tokens against balanced's 15.1 (1.63x), and the balanced gold score falls from 2.46 to 2.04: the
  verbose policy answers right less often (0.76 against 0.90), and balanced raters count a repeated phrase as
  poor writing.
- A pool that mixes two populations (90/10, 70/30, 50/50, ...) gives one reward model that averages their tastes,
  weighted by how many labels each wrote: the majority's taste becomes the model's, a minority's barely shows.
  Measured (seed 0, 1 thread): over-refusal 0.04 with 10% cautious raters among balanced ones, 0.81 with 90%
  (balanced alone 0.04, cautious alone 0.59). `rlhf-lessons experiment mixture` measures every share.

Every run measures with the *balanced* yardstick (evaluate.evaluate), whoever labelled: the question is what the
feedback did to a model that balanced users will meet. Runs are saved to <workspace>/experiments/bias/<name>.json
(and their checkpoints beside it), so the lesson reads the full sweeps that `rlhf-lessons experiment bias` and
`rlhf-lessons experiment mixture` wrote.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import gold
from .evaluate import YARDSTICK_KEYS, evaluate, score_replies
from .labeling import parse_mixture
from .workspace import workspace_dir

BIAS_POOLS = ("balanced", "cautious", "verbose")  # `experiment bias`: one population each
MIXTURE_SHARES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # `experiment mixture`: share of cautious raters among balanced


def pool_name(raters) -> str:
    """A file-safe name for a rater pool: 'cautious', or 'balanced70-cautious30' (shares in percent)."""
    shares = parse_mixture(raters)
    if len(shares) == 1:
        return next(iter(shares))
    return "-".join(f"{name}{round(100 * share)}" for name, share in sorted(shares.items()))


def mixture(minority: str = "cautious", share: float = 0.3, majority: str = "balanced") -> dict[str, float]:
    """{majority: 1 - share, minority: share}: the pool of a mixture sweep (share 0 or 1 is a single population)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    return parse_mixture({majority: 1.0 - share, minority: share})


def bias_dir() -> Path:
    """<workspace>/experiments/bias: one JSON summary per rater pool, and its checkpoints in a folder of that name."""
    path = workspace_dir() / "experiments" / "bias"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------------------------------
# Replies to label, sampled once for every rater pool
# --------------------------------------------------------------------------------------------------------------------

def label_pool(init: str | Path = "sft", seed: int = 0, cfg=None, progress: bool = True) -> dict:
    """The replies every rater pool labels, sampled once: the same recipe and seeds as `rlhf-lessons reward`.

    Rankings of cfg.k replies (half from `init`, half from the base model) to training requests, enough for about
    cfg.n_pairs pairs; cfg.n_heldout pairs on held-out requests; the init policy's own replies as the reference for
    normalising the reward model. Reusing one pool means the rater pools differ only in who judged.
    Returns {"init", "groups", "heldout_pairs", "reference", "seconds"}.
    """
    from .labeling import sample_pairs, sample_rankings
    from .reward import RewardConfig, _init_checkpoint, labelling_policies

    cfg = cfg or RewardConfig(seed=seed)
    _init_checkpoint(init)  # a missing SFT is trained first
    t0 = time.time()
    init_path, policies = labelling_policies(init)
    groups = sample_rankings(-(-cfg.n_pairs // math.comb(cfg.k, 2)), cfg.k, policies, seed=seed,
                             max_new_tokens=cfg.max_new_tokens, progress=progress)
    heldout = sample_pairs(cfg.n_heldout, policies, seed=seed + 7919, max_new_tokens=cfg.max_new_tokens,
                           split="heldout", progress=progress)
    reference = [(g["prompt"], reply) for g in groups for reply, name in zip(g["replies"], g["checkpoints"])
                 if name == str(init)]
    return {"init": str(init), "init_path": str(init_path), "seed": seed, "reward_config": asdict(cfg),
            "groups": groups, "heldout_pairs": heldout, "reference": reference,
            "seconds": round(time.time() - t0, 1)}


def train_reward_for(raters, pool: dict, out: str | Path | None = None, cfg=None, progress: bool = True) -> dict:
    """Label `pool` with the rater pool `raters` and train a reward model on it (saved to `out` when given).

    Every ranking is made by one rater drawn from the pool (labeling.simulate_mixture_rankings); the held-out pairs
    are labelled by the same pool, so held-out accuracy is against these raters' own choices.
    Returns the reward.train_reward summary (without the model) plus the pool and label counts.
    """
    from .labeling import simulate_mixture_labels, simulate_mixture_rankings, training_pairs
    from .reward import RewardConfig, train_reward

    shares = parse_mixture(raters)
    cfg = cfg or RewardConfig(**pool["reward_config"])
    seed = pool["seed"]
    labels, agreement = simulate_mixture_rankings(pool["groups"], shares, seed=seed)
    heldout, _ = simulate_mixture_labels(pool["heldout_pairs"], shares, seed=seed + 7919)
    pairs, seen = [], set()
    for p in training_pairs(labels):  # a reply that repeats inside a ranking gives the same pair twice
        key = (p["prompt"], p["chosen"], p["rejected"])
        if key not in seen:
            seen.add(key)
            pairs.append(p)
    result = train_reward(cfg, pairs, init=pool["init_path"], out_dir=out, heldout=heldout,
                          reference=pool["reference"], population=pool_name(shares), progress=progress,
                          manifest={"populations": sorted(shares), "raters": shares, "init_name": pool["init"],
                                    "command": "rlhf-lessons experiment bias"})
    summary = {k: v for k, v in result.items() if k not in ("model", "tokenizer", "calibration")}
    summary.update({"raters": shares, "pairs": len(pairs), "label_agreement_with_own_gold": round(agreement, 4),
                    "label_agreement_with_balanced": round(_agreement(labels, "balanced"), 4)})
    return summary


def _agreement(labels: list[dict], population: str) -> float:
    from .labeling import agreement_with_gold

    return agreement_with_gold(labels, population)


# --------------------------------------------------------------------------------------------------------------------
# One rater pool, end to end
# --------------------------------------------------------------------------------------------------------------------

def measure_policy(model, against: str | Path | None = None, n: int | None = None, seed: int = 0) -> dict:
    """The balanced yardstick of a policy on held-out requests, plus its gold mean under every population.

    Returns {YARDSTICK_KEYS..., "win_rate" (with `against`), "gold_by_population": {population: mean gold},
    "mean_reply_words", "examples": a few (request, reply) pairs of benign-but-alarming requests}.
    """
    figures = evaluate(model, against=against, n=n, seed=seed, return_replies=True)
    requests, replies = figures.pop("requests"), figures.pop("replies")
    figures.pop("other_replies", None)
    figures["gold_by_population"] = {p: score_replies(requests, replies, p)["gold_mean"] for p in gold.POPULATIONS}
    figures["mean_reply_words"] = round(sum(len(gold.WORD.findall(t.lower())) for t in replies) / len(replies), 2)
    alarming = [(r.prompt, t) for r, t in zip(requests, replies) if r.kind == "alarming"]
    figures["examples"] = [{"request": r, "reply": t} for r, t in alarming[:4]]
    return figures


def ppo_and_measure(reward: str | Path, init: str | Path, ppo_cfg, out: str | Path, eval_n: int | None = None,
                    seed: int = 0, against: bool = True) -> tuple[dict, dict]:
    """PPO from `init` against the reward model `reward` (saved to `out`), then the balanced yardstick of the policy.

    Returns (train_ppo's summary, measure_policy's figures); against=False skips the win rate against `init`.
    """
    from .ppo import train_ppo

    trained = train_ppo(ppo_cfg, policy=str(init), reward=str(reward), out_dir=out)
    return trained, measure_policy(out, against=init if against else None, n=eval_n, seed=seed)


def run_raters(raters, init: str | Path = "sft", seed: int = 0, reward_cfg=None, ppo_cfg=None,
               eval_n: int | None = None, pool: dict | None = None, out: str | Path | None = None,
               reuse: bool = False, progress: bool = True) -> dict:
    """Reward model and PPO from `init` with labels of the rater pool `raters`, then the balanced yardstick.

    raters: a population name or a pool ({"balanced": 0.7, "cautious": 0.3}, see labeling.parse_mixture).
    pool: label_pool output to reuse (sampled here when None: the same replies for every rater pool).
    ppo_cfg: PPOConfig (default: lesson 05's). eval_n: held-out requests to measure on (default: all).
    out: folder for this run's rm/ and ppo/ (default: <workspace>/experiments/bias/<name>); its summary goes to
    <out>.json. reuse: return a saved summary made with the same settings instead of training again.
    Returns {"name", "raters", "reward_model": {...}, "ppo": {...}, yardstick keys..., "gold_by_population", ...}.
    """
    from .ppo import PPOConfig
    from .reward import RewardConfig

    shares = parse_mixture(raters)
    name = pool_name(shares)
    if pool is not None and str(init) != pool["init"]:
        raise ValueError(f"the label pool was sampled from {pool['init']}, not {init}: pass init={pool['init']!r} "
                         "or sample a new pool with label_pool(init)")
    out = Path(out) if out is not None else bias_dir() / name
    ppo_cfg = copy.deepcopy(ppo_cfg) if ppo_cfg is not None else PPOConfig()
    ppo_cfg.seed = seed
    reward_cfg = reward_cfg or (RewardConfig(**pool["reward_config"]) if pool else RewardConfig(seed=seed))
    settings = _settings(shares, init, seed, reward_cfg, ppo_cfg, eval_n)
    saved = out.with_suffix(".json")
    if reuse and _same_settings(saved, settings):
        print(f"rater bias: reusing {saved} (same settings)", file=sys.stderr)
        return json.loads(saved.read_text())
    t0 = time.time()
    if pool is None:
        pool = label_pool(init, seed, reward_cfg, progress)
    print(f"rater bias: {name}: reward model", file=sys.stderr, flush=True)
    rm = train_reward_for(shares, pool, out / "rm", reward_cfg, progress)
    print(f"rater bias: {name}: PPO", file=sys.stderr, flush=True)
    trained, figures = ppo_and_measure(out / "rm", pool["init_path"], ppo_cfg, out / "ppo", eval_n, seed)
    summary = {
        "name": name, "raters": shares, "out": str(out),
        **{k: figures[k] for k in (*YARDSTICK_KEYS, "win_rate", "mean_reply_words", "gold_by_population",
                                   "examples")},
        "reward_model": {k: rm.get(k) for k in ("heldout_accuracy", "noise_ceiling", "gold_correlation", "pairs",
                                                "label_agreement_with_own_gold", "label_agreement_with_balanced",
                                                "seconds")},
        "ppo": {k: trained[k] for k in ("proxy_reward", "gold_reward", "kl", "proxy_reward_start",
                                        "gold_reward_start", "seconds")},
        "settings": settings, "seconds": round(time.time() - t0, 1),
    }
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# --------------------------------------------------------------------------------------------------------------------
# The sweeps
# --------------------------------------------------------------------------------------------------------------------

def baseline(init: str | Path = "sft", eval_n: int | None = None, seed: int = 0) -> dict:
    """The starting point every rater pool is compared with: the SFT policy on the balanced yardstick."""
    figures = measure_policy(init, n=eval_n, seed=seed)
    return {"name": str(init), **{k: figures[k] for k in (*YARDSTICK_KEYS, "mean_reply_words", "gold_by_population")}}


def run_bias_sweep(pools=BIAS_POOLS, init: str | Path = "sft", seed: int = 0, reward_cfg=None, ppo_cfg=None,
                   eval_n: int | None = None, reuse: bool = True, progress: bool = True) -> dict:
    """`rlhf-lessons experiment bias`: one run per rater pool (default balanced, cautious, verbose), from one label
    pool, written to <workspace>/experiments/bias.json. Returns {"sft", "runs": {name: summary}, "effects"}."""
    from .reward import RewardConfig

    t0 = time.time()
    reward_cfg = reward_cfg or RewardConfig(seed=seed)
    pool = None
    runs = {}
    for raters in pools:
        name = pool_name(raters)
        run = _reuse(raters, init, seed, reward_cfg, ppo_cfg, eval_n) if reuse else None
        if run is None:
            pool = pool or label_pool(init, seed, reward_cfg, progress)
            run = run_raters(raters, init, seed, reward_cfg, ppo_cfg, eval_n, pool=pool, progress=progress)
        runs[name] = run
    result = {"sft": baseline(init, eval_n, seed), "runs": runs, "effects": effects(runs),
              "seconds": round(time.time() - t0, 1), "command": "rlhf-lessons experiment bias"}
    return result


def run_mixture_sweep(shares=MIXTURE_SHARES, minority: str = "cautious", majority: str = "balanced",
                      init: str | Path = "sft", seed: int = 0, reward_cfg=None, ppo_cfg=None,
                      eval_n: int | None = None, reuse: bool = True, progress: bool = True) -> dict:
    """`rlhf-lessons experiment mixture`: pools of `majority` and `minority` raters in varying shares, one run each
    (the pure ends are the bias sweep's runs, reused when present). Returns {"rows": [{"share", ...}], ...}."""
    from .reward import RewardConfig

    t0 = time.time()
    reward_cfg = reward_cfg or RewardConfig(seed=seed)
    pool = None
    rows = []
    for share in shares:
        raters = mixture(minority, share, majority)
        run = _reuse(raters, init, seed, reward_cfg, ppo_cfg, eval_n) if reuse else None
        if run is None:
            pool = pool or label_pool(init, seed, reward_cfg, progress)
            run = run_raters(raters, init, seed, reward_cfg, ppo_cfg, eval_n, pool=pool, progress=progress)
        rows.append({"share": share, **{k: run[k] for k in ("name", *YARDSTICK_KEYS, "mean_reply_words",
                                                           "gold_by_population")}})
    return {"majority": majority, "minority": minority, "rows": rows, "seconds": round(time.time() - t0, 1),
            "command": "rlhf-lessons experiment mixture"}


def _settings(shares, init, seed, reward_cfg, ppo_cfg, eval_n) -> dict:
    """What a run depends on, as saved in its summary (JSON-normalised, so it compares equal after a round trip)."""
    return json.loads(json.dumps({"raters": shares, "init": str(init), "seed": seed,
                                  "reward_config": asdict(reward_cfg), "ppo_config": asdict(ppo_cfg),
                                  "eval_n": eval_n}))


def _same_settings(saved: Path, settings: dict) -> bool:
    return saved.exists() and json.loads(saved.read_text()).get("settings") == settings


def _reuse(raters, init, seed, reward_cfg, ppo_cfg, eval_n) -> dict | None:
    """A saved run (in the default place) with exactly these settings, or None."""
    from .ppo import PPOConfig

    ppo_cfg = copy.deepcopy(ppo_cfg) if ppo_cfg is not None else PPOConfig()
    ppo_cfg.seed = seed
    saved = bias_dir() / f"{pool_name(raters)}.json"
    if _same_settings(saved, _settings(parse_mixture(raters), init, seed, reward_cfg, ppo_cfg, eval_n)):
        print(f"rater bias: reusing {saved} (same settings)", file=sys.stderr)
        return json.loads(saved.read_text())
    return None


def effects(runs: dict) -> dict:
    """The lesson's headline differences against the balanced run (those available among `runs`)."""
    base = runs.get("balanced")
    if base is None:
        return {}
    out = {}
    if "cautious" in runs:
        out["over_refusal_rate_cautious_minus_balanced"] = round(
            runs["cautious"]["over_refusal_rate"] - base["over_refusal_rate"], 4)
    if "verbose" in runs:
        out["reply_tokens_verbose_over_balanced"] = round(
            runs["verbose"]["mean_reply_tokens"] / base["mean_reply_tokens"], 3)
        out["gold_mean_verbose_minus_balanced"] = round(runs["verbose"]["gold_mean"] - base["gold_mean"], 4)
    return out


def run_bias_experiment(seed: int = 0, eval_n: int | None = None, reuse: bool = True, progress: bool = True) -> dict:
    """The command's body: the bias sweep, written to <workspace>/experiments/bias.json. Returns a short summary."""
    from .overoptimization import write_result

    result = run_bias_sweep(seed=seed, eval_n=eval_n, reuse=reuse, progress=progress)
    path = write_result("bias", result)
    brief = {name: {k: run[k] for k in ("over_refusal_rate", "mean_reply_tokens", "gold_mean", "helpful_rate")}
             for name, run in result["runs"].items()}
    return {"experiment": "bias", "file": str(path), "runs": brief, "effects": result["effects"],
            "seconds": result["seconds"]}


def run_mixture_experiment(seed: int = 0, eval_n: int | None = None, reuse: bool = True,
                           progress: bool = True) -> dict:
    """The command's body: the mixture sweep, written to <workspace>/experiments/mixture.json."""
    from .overoptimization import write_result

    result = run_mixture_sweep(seed=seed, eval_n=eval_n, reuse=reuse, progress=progress)
    path = write_result("mixture", result)
    return {"experiment": "mixture", "file": str(path),
            "rows": [{k: row[k] for k in ("share", "over_refusal_rate", "gold_mean")} for row in result["rows"]],
            "seconds": result["seconds"]}



def plot_bias(runs: dict, sft: dict | None = None, keys=("over_refusal_rate", "mean_reply_tokens", "gold_mean",
                                                        "helpful_rate")):
    """Bars of the balanced yardstick, one panel per key, one bar per rater pool (and SFT, when given).

    runs: {name: run_raters output} (run_bias_sweep's "runs"). Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    names = ([] if sft is None else ["sft"]) + list(runs)
    values = {**({} if sft is None else {"sft": sft}), **runs}
    cols = min(2, len(keys))  # two panels a row: four in a row are too wide for a notebook
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.7 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.bar(names, [values[n][key] for n in names], color=["#999" if n == "sft" else "#69c" for n in names])
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=8, axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_mixture(result: dict, keys=("over_refusal_rate", "gold_mean")):
    """The yardstick against the minority's share of the rater pool (run_mixture_sweep output): a Figure."""
    from matplotlib.figure import Figure

    shares = [row["share"] for row in result["rows"]]
    fig = Figure(figsize=(4.2 * len(keys), 3.2))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot(shares, [row[key] for row in result["rows"]], "o-")
        ax.axvline(0.5, color="#999", lw=0.8, ls="--")  # where the majority changes sides
        ax.set(title=key, xlabel=f"share of {result['minority']} raters among {result['majority']}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def flip_share(p_majority: float, p_minority: float) -> float | None:
    """The minority's share s of a pool at which the pool's preference for reply A crosses one half:

        s * p_minority + (1 - s) * p_majority = 1/2   =>   s = (1/2 - p_majority) / (p_minority - p_majority)

    p_majority, p_minority: each population's probability of preferring A (gold.preference_probability). A rater
    drawn from the pool prefers A with the mixture probability (gold.mixture_probability), so a reward model fitted
    to the pool's labels ranks A first once the minority's share passes s. Returns s in [0, 1], or None when no
    share flips the pool (both populations on the same side of one half).
    """
    if p_minority == p_majority:
        return None
    share = (0.5 - p_majority) / (p_minority - p_majority)
    return share if 0.0 <= share <= 1.0 else None


def predicted_flips(probes: list[tuple], majority: str = "balanced", minority: str = "cautious",
                    noise: float = gold.DEFAULT_NOISE) -> list[float | None]:
    """flip_share for each (request, x, y) probe triple, from the two populations' gold preferences for x."""
    shares = []
    for request, x, y in probes:
        p = {pop: gold.mixture_probability(request, x, y, {pop: 1.0}, noise) for pop in (majority, minority)}
        shares.append(flip_share(p[majority], p[minority]))
    return shares


# --------------------------------------------------------------------------------------------------------------------
# Probes: what a reward model prefers where the populations disagree
# --------------------------------------------------------------------------------------------------------------------

def disagreement_probes(seed: int = 0) -> dict[str, list[tuple]]:
    """Two probes on held-out requests, each a list of (request, reply_x, reply_y), where populations disagree:

    refusal   benign-but-alarming requests ("How do I kill the weeds?"): x = a refusal, y = the helpful answer
    length    open requests: x = a long reply (an opener, every tip, a closer), y = the same with one tip (close to
              the 14 words balanced raters like best)

    The gold raters: balanced prefers the answer to the refusal and is split on length; cautious prefers the
    refusal; verbose prefers the long reply every time (see prefers_x with gold_scorer).
    """
    import random

    from . import world
    from .evaluate import eval_requests

    rng = random.Random(seed)
    heldout = eval_requests("heldout")  # the held-out evaluation set
    refusal = [(r, rng.choice(world.REFUSALS), r.extra["answer"]) for r in heldout if r.kind == "alarming"]
    length = []
    for r in heldout:
        if r.kind == "open":
            opener, closer = rng.choice(world.POLITE_OPENERS), rng.choice(world.POLITE_CLOSERS)
            long = " ".join([opener, *r.extra["tips"], closer])
            length.append((r, long, " ".join([opener, rng.choice(r.extra["tips"]), closer])))
    return {"refusal": refusal, "length": length}


def prefers_x(probes: dict[str, list[tuple]], score) -> dict[str, float]:
    """For each probe, the share of its triples on which score(request, x) > score(request, y).

    score: a function (list of requests, list of replies) -> scores (a reward model, or a gold rater).
    """
    out = {}
    for name, triples in probes.items():
        requests = [r for r, _, _ in triples]
        sx = score(requests, [x for _, x, _ in triples])
        sy = score(requests, [y for _, _, y in triples])
        out[name] = round(sum(float(a) > float(b) for a, b in zip(sx, sy)) / len(triples), 4)
    return out


def gold_scorer(population: str):
    """score(requests, replies) with the gold rater of `population` (for prefers_x)."""
    return lambda requests, replies: [gold.gold_score(r, t, population) for r, t in zip(requests, replies)]


def reward_model_scorer(path: str | Path):
    """score(requests, replies) with the reward model at `path` (for prefers_x)."""
    from .reward import load_reward_model, reward_scores

    rm, tokenizer = load_reward_model(path)
    return lambda requests, replies: reward_scores(rm, tokenizer, [r.prompt for r in requests], replies).tolist()
