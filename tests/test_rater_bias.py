"""Tests of lesson 06's rater-bias experiments: rater pools and their labels, a tiny end-to-end run, and (slow) the
population effects on default settings: cautious raters teach over-refusal, verbose raters teach padding, and a
mixed pool follows its majority."""

import json

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_lessons import gold, labeling, rater_bias, world
from rlhf_lessons.evaluate import YARDSTICK_KEYS
from rlhf_lessons.models import load_tokenizer, save_checkpoint, tiny_config
from rlhf_lessons.ppo import PPOConfig
from rlhf_lessons.reward import RewardConfig


# ----- rater pools -----

def test_parse_mixture_spellings():
    assert labeling.parse_mixture("cautious") == {"cautious": 1.0}
    assert labeling.parse_mixture({"balanced": 7, "cautious": 3}) == pytest.approx({"balanced": 0.7, "cautious": 0.3})
    assert labeling.parse_mixture("balanced:0.9,cautious:0.1") == pytest.approx({"balanced": 0.9, "cautious": 0.1})
    assert labeling.parse_mixture({"balanced": 1.0, "verbose": 0.0}) == {"balanced": 1.0}


@pytest.mark.parametrize("bad,match", [("grumpy", "unknown population"), ({"balanced": -1, "cautious": 2}, ">= 0"),
                                       ({"balanced": 0}, "not all 0"), ("balanced:x", "cannot read"),
                                       ({}, "rater pool")])
def test_parse_mixture_refuses_bad_pools(bad, match):
    with pytest.raises(ValueError, match=match):
        labeling.parse_mixture(bad)


def test_pool_names():
    assert rater_bias.pool_name("verbose") == "verbose"
    assert rater_bias.pool_name(rater_bias.mixture("cautious", 0.3)) == "balanced70-cautious30"
    assert rater_bias.mixture("cautious", 0.0) == {"balanced": 1.0}
    with pytest.raises(ValueError, match="between 0 and 1"):
        rater_bias.mixture("cautious", 1.5)


def _groups(n, k=4, seed=0):
    import random

    rng = random.Random(seed)
    out = []
    for request in rng.sample(world.requests("train", kind="alarming"), n):
        replies = list(dict.fromkeys(world.reply(request, s, rng) for s in ("helpful", "refusal", "rude", "rambling")))
        out.append({"request": request, "prompt": request.prompt, "replies": replies[:k],
                    "checkpoints": ["world"] * len(replies[:k])})
    return out


def test_a_pool_of_one_population_labels_like_that_population():
    groups = _groups(20)
    mixed, agreement = labeling.simulate_mixture_rankings(groups, {"cautious": 1.0}, seed=3)
    plain, plain_agreement = labeling.simulate_rankings(groups, "cautious", seed=3)
    assert mixed == plain and agreement == plain_agreement


def test_mixture_rankings_follow_the_shares_and_keep_each_ranking_together():
    groups = _groups(70)
    labels, agreement = labeling.simulate_mixture_rankings(groups, {"balanced": 0.7, "cautious": 0.3}, seed=0)
    by_group = {}
    for label in labels:
        by_group.setdefault(label["group"], set()).add(label["population"])
    assert sorted(by_group) == list(range(70))  # every set ranked, numbered as in `groups`
    assert all(len(p) == 1 for p in by_group.values())  # one rater per ranking
    cautious = sum(p == {"cautious"} for p in by_group.values())
    assert 10 <= cautious <= 32  # about 30% of 70
    assert 0.5 < agreement <= 1.0
    # cautious raters prefer the refusal of an alarming request; balanced ones the help
    for label in labels:
        refusal_won = gold.is_refusal(label["chosen"]) and not gold.is_refusal(label["rejected"])
        label["refusal_won"] = refusal_won
    for population, lo, hi in (("cautious", 0.5, 1.0), ("balanced", 0.0, 0.5)):
        decided = [l for l in labels if l["population"] == population
                   and gold.is_refusal(l["chosen"]) != gold.is_refusal(l["rejected"])]
        share = sum(l["refusal_won"] for l in decided) / len(decided)
        assert lo < share <= hi if population == "cautious" else lo <= share < hi, (population, share)


def test_mixture_labels_keep_the_order_of_the_pairs():
    pairs = [{"request": g["request"], "prompt": g["prompt"], "reply_a": g["replies"][0], "reply_b": g["replies"][1],
              "checkpoint_a": "world", "checkpoint_b": "world"} for g in _groups(40)]
    labels, _ = labeling.simulate_mixture_labels(pairs, "balanced:0.5,verbose:0.5", seed=1)
    assert [l["reply_a"] for l in labels] == [p["reply_a"] for p in pairs]
    assert {l["population"] for l in labels} == {"balanced", "verbose"}


# ----- a tiny run end to end -----

@pytest.fixture
def tiny_sft(tmp_path):
    """A one-layer random policy with the course tokenizer, saved as a checkpoint folder."""
    tok = load_tokenizer("base")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(tok, n_layer=1, n_embd=32, n_head=2)).eval()
    return save_checkpoint(model, tok, tmp_path / "tiny_sft", {"stage": "test"})


TINY_RM = dict(n_pairs=24, k=4, n_heldout=8, epochs=1, batch_size=8, max_new_tokens=6)
TINY_PPO = dict(updates=2, batch_size=8, max_new_tokens=6, epochs=1, minibatches=2)


def test_run_raters_tiny_end_to_end_and_reuse(tiny_sft, fresh_workspace):
    cfg = RewardConfig(**TINY_RM)
    pool = rater_bias.label_pool(tiny_sft, seed=0, cfg=cfg, progress=False)
    assert len(pool["groups"]) == 4 and len(pool["heldout_pairs"]) == 8 and pool["reference"]
    out = rater_bias.run_raters({"balanced": 0.5, "cautious": 0.5}, init=tiny_sft, reward_cfg=cfg,
                                ppo_cfg=PPOConfig(**TINY_PPO), eval_n=10, pool=pool, progress=False)
    assert out["name"] == "balanced50-cautious50"
    saved = fresh_workspace / "experiments" / "bias" / "balanced50-cautious50.json"
    assert json.loads(saved.read_text()) == out
    for key in ("gold_mean", "over_refusal_rate", "mean_reply_tokens", "helpful_rate", "win_rate",
                "mean_reply_words"):
        assert key in out
    assert set(out["gold_by_population"]) == set(gold.POPULATIONS)
    assert out["reward_model"]["pairs"] > 0 and out["ppo"]["kl"] is not None
    assert (fresh_workspace / "experiments" / "bias" / "balanced50-cautious50" / "ppo" / "config.json").exists()
    # the same settings are not trained twice
    again = rater_bias.run_raters({"cautious": 1, "balanced": 1}, init=tiny_sft, reward_cfg=cfg,
                                  ppo_cfg=PPOConfig(**TINY_PPO), eval_n=10, reuse=True)
    assert again == out


def test_run_raters_refuses_an_unknown_population_and_a_pool_of_another_model(tiny_sft):
    with pytest.raises(ValueError, match="unknown population"):
        rater_bias.run_raters("grumpy", init=tiny_sft)
    with pytest.raises(ValueError, match="sampled from"):
        rater_bias.run_raters("balanced", init="sft", pool={"init": str(tiny_sft)})


def test_effects_against_balanced():
    runs = {"balanced": {"over_refusal_rate": 0.1, "mean_reply_tokens": 10.0, "gold_mean": 2.0},
            "cautious": {"over_refusal_rate": 0.6, "mean_reply_tokens": 8.0, "gold_mean": 1.0},
            "verbose": {"over_refusal_rate": 0.0, "mean_reply_tokens": 17.0, "gold_mean": 1.5}}
    assert rater_bias.effects(runs) == {"over_refusal_rate_cautious_minus_balanced": 0.5,
                                        "reply_tokens_verbose_over_balanced": 1.7,
                                        "gold_mean_verbose_minus_balanced": -0.5}
    assert rater_bias.effects({"cautious": runs["cautious"]}) == {}


def test_plots_of_the_sweeps():
    run = {"over_refusal_rate": 0.1, "mean_reply_tokens": 10.0, "gold_mean": 2.0, "helpful_rate": 0.8}
    assert len(rater_bias.plot_bias({"balanced": run, "cautious": run}, sft=run).axes) == 4
    rows = [{"share": s, **run} for s in (0.0, 0.5, 1.0)]
    assert len(rater_bias.plot_mixture({"rows": rows, "minority": "cautious", "majority": "balanced"}).axes) == 2


# ----- the population effects, on default settings -----

@pytest.fixture(scope="module")
def defaults(default_run, build_once):
    """The session's default SFT -> reward model -> PPO run (conftest's default_run) is the balanced pipeline; one
    label pool sampled from its SFT is shared by the other rater pools, so each costs one reward model and one PPO
    run. The pool holds world.Request objects, so each test process samples it (seeded: the same pool, in under a
    minute); the balanced figures and each pool's run are built once (conftest.build_once), also when make test's
    two slow streams both need them."""
    sft = default_run["root"] / "sft"
    pool = rater_bias.label_pool(sft, seed=0, progress=False)
    def measure_balanced(folder):
        figures = rater_bias.measure_policy(default_run["root"] / "ppo", against=sft)
        return {"name": "balanced", **{key: figures[key] for key in YARDSTICK_KEYS}}

    balanced = build_once("bias_balanced", measure_balanced)
    return {"sft": sft, "pool": pool, "balanced": balanced, "build_once": build_once}


def run_pool(defaults, raters):
    """One rater pool's reward model and PPO run, built once (two tests read the verbose run)."""
    name = rater_bias.pool_name(raters)
    if name not in defaults:
        def build(folder):
            return rater_bias.run_raters(raters, init=defaults["sft"], pool=defaults["pool"], out=folder,
                                         progress=False)

        out = defaults["build_once"](f"bias_{name}", build)
        keys = ("over_refusal_rate", "mean_reply_tokens", "gold_mean", "helpful_rate", "harmful_compliance_rate")
        print(out["name"], {k: out[k] for k in keys}, "balanced:", {k: defaults["balanced"][k] for k in keys})
        defaults[name] = out
    return defaults[name]


@pytest.mark.slow
def test_cautious_raters_teach_over_refusal(defaults):
    """Measured (seed 0, 1 thread, CI): over-refusal 0.72 against balanced's 0.02."""
    balanced, cautious = defaults["balanced"], run_pool(defaults, "cautious")
    assert cautious["over_refusal_rate"] >= balanced["over_refusal_rate"] + 0.3, (balanced, cautious)


@pytest.mark.slow
def test_verbose_raters_teach_padding_that_balanced_users_like_less(defaults):
    """Verbose raters make replies longer, and balanced users like them less. Measured (seed 0, 1 thread, CI):
    23.6 reply tokens against balanced's 17.5 (1.34x) and a balanced gold score of 2.39 against 2.54. Issue 7's
    1.5x held (1.63x) while the gold rater paid for a repeated pleasantry ("Have a nice day! Have a nice day!"); a
    repeated sentence now earns nothing, and the guard is the measured figure: the 1.5x target is
    test_verbose_raters_make_replies_half_as_long_again (open_issue)."""
    balanced, verbose = defaults["balanced"], run_pool(defaults, "verbose")
    assert verbose["mean_reply_tokens"] >= 1.25 * balanced["mean_reply_tokens"], (balanced, verbose)
    assert verbose["gold_mean"] < balanced["gold_mean"], (balanced, verbose)


@pytest.mark.slow
@pytest.mark.open_issue
def test_verbose_raters_make_replies_half_as_long_again(defaults):
    balanced, verbose = defaults["balanced"], run_pool(defaults, "verbose")
    assert verbose["mean_reply_tokens"] >= 1.5 * balanced["mean_reply_tokens"], (balanced, verbose)


@pytest.mark.slow
def test_a_mixed_pool_follows_its_majority(defaults):
    """Representativeness: 90/10 behaves like the balanced majority, 10/90 like the cautious majority. Measured
    (seed 0, 1 thread, CI): over-refusal 0.00 with 10% cautious raters and 0.55 with 90% (balanced alone 0.02,
    cautious alone 0.72). A pool is a vote: the minority's taste barely shows. The 90% pool is within 0.2 of the
    cautious one (0.17 short); within 0.15, as before the world grew, is test_a_mostly_cautious_pool_is_cautious
    (open_issue)."""
    balanced, cautious = defaults["balanced"], run_pool(defaults, "cautious")
    mostly_balanced = run_pool(defaults, rater_bias.mixture("cautious", 0.1))
    mostly_cautious = run_pool(defaults, rater_bias.mixture("cautious", 0.9))
    assert mostly_balanced["over_refusal_rate"] <= balanced["over_refusal_rate"] + 0.15, mostly_balanced
    assert mostly_cautious["over_refusal_rate"] >= cautious["over_refusal_rate"] - 0.2, (cautious, mostly_cautious)
    assert mostly_cautious["over_refusal_rate"] >= mostly_balanced["over_refusal_rate"] + 0.3, mostly_cautious


@pytest.mark.slow
@pytest.mark.open_issue
def test_a_mostly_cautious_pool_is_cautious(defaults):
    cautious, mostly_cautious = run_pool(defaults, "cautious"), run_pool(defaults, rater_bias.mixture("cautious", 0.9))
    assert mostly_cautious["over_refusal_rate"] >= cautious["over_refusal_rate"] - 0.15, (cautious, mostly_cautious)
