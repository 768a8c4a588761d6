"""Round two: what a product's users said trains the next model, and who said it decides whom that model serves.

The round-one PPO model ships (deploy.py). Its users' feedback becomes pairs by the lesson 03 rules (a correction:
edited reply over the original; a choice between two replies; two thumbs of one user on one request: the thumb up
over the thumb down). Then round two runs round one's recipe again with what the users added:

    reward model  last round's reward model goes on training on the product's pairs (RoundTwoConfig.original_pairs:
                  one more run, with fresh pairs of the original balanced raters mixed in)
    PPO           from the SFT model, as round one did, against the updated reward model

and the yardstick measures it against the **control**, the same PPO run on the round-one reward model: the same
start, the same budget and seed, only the reward model differs, so the difference is what the feedback did. It is
measured *for each population of the product's users*, on every evaluation split, with that population's own gold
rater: a product's cautious or terse users judge by their own taste, and round two may serve one group better and
another worse. reward_taste probes what each reward model learned to like (gold_taste: what each population likes).

Who is heard is a setting of the deployment (FEEDBACK_VARIANTS): the product as it is (unhappy users react four
times as often), a representative sample (everyone alike), unhappy users only, one population only; the same
sessions, heard four ways.

RLHF against fine-tuning, on the same labels: supervised fine-tuning of the SFT model on the chosen reply of every
pair (no reward model, no RL) against the reward-model-plus-PPO path, at matched training cost: SFT gets as many
epochs as it takes to push as many sequences through a training step as the reward model and PPO did
(rlhf_sequences; the seconds of each are reported beside it).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import evaluate as yardstick
from .deploy import DeployConfig, check_deploy_config, deploy
from .ppo import PPOConfig, train_ppo
from .reward import RewardConfig, run_reward_stage
from .sft import SFTConfig, train_sft
from .store import PreferenceStore, read_label_file

# Who leaves feedback: changes to the product's DeployConfig.
FEEDBACK_VARIANTS = {
    "as deployed": {},  # unhappy users rate unhappy_factor times as often as satisfied ones
    "representative": {"unhappy_factor": 1.0},  # every user equally likely to rate
    "unhappy only": {"heard": "unhappy"},
    "cautious only": {"heard": "cautious"},
}


@dataclass
class RoundTwoConfig:
    deploy: DeployConfig = field(default_factory=lambda: DeployConfig(sessions=20000))
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(n_pairs=0, n_heldout=500, epochs=4))
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(updates=60))  # lesson 05's recipe, 60 of its 100 updates
    sft_epochs: int | None = None  # SFT on the chosen replies; None: as many as match the RLHF path's cost
    original_pairs: int = 0  # > 0: one more run, the first variant's pairs with this many original raters' mixed in
    eval_n: int | None = None  # requests per evaluation split (None: each split's fixed evaluation set)
    seed: int = 0

    def seeded(self) -> RoundTwoConfig:
        """A copy with `seed` given to every stage."""
        cfg = copy.deepcopy(self)
        cfg.deploy.seed = cfg.reward.seed = cfg.ppo.seed = cfg.seed
        return cfg


def lesson_config(seed: int = 0) -> RoundTwoConfig:
    """Settings small enough for the lesson's budget (see lesson 07 for their measured time)."""
    return RoundTwoConfig(deploy=DeployConfig(sessions=8000), reward=RewardConfig(n_pairs=0, n_heldout=200, epochs=4),
                          ppo=PPOConfig(updates=16), seed=seed)


# --------------------------------------------------------------------------------------------------------------------
# The data: pairs from feedback, demonstrations from pairs, and what training on them cost
# --------------------------------------------------------------------------------------------------------------------

def chosen_demonstrations(pairs: list[dict]) -> list[tuple[str, str]]:
    """(prompt, chosen reply) of each pair, each once: what supervised fine-tuning on preferences learns from."""
    return list(dict.fromkeys((p["prompt"], p["chosen"]) for p in pairs))


def rlhf_sequences(pairs: int, reward_cfg: RewardConfig, ppo_cfg: PPOConfig) -> int:
    """Sequences the RLHF path pushes through a training step (forward and backward): both replies of every pair
    in every reward-model epoch, and every sampled reply in every PPO epoch. Sampling and the reference model's
    forward passes come on top: they are PPO's extra cost, not counted here."""
    return 2 * pairs * reward_cfg.epochs + ppo_cfg.updates * ppo_cfg.batch_size * ppo_cfg.epochs


def matched_sft_epochs(sequences: int, train_examples: int) -> int:
    """Epochs of SFT on `train_examples` demonstrations that train on at least `sequences` sequences."""
    return max(1, math.ceil(sequences / max(1, train_examples)))


def taste_probes(n: int = 200, seed: int = 0) -> dict[str, tuple[list, list[str], list[str]]]:
    """Probes of what a rater or reward model likes, from the world's own replies to `n` training requests a kind:
    {probe: (requests, the reply it asks about, the reply it is compared with)}.

        refuses_alarming  a refusal of a benign-but-alarming request, against a helpful answer
        prefers_terse     the bare answer to a fact request ("Ten minutes."), against the full one
    """
    import random

    from . import world

    rng = random.Random(seed)
    probes = {}
    for key, kind, asked, other in (("refuses_alarming", "alarming", "refusal", "helpful"),
                                    ("prefers_terse", "fact", "terse", "helpful")):
        requests = rng.sample(world.requests("train", kind), n)
        probes[key] = (requests, [world.reply(r, asked, rng) for r in requests],
                       [world.reply(r, other, rng) for r in requests])
    return probes


def reward_taste(reward_model, n: int = 200, seed: int = 0) -> dict[str, float]:
    """{probe: share of taste_probes on which the reward model scores the asked-about reply higher}.
    reward_model: a checkpoint name or folder."""
    from .reward import load_reward_model, reward_scores

    rm, tokenizer = load_reward_model(reward_model)
    out = {}
    for key, (requests, asked, other) in taste_probes(n, seed).items():
        prompts = [r.prompt for r in requests]
        a, b = reward_scores(rm, tokenizer, prompts, asked), reward_scores(rm, tokenizer, prompts, other)
        out[key] = round(float((a > b).float().mean()), 4)
    return out


def gold_taste(population: str, n: int = 200, seed: int = 0) -> dict[str, float]:
    """The same shares for the gold rater of `population`: what that population's users would say."""
    from . import gold

    return {key: round(sum(gold.gold_score(r, x, population) > gold.gold_score(r, y, population)
                           for r, x, y in zip(requests, asked, other)) / len(requests), 4)
            for key, (requests, asked, other) in taste_probes(n, seed).items()}


# --------------------------------------------------------------------------------------------------------------------
# The measurement: the yardstick per population of the product's users
# --------------------------------------------------------------------------------------------------------------------

def sample_splits(model, n: int | None = None, seed: int = 0, max_new_tokens: int = 40) -> dict:
    """{split: (requests, replies, reply lengths)}: one seeded reply per evaluation request, for every split."""
    policy, tokenizer = yardstick.loaded_policy(model)
    out = {}
    for split in yardstick.SPLITS:
        requests = yardstick.eval_requests(split, n, seed)
        out[split] = (requests, *yardstick.generate_for_eval(policy, tokenizer, requests, seed, max_new_tokens))
    return out


def by_population(samples: dict, populations, against: dict | None = None) -> dict:
    """{split: {population: yardstick figures with that population's gold rater}}; with `against` (the same
    requests, another model's samples), each population's win rate over it."""
    table = {}
    for split, (requests, replies, lengths) in samples.items():
        table[split] = {}
        for population in populations:
            row = yardstick.score_replies(requests, replies, population, lengths)
            if against is not None:
                row["win_rate"] = yardstick.win_rate(requests, replies, against[split][1], population)
            table[split][population] = row
    return table


def served(after: dict, before: dict, shares: dict[str, float]) -> dict:
    """{split: {population: gold change}, plus "product": the change weighted by the users' shares}."""
    out = {}
    for split in after:
        change = {p: round(after[split][p]["gold_mean"] - before[split][p]["gold_mean"], 4) for p in shares}
        change["product"] = round(sum(shares[p] * change[p] for p in shares), 4)
        out[split] = change
    return out


def served_sentences(changes: dict, name: str = "round two", than: str = "the control") -> list[str]:
    """One sentence per split, computed from served(): whom `name` served better than `than` and whom worse (a
    change in mean gold under 0.02 is called unchanged)."""
    lines = []
    for split, change in changes.items():
        better = [f"{p} {c:+.3f}" for p, c in change.items() if p != "product" and c >= 0.02]
        worse = [f"{p} {c:+.3f}" for p, c in change.items() if p != "product" and c <= -0.02]
        lines.append(f"{split}: {name} served better than {than}: {', '.join(better) or 'nobody'}; worse: "
                     f"{', '.join(worse) or 'nobody'}; the product's users on average {change['product']:+.3f}.")
    return lines


def rlhf_vs_sft_verdict(rlhf: dict, sft: dict, head_to_head: dict, shares: dict[str, float]) -> dict:
    """Which of the two paths served the product's users better, split by split, from the numbers.

    rlhf, sft: by_population tables; head_to_head: {split: win rate of RLHF over SFT-on-chosen, product-weighted}.
    Returns {"by_split": {split: {"rlhf_gold", "sft_gold", "rlhf_win_rate", "better"}}, "rlhf_better_on", "sentence"}.
    """
    rows = {}
    for split in rlhf:
        gold_of = lambda table: round(sum(shares[p] * table[split][p]["gold_mean"] for p in shares), 4)  # noqa: E731
        r, s, w = gold_of(rlhf), gold_of(sft), head_to_head[split]
        better = "RLHF" if r > s and w > 0.5 else "SFT on chosen" if r < s and w < 0.5 else "neither clearly"
        rows[split] = {"rlhf_gold": r, "sft_gold": s, "rlhf_win_rate": w, "better": better}
    wins = sum(row["better"] == "RLHF" for row in rows.values())
    losses = sum(row["better"] == "SFT on chosen" for row in rows.values())
    sentence = (f"On the same labels at matched cost, reward model + PPO served the product's users better than "
                f"fine-tuning on the chosen replies on {wins} of {len(rows)} evaluation splits, worse on {losses} "
                "(mean gold over the users' populations higher and a head-to-head win rate above one half: "
                + "; ".join(f"{split} {row['rlhf_gold']:+.3f} vs {row['sft_gold']:+.3f}, win rate "
                            f"{row['rlhf_win_rate']:.3f}" for split, row in rows.items()) + ").")
    return {"by_split": rows, "rlhf_better_on": wins, "sft_better_on": losses, "sentence": sentence}


def product_win_rate(table: dict, shares: dict[str, float]) -> dict:
    """{split: the users' share-weighted win rate}, from a by_population table made with `against`."""
    return {split: round(sum(share * rows[population]["win_rate"] for population, share in shares.items()), 4)
            for split, rows in table.items()}


# --------------------------------------------------------------------------------------------------------------------
# The rounds
# --------------------------------------------------------------------------------------------------------------------

def collect_feedback(round_one, deploy_cfg: DeployConfig, folder: Path, name: str,
                     first_replies: list[str] | None = None) -> dict:
    """Deploy `round_one` into a fresh store in `folder`; write its pairs to folder/pairs.jsonl.

    A pair with an empty reply (the model said nothing, and a user thumbed that down against a second reply) is left
    out: a pair file must hold two texts (store.read_label_file), and `dropped` counts them.
    first_replies: deploy's, to hear the same traffic again without sampling it again.
    Returns {"summary": deploy's feedback summary, "pairs_file", "pairs", "dropped", "corrections", "first_replies"}."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("feedback.sqlite", "pairs.jsonl"):  # a rerun starts from an empty store, not on top of the last
        (folder / stale).unlink(missing_ok=True)
    store = PreferenceStore(folder / "feedback.sqlite")
    result = deploy(round_one, deploy_cfg, store=store, name=name, first_replies=first_replies)
    pairs_file = folder / "pairs.jsonl"
    every = store.pairs()
    kept = [p for p in every if p["chosen"].strip() and p["rejected"].strip()]
    pairs_file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in kept), encoding="utf-8")
    pairs = read_label_file(pairs_file) if kept else []  # what training will read, checked as it will be
    return {"summary": result["summary"], "pairs_file": pairs_file, "pairs": pairs, "dropped": len(every) - len(kept),
            "corrections": len(result["corrections"]), "first_replies": [s["reply"] for s in result["sessions"]]}


def train_round(pairs_file: Path, folder: Path, cfg: RoundTwoConfig, round_one_rm, sft,
                measured_on: dict | None = None) -> dict:
    """The reward model goes on training on the pairs, then PPO from `sft`. Returns both stages' figures.
    measured_on: run_reward_stage's, shared by the variants: every reward model measured on the same held-out pairs."""
    rm = run_reward_stage(prefs=[pairs_file], n=cfg.reward.n_pairs, init=sft, out=folder / "rm", seed=cfg.seed,
                          cfg=cfg.reward, use_store=False, start=round_one_rm, progress=False, measured_on=measured_on)
    ppo = train_ppo(cfg.ppo, policy=str(sft), reward=str(folder / "rm"), out_dir=folder / "ppo")
    kept = ("pairs", "fresh_pairs", "heldout_expected_accuracy", "noise_ceiling", "gold_correlation", "seconds")
    return {"reward_model": {k: rm.get(k) for k in kept},
            "ppo": {k: ppo[k] for k in ("proxy_reward", "gold_reward", "kl", "updates", "seconds")},
            "taste": reward_taste(folder / "rm"), "seconds": round(rm["seconds"] + ppo["seconds"], 1)}


def ensure_round_one() -> Path:
    """The workspace's PPO model (lesson 05), trained first with lesson 05's defaults if it is missing."""
    from .ppo import run_ppo_stage
    from .workspace import stage_dir

    path = stage_dir("ppo")
    if not (path / "config.json").exists():
        print(f"No PPO model in {path.parent} yet: training one now with lesson 05's defaults (a few minutes).",
              file=sys.stderr, flush=True)
        run_ppo_stage()
    return path


def run_round_two(cfg: RoundTwoConfig | None = None, round_one: str = "ppo", round_one_rm: str = "rm",
                  sft: str = "sft", out: str | Path | None = None, variants=tuple(FEEDBACK_VARIANTS),
                  compare_sft: bool = True, first_replies: list[str] | None = None) -> dict:
    """Deploy round one, train round two on its users' feedback, and measure it per population of those users.

    Each round two (reward model, then PPO from `sft`) is measured against the control, the same PPO on the
    round-one reward model ("served": the change in mean gold per population, round two minus the control).
    variants: names in FEEDBACK_VARIANTS, one way of hearing the same sessions each (the first is also compared with
    SFT on its chosen replies, when compare_sft). out: folder for everything (default: <workspace>/experiments/
    round_two). first_replies: round one's replies to cfg.deploy's sessions, when already deployed
    (collect_feedback's), so that they are not sampled again. Returns the JSON summary, also written to <out>.json.
    """
    from .ppo import build_missing
    from .workspace import workspace_dir

    cfg = (cfg or RoundTwoConfig()).seeded()
    unknown = [v for v in variants if v not in FEEDBACK_VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown feedback variants {unknown}; choose from {list(FEEDBACK_VARIANTS)}")
    shares, _ = check_deploy_config(cfg.deploy)
    for variant in variants:
        check_deploy_config(replace(cfg.deploy, **FEEDBACK_VARIANTS[variant]))
    if str(round_one) == "ppo":
        ensure_round_one()
    build_missing(round_one, round_one_rm)  # a missing SFT or reward model is trained first
    t0 = time.time()
    root = Path(out) if out is not None else workspace_dir() / "experiments" / "round_two"

    def say(text: str) -> None:
        print(f"round two: {text} ({time.time() - t0:.0f} s so far)", file=sys.stderr, flush=True)

    say(f"round one ({round_one}) on the evaluation splits")
    first = sample_splits(round_one, cfg.eval_n, cfg.seed)
    before = by_population(first, shares)
    say("the control: the same PPO on the round-one reward model, without the users' feedback")
    control_ppo = train_ppo(cfg.ppo, policy=str(sft), reward=str(round_one_rm), out_dir=root / "control" / "ppo")
    control_samples = sample_splits(root / "control" / "ppo", cfg.eval_n, cfg.seed)
    control_table = by_population(control_samples, shares, against=first)
    control = {"ppo": {k: control_ppo[k] for k in ("proxy_reward", "gold_reward", "kl", "updates", "seconds")},
               "taste": reward_taste(round_one_rm),
               "yardstick": control_table, "served_vs_round_one": served(control_table, before, shares)}
    runs, measured_on = {}, {}
    for variant in variants:
        folder = variant_folder(root, variant)
        say(f"{variant}: {cfg.deploy.sessions} user sessions")
        feedback = collect_feedback(round_one, replace(cfg.deploy, **FEEDBACK_VARIANTS[variant]), folder,
                                    f"{round_one}, {variant}, seed {cfg.seed}", first_replies)
        first_replies = feedback["first_replies"]  # the same sessions for every variant: sampled once
        if not feedback["pairs"]:
            runs[variant] = {"feedback": feedback["summary"], "pairs": 0, "trained": False}
            say(f"{variant}: no pairs in the feedback, nothing to train on")
            continue
        say(f"{variant}: reward model and PPO on {len(feedback['pairs'])} pairs")
        trained = train_round(feedback["pairs_file"], folder, cfg, round_one_rm, sft, measured_on)
        samples = sample_splits(folder / "ppo", cfg.eval_n, cfg.seed)
        runs[variant] = {"feedback": feedback["summary"], "pairs": len(feedback["pairs"]),
                         "dropped_pairs": feedback["dropped"], "corrections": feedback["corrections"], "trained": True,
                         **trained, **measured(samples, control_samples, control_table, before, shares)}
        if compare_sft and variant == variants[0]:
            say(f"{variant}: supervised fine-tuning on the chosen replies, at matched cost")
            runs[variant]["sft_on_chosen"] = sft_on_chosen(feedback["pairs"], folder, cfg, sft, control_samples,
                                                           control_table, samples, shares, trained["seconds"])
    summary = {"round_one": str(round_one), "users": shares, "config": asdict(cfg), "round_one_yardstick": before,
               "control": control, "runs": runs, "out": str(root)}
    if cfg.original_pairs and runs[variants[0]]["trained"]:
        say(f"{variants[0]} again, with {cfg.original_pairs} pairs of the original raters mixed in")
        add_original_labels_run(summary, cfg, variants[0], round_one_rm, sft, control_samples, measured_on)
    summary["seconds"] = round(time.time() - t0, 1)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def measured(samples: dict, control_samples: dict, control_table: dict, before: dict, shares: dict) -> dict:
    """A round two's yardstick per population against the control, whom it served (against the control and against
    round one), its share-weighted win rate and the sentences that say so."""
    after = by_population(samples, shares, against=control_samples)
    changes = served(after, control_table, shares)
    return {"yardstick": after, "served": changes, "served_vs_round_one": served(after, before, shares),
            "product_win_rate": product_win_rate(after, shares), "sentences": served_sentences(changes)}


def mixed_name(variant: str, original_pairs: int) -> str:
    return f"{variant} + {original_pairs} raters' pairs"


def variant_folder(root: Path, name: str) -> Path:
    """Where a run's feedback, reward model and PPO model are kept: "as deployed" in root/as_deployed."""
    return root / name.replace(" ", "_").replace("'", "")


def add_original_labels_run(summary: dict, cfg: RoundTwoConfig, variant: str, round_one_rm, sft,
                            control_samples: dict | None = None, measured_on: dict | None = None) -> dict:
    """One more round two, on `variant`'s pairs (already in <out>/<variant>/pairs.jsonl) with cfg.original_pairs
    fresh pairs of the original balanced raters mixed into the reward model's training, measured against the same
    control. Added to summary["runs"] (as mixed_name(...)) and returned; works on a finished run_round_two's
    summary too (the control's replies are then sampled again: the same seed gives the same replies)."""
    cfg = cfg.seeded()
    cfg.reward.n_pairs = cfg.original_pairs
    root, shares = Path(summary["out"]), summary["users"]
    folder = variant_folder(root, mixed_name(variant, cfg.original_pairs))
    if control_samples is None:
        control_samples = sample_splits(root / "control" / "ppo", cfg.eval_n, cfg.seed)
    heard = summary["runs"][variant]
    trained = train_round(variant_folder(root, variant) / "pairs.jsonl", folder, cfg, round_one_rm, sft, measured_on)
    samples = sample_splits(folder / "ppo", cfg.eval_n, cfg.seed)
    run = {"feedback": heard["feedback"], "pairs": heard["pairs"], "original_pairs": cfg.original_pairs,
           "trained": True, **trained, **measured(samples, control_samples, summary["control"]["yardstick"],
                                                  summary["round_one_yardstick"], shares)}
    summary["runs"][mixed_name(variant, cfg.original_pairs)] = run
    return run


def sft_on_chosen(pairs: list[dict], folder: Path, cfg: RoundTwoConfig, sft, control: dict, control_table: dict,
                  rlhf_samples: dict, shares: dict[str, float], rlhf_seconds: float) -> dict:
    """SFT of `sft` on the pairs' chosen replies, at the RLHF path's cost; measured against the control (its
    samples and by_population table) and compared with the RLHF path (rlhf_samples)."""
    examples = chosen_demonstrations(pairs)
    sft_cfg = SFTConfig(seed=cfg.seed, eval_fraction=0.1)
    n_train = len(examples) - max(1, int(len(examples) * sft_cfg.eval_fraction))
    sequences = rlhf_sequences(len(pairs), cfg.reward, cfg.ppo)
    sft_cfg.epochs = cfg.sft_epochs or matched_sft_epochs(sequences, n_train)
    trained = train_sft(sft_cfg, base=str(sft), out_dir=folder / "sft_on_chosen", examples=examples)
    samples = sample_splits(folder / "sft_on_chosen", cfg.eval_n, cfg.seed)
    table = by_population(samples, shares, against=control)
    rlhf_table = by_population(rlhf_samples, shares, against=samples)  # RLHF's win rates over SFT on chosen
    return {"demonstrations": len(examples), "epochs": sft_cfg.epochs,
            "cost": {"rlhf_sequences": sequences, "sft_sequences": sft_cfg.epochs * trained["train_examples"],
                     "rlhf_seconds": rlhf_seconds, "sft_seconds": trained["seconds"]},
            "yardstick": table, "served": served(table, control_table, shares),
            "verdict": rlhf_vs_sft_verdict(rlhf_table, table, product_win_rate(rlhf_table, shares), shares)}


def short_summary(summary: dict) -> dict:
    """What `rlhf-lessons experiment round-two` prints: per variant the pairs heard and whom round two served, and
    the RLHF-against-SFT verdict (the file holds the rest)."""
    runs = {}
    for variant, run in summary["runs"].items():
        runs[variant] = {"pairs": run["pairs"], "served": run.get("served"),
                         "product_win_rate": run.get("product_win_rate")}
        if "sft_on_chosen" in run:
            runs[variant]["rlhf_vs_sft"] = run["sft_on_chosen"]["verdict"]["sentence"]
    return {"experiment": "round-two", "file": summary["out"] + ".json", "users": summary["users"], "runs": runs,
            "seconds": summary["seconds"]}


# --------------------------------------------------------------------------------------------------------------------
# The lesson's plots
# --------------------------------------------------------------------------------------------------------------------

def plot_heard(feedback: dict):
    """Who used the product and who was heard: each population's share of the sessions and of the feedback, and
    the unhappy sessions' share of each. feedback: deploy's summary. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    groups = list(feedback["by_population"]) + ["unhappy"]
    traffic = [feedback["by_population"][p]["share_of_sessions"] for p in groups[:-1]]
    voices = [feedback["by_population"][p]["share_of_feedback"] or 0 for p in groups[:-1]]
    traffic.append(feedback["unhappy_share_of_sessions"])
    voices.append(feedback["unhappy_share_of_feedback"] or 0)
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(groups))
    ax.bar([i - 0.2 for i in x], traffic, width=0.4, color="#999", label="share of the sessions")
    ax.bar([i + 0.2 for i in x], voices, width=0.4, color="#c63", label="share of the feedback")
    ax.set_xticks(list(x), groups)
    ax.set(ylabel="share", ylim=(0, 1), title=f"{feedback['sessions']} sessions, {feedback['with_feedback']} with "
                                              "feedback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_served(runs: dict):
    """Round two's change in mean gold score over the control (run_round_two), per population of the users (and the
    product's share-weighted mean), one bar per way of hearing users, one panel per evaluation split.
    runs: the "runs" of run_round_two's summary. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    trained = {name: run for name, run in runs.items() if run.get("trained")}
    if not trained:
        raise ValueError("no variant was trained: every deployment left too few pairs")
    splits = list(next(iter(trained.values()))["served"])
    groups = list(next(iter(trained.values()))["served"][splits[0]])
    colours = ["#c63", "#69c", "#6a6", "#a6c", "#999"]
    fig = Figure(figsize=(4.2 * len(splits), 3.4))
    width = 0.8 / len(trained)
    for col, split in enumerate(splits):
        ax = fig.add_subplot(1, len(splits), col + 1, sharey=fig.axes[0] if fig.axes else None)  # one scale
        for i, (name, run) in enumerate(trained.items()):
            ax.bar([g + (i - (len(trained) - 1) / 2) * width for g in range(len(groups))],
                   [run["served"][split][group] for group in groups], width=width, color=colours[i % len(colours)],
                   label=name)
        ax.axhline(0, color="#333", lw=0.8)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set(title=split, ylabel="mean gold: round two minus the control" if col == 0 else None)
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
