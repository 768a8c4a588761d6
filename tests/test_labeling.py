"""Pairs for labelling and simulated raters: coverage of pair types, determinism, Bradley-Terry choices, the store."""

import json
import random

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_lessons import gold, labeling, world
from rlhf_lessons.models import save_checkpoint, tiny_config
from rlhf_lessons.store import PreferenceStore, read_label_file


@pytest.fixture
def two_policies(base_tokenizer):
    """Two random one-layer policies: they babble, so their replies almost never coincide."""
    out = []
    for seed, name in ((0, "p"), (1, "q")):
        torch.manual_seed(seed)
        out.append((GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2)).eval(),
                    base_tokenizer, name))
    return out


@pytest.fixture
def mute_policy(base_tokenizer):
    """A policy that always says nothing (EOS at once): every pair of its own replies is identical."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2)).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the embeddings: zero them all, then favour EOS through the last LN
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[base_tokenizer.eos_token_id, 0] = 50.0
    return model, base_tokenizer, "mute"


def test_pair_types_cover_every_combination():
    assert labeling.pair_types(["sft", "base"]) == [("sft", "sft"), ("sft", "base"), ("base", "base")]
    assert len(labeling.pair_types(["sft", "base", "ppo"])) == 6


def test_sample_pairs_mixes_policies_and_is_seeded(two_policies):
    pairs = labeling.sample_pairs(30, two_policies, seed=0, max_new_tokens=8, progress=False)
    assert len(pairs) == 30
    train_prompts = {r.prompt for r in world.requests("train")}
    for p in pairs:
        assert p["reply_a"] != p["reply_b"]
        assert p["prompt"] in train_prompts and p["request"].prompt == p["prompt"]
        assert {p["checkpoint_a"], p["checkpoint_b"]} <= {"p", "q"}
    kinds = {frozenset((p["checkpoint_a"], p["checkpoint_b"])) for p in pairs}
    assert kinds == {frozenset({"p"}), frozenset({"q"}), frozenset({"p", "q"})}
    mixed = [p for p in pairs if p["checkpoint_a"] != p["checkpoint_b"]]
    assert {p["checkpoint_a"] for p in mixed} == {"p", "q"}  # either policy can be reply A
    again = labeling.sample_pairs(30, two_policies, seed=0, max_new_tokens=8, progress=False)
    assert [(p["reply_a"], p["reply_b"]) for p in again] == [(p["reply_a"], p["reply_b"]) for p in pairs]
    other = labeling.sample_pairs(30, two_policies, seed=1, max_new_tokens=8, progress=False)
    assert [p["reply_a"] for p in other] != [p["reply_a"] for p in pairs]


def test_sample_pairs_heldout_split(two_policies):
    pairs = labeling.sample_pairs(10, two_policies, seed=0, max_new_tokens=4, split="heldout", progress=False)
    heldout = {r.prompt for r in world.requests("heldout")}
    assert all(p["prompt"] in heldout for p in pairs)


def test_identical_replies_are_skipped(two_policies, mute_policy):
    model, tok, _ = mute_policy
    from rlhf_lessons.sampling import sample_in_batches
    assert set(sample_in_batches(model, tok, ["Hello!"] * 4, max_new_tokens=4)) == {""}
    pairs = labeling.sample_pairs(12, [mute_policy, two_policies[0]], seed=0, max_new_tokens=6, progress=False)
    assert len(pairs) == 12 and all(p["reply_a"] != p["reply_b"] for p in pairs)
    assert not any(p["checkpoint_a"] == p["checkpoint_b"] == "mute" for p in pairs)
    with pytest.raises(RuntimeError, match="different replies"):
        labeling.sample_pairs(3, [mute_policy], seed=0, max_new_tokens=4, progress=False)


def test_policies_must_be_names_or_tuples():
    with pytest.raises(ValueError, match="checkpoint name/path or a"):
        labeling.sample_pairs(2, [42], progress=False)


def _pairs_from_world(n, seed=0, kinds=("fact", "alarming", "harmful")):
    rng = random.Random(seed)
    pool = [r for r in world.requests("train") if r.kind in kinds]
    out = []
    for _ in range(n):
        r = rng.choice(pool)
        styles = ["refusal", "rambling", "rude"] + (["comply"] if r.kind == "harmful" else ["helpful", "wrong"])
        a, b = rng.sample(styles, 2)
        out.append({"request": r, "prompt": r.prompt, "reply_a": world.reply(r, a, rng),
                    "reply_b": world.reply(r, b, rng), "checkpoint_a": "world", "checkpoint_b": "world"})
    return out


def test_simulate_labels_follow_bradley_terry():
    pairs = _pairs_from_world(400)
    labels, agreement = labeling.simulate_labels(pairs, "balanced", seed=0)
    assert len(labels) == 400
    for label in labels:
        ga = gold.gold_score(label["request"], label["reply_a"])
        assert label["gold_a"] == ga
        assert label["p_a"] == pytest.approx(gold.preference_probability(ga, label["gold_b"]))
        a_won = label["choice"] == "A"
        assert (label["chosen"], label["rejected"]) == ((label["reply_a"], label["reply_b"]) if a_won
                                                        else (label["reply_b"], label["reply_a"]))
    # the share of A choices matches the mean probability (400 draws: within ~4 standard errors)
    share = sum(l["choice"] == "A" for l in labels) / 400
    assert share == pytest.approx(sum(l["p_a"] for l in labels) / 400, abs=0.1)
    # agreement with the noiseless preference is close to, and in expectation equal to, the noise ceiling
    ceiling = gold.noise_ceiling([(l["gold_a"], l["gold_b"]) for l in labels])
    assert agreement == pytest.approx(ceiling, abs=0.06)
    assert agreement == labeling.agreement_with_gold(labels, "balanced")
    again, _ = labeling.simulate_labels(pairs, "balanced", seed=0)
    assert [l["choice"] for l in again] == [l["choice"] for l in labels]


def test_noiseless_raters_always_agree_with_gold():
    pairs = [p for p in _pairs_from_world(100) if gold.gold_score(p["request"], p["reply_a"])
             != gold.gold_score(p["request"], p["reply_b"])]
    labels, agreement = labeling.simulate_labels(pairs, "balanced", seed=0, noise=1e-4)
    assert agreement == 1.0


def test_cautious_labels_disagree_with_balanced_gold_on_alarming_requests():
    rng = random.Random(0)
    pairs = []
    for r in world.requests("train", kind="alarming")[:60]:
        pairs.append({"request": r, "prompt": r.prompt, "reply_a": world.reply(r, "helpful", rng),
                      "reply_b": world.reply(r, "refusal", rng), "checkpoint_a": "w", "checkpoint_b": "w"})
    labels, own = labeling.simulate_labels(pairs, "cautious", seed=0)
    assert own > 0.7  # cautious raters agree with their own taste ...
    assert labeling.agreement_with_gold(labels, "balanced") < 0.3  # ... which is not the balanced one


def test_unknown_population_is_refused():
    with pytest.raises(ValueError, match="unknown population"):
        labeling.simulate_labels(_pairs_from_world(2), "grumpy")
    with pytest.raises(ValueError, match="unknown population"):
        labeling.label("grumpy", 2)


def test_label_fills_the_store_and_a_jsonl_file(tmp_path, base_tokenizer):
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2))
    path = save_checkpoint(policy, base_tokenizer, tmp_path / "policy", {"stage": "test"})
    store = PreferenceStore(tmp_path / "prefs.sqlite")
    out = labeling.label("cautious", 9, policy=str(path), seed=0, store=store, out=tmp_path / "labels.jsonl",
                         max_new_tokens=6)
    assert out["pairs"] == 9 and out["new_in_store"] == 9 and out["population"] == "cautious"
    assert 0.0 <= out["agreement_with_gold"] <= 1.0 and out["out"] == str(tmp_path / "labels.jsonl")
    rows = store.labels()
    assert len(rows) == 9
    assert {r["rater"] for r in rows} == {"sim-cautious"} and {r["source"] for r in rows} == {"simulated"}
    assert {r["population"] for r in rows} == {"cautious"}
    assert {r["checkpoint"] for r in rows} <= {str(path), "base", f"{path},base", f"base,{path}"}
    assert len(store.pairs(population="cautious")) == 9
    lines = read_label_file(tmp_path / "labels.jsonl")  # the store's own validator accepts the file
    assert len(lines) == 9 and lines[0]["rater"] == "sim-cautious"
    stored = {(p["prompt"], p["chosen"], p["rejected"]) for p in store.pairs()}
    assert {(p["prompt"], p["chosen"], p["rejected"]) for p in lines} == stored
    assert json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])["source"] == "simulated"
    # labelling the same pairs again adds nothing new
    assert labeling.label("cautious", 9, policy=str(path), seed=0, store=store, max_new_tokens=6)["new_in_store"] == 0


# ----- rankings -----


def test_sample_rankings_sets_of_distinct_replies_from_every_policy(two_policies):
    sets = labeling.sample_rankings(12, 4, two_policies, seed=0, max_new_tokens=8, progress=False)
    assert len(sets) == 12
    for s in sets:
        assert 2 <= len(s["replies"]) <= 4 and len(set(s["replies"])) == len(s["replies"])
        assert len(s["checkpoints"]) == len(s["replies"]) and s["request"].prompt == s["prompt"]
    assert sum(set(s["checkpoints"]) == {"p", "q"} for s in sets) >= 10  # slots alternate between the policies
    again = labeling.sample_rankings(12, 4, two_policies, seed=0, max_new_tokens=8, progress=False)
    assert [s["replies"] for s in again] == [s["replies"] for s in sets]
    with pytest.raises(ValueError, match="k >= 2"):
        labeling.sample_rankings(1, 1, two_policies, progress=False)


def _ranking_set(seed=0):
    rng = random.Random(seed)
    r = next(r for r in world.requests("train", kind="fact") if r.subject == "egg")
    replies = [world.reply(r, style, rng) for style in ("helpful", "wrong", "rude", "rambling")]
    return {"request": r, "prompt": r.prompt, "replies": replies, "checkpoints": ["w"] * 4}


def test_simulate_rankings_gives_all_pairs_of_a_consistent_order():
    labels, agreement = labeling.simulate_rankings([_ranking_set()], "balanced", seed=0)
    assert len(labels) == 6  # C(4, 2)
    order = labels[0]["order"]
    replies = _ranking_set()["replies"]
    rank = {replies[i]: position for position, i in enumerate(order)}
    for label in labels:
        assert rank[label["chosen"]] < rank[label["rejected"]]  # the chosen reply is ranked higher
        assert {label["reply_a"], label["reply_b"]} == {label["chosen"], label["rejected"]}
        assert label["group"] == 0
    assert 0 <= agreement <= 1
    pairs = labeling.training_pairs(labels)
    assert all(p["group"] == 0 for p in pairs)


def test_each_pair_of_a_simulated_ranking_follows_bradley_terry():
    """Gumbel-perturbed rankings: every pair inside is won with probability sigmoid((g_a - g_b) / noise)."""
    r = next(r for r in world.requests("train", kind="fact") if r.subject == "rice")
    replies = ["Rice takes about twenty minutes to cook.", "Rice takes about twenty minutes to cook. Good luck!",
               "Sure! Rice takes about twenty minutes to cook. Hope this helps!"]
    group = {"request": r, "prompt": r.prompt, "replies": replies, "checkpoints": ["w"] * 3}
    scores = [gold.gold_score(r, t) for t in replies]
    wins = {(i, j): 0 for i in range(3) for j in range(3) if i != j}
    n = 3000
    for seed in range(n):
        labels, _ = labeling.simulate_rankings([group], "balanced", seed=seed)
        for label in labels:
            wins[(replies.index(label["chosen"]), replies.index(label["rejected"]))] += 1
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        want = gold.preference_probability(scores[i], scores[j])
        assert wins[(i, j)] / n == pytest.approx(want, abs=0.03), (i, j, want)
