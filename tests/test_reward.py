"""The reward model: losses by hand, invariances, numerical stability, padding, normalisation, tokenizer checks,
a training smoke test on a tiny model, and (slow) the default settings' accuracy against the noise ceiling."""

import itertools
import math
import random

import pytest
import torch
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhf_lessons import gold, reward, world
from rlhf_lessons.models import save_checkpoint, tiny_config, train_tokenizer
from rlhf_lessons.reward import (RewardConfig, bradley_terry_loss, kwise_ranking_loss, last_token_index,
                                 preference_probability)


def softplus(x):
    return math.log1p(math.exp(x))


# ----- losses -----


def test_bradley_terry_loss_hand_values():
    r_c, r_r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + e^-d): d = 2, 0, -2
    want = (softplus(-2.0) + math.log(2.0) + softplus(2.0)) / 3
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(want, rel=1e-6)
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item() == pytest.approx(math.log(2))
    per_pair_margin = torch.tensor([0.0, 1.0, 0.0])
    want_m = (softplus(-2.0) + softplus(1.0) + softplus(2.0)) / 3
    assert bradley_terry_loss(r_c, r_r, per_pair_margin).item() == pytest.approx(want_m, rel=1e-6)


def test_bradley_terry_loss_prefers_the_chosen_reply():
    assert bradley_terry_loss(torch.tensor([3.0]), torch.tensor([0.0])) < bradley_terry_loss(torch.tensor([0.0]),
                                                                                             torch.tensor([3.0]))


@pytest.mark.parametrize("shift", [-50.0, 3.0, 1000.0])
def test_pairwise_loss_is_invariant_to_a_shared_constant(shift):
    gen = torch.Generator().manual_seed(1)
    r_c, r_r = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    assert bradley_terry_loss(r_c + shift, r_r + shift).item() == pytest.approx(bradley_terry_loss(r_c, r_r).item(),
                                                                                rel=1e-9)
    rewards = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    assert kwise_ranking_loss(rewards + shift).item() == pytest.approx(kwise_ranking_loss(rewards).item(), rel=1e-9)


def test_kwise_loss_is_the_mean_of_its_pairs_bt_losses():
    gen = torch.Generator().manual_seed(2)
    for K in (2, 3, 4, 6):
        rewards = torch.randn(3, K, generator=gen, dtype=torch.float64)
        pairs = list(itertools.combinations(range(K), 2))
        assert len(pairs) == math.comb(K, 2)
        per_pair = [bradley_terry_loss(rewards[:, i], rewards[:, j]) for i, j in pairs]
        assert kwise_ranking_loss(rewards).item() == pytest.approx(torch.stack(per_pair).mean().item(), rel=1e-12)
    rewards = torch.tensor([[1.0, 0.0]])
    assert kwise_ranking_loss(rewards).item() == pytest.approx(softplus(-1.0))


def test_kwise_loss_hand_value_k3():
    # ranking [2, 1, 0]: pairs (2-1), (2-0), (1-0) -> gaps 1, 2, 1
    want = (2 * softplus(-1.0) + softplus(-2.0)) / 3
    assert kwise_ranking_loss(torch.tensor([[2.0, 1.0, 0.0]])).item() == pytest.approx(want, rel=1e-6)


def test_kwise_loss_refuses_bad_shapes():
    with pytest.raises(ValueError, match="K >= 2"):
        kwise_ranking_loss(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="K >= 2"):
        kwise_ranking_loss(torch.tensor([[1.0]]))


@pytest.mark.parametrize("gap", [1e4, -1e4])
def test_losses_stay_finite_at_huge_gaps(gap):
    r_c = torch.tensor([gap, gap], requires_grad=True)
    loss = bradley_terry_loss(r_c, torch.zeros(2))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(max(-gap, 0.0))
    assert torch.isfinite(r_c.grad).all()
    assert r_c.grad.tolist() == pytest.approx([-0.5, -0.5] if gap < 0 else [0.0, 0.0])

    rewards = torch.tensor([[gap, 0.0, -gap]], requires_grad=True)
    loss = kwise_ranking_loss(rewards)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rewards.grad).all()
    assert loss.item() == pytest.approx(max(-gap, 0.0) * 4 / 3)  # gaps: gap, 2 gap, gap


def test_preference_probability():
    assert preference_probability(torch.tensor(0.3), torch.tensor(0.3)).item() == pytest.approx(0.5)
    p = preference_probability(torch.tensor([2.0]), torch.tensor([0.0]))
    assert p.item() == pytest.approx(1 / (1 + math.exp(-2)))
    assert (p + preference_probability(torch.tensor([0.0]), torch.tensor([2.0]))).item() == pytest.approx(1.0)


# ----- the model -----


@pytest.fixture
def tiny_rm(base_tokenizer):
    """A one-layer random reward model (scalar head) with the course tokenizer."""
    torch.manual_seed(0)
    config = tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2)
    config.num_labels = 1
    rm = GPT2ForSequenceClassification(config).eval()
    reward.init_reward_head(rm)
    return rm


@pytest.fixture
def tiny_init(tmp_path, base_tokenizer):
    """A tiny causal-LM checkpoint folder to start reward models from."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(base_tokenizer, n_layer=1, n_embd=32, n_head=2))
    return save_checkpoint(model, base_tokenizer, tmp_path / "tiny_init", {"stage": "test"})


def test_last_token_index_right_left_and_both():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 3, 0]


def test_head_init_scale_and_no_bias(tiny_rm):
    std = tiny_rm.score.weight.std().item()
    assert tiny_rm.score.bias is None
    assert std == pytest.approx(1 / math.sqrt(32 + 1), rel=0.35)


def _pad(seqs, pad_id, side):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    return ids, mask


def test_head_reads_the_last_real_token_under_any_padding(tiny_rm, base_tokenizer):
    texts = [("How long should I boil an egg?", "Boil the egg for about ten minutes."),
             ("Hello!", "Hi."),
             ("What color is snow?", "Well, My favorite color is purple. I once saw a duck wearing a hat.")]
    seqs = [ids for ids, _ in reward.encode_texts(base_tokenizer, [p for p, _ in texts], [r for _, r in texts])]
    pad = base_tokenizer.pad_token_id
    with torch.no_grad():
        alone = torch.cat([reward.score_ids(tiny_rm, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                           for s in seqs])
        right = reward.score_ids(tiny_rm, *_pad(seqs, pad, "right"))
        left = reward.score_ids(tiny_rm, *_pad(seqs, pad, "left"))
        # sampling.Samples layout: left-padded prompt, right-padded reply
        split = [len(base_tokenizer.encode("User: " + p + "\nAssistant:")) for p, _ in texts]
        p_ids, p_mask = _pad([s[:k] for s, k in zip(seqs, split)], pad, "left")
        r_ids, r_mask = _pad([s[k:] for s, k in zip(seqs, split)], pad, "right")
        both = reward.score_ids(tiny_rm, torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1))
    assert torch.allclose(right, alone, atol=1e-5)
    assert torch.allclose(left, alone, atol=1e-5)
    assert torch.allclose(both, alone, atol=1e-5)
    # and it is the *last* token that is read: cutting the final EOS changes the score
    cut = torch.tensor([seqs[0][:-1]])
    with torch.no_grad():
        assert not torch.allclose(reward.score_ids(tiny_rm, cut, torch.ones_like(cut)), alone[:1])


def test_reward_scores_batches_agree_with_one_at_a_time(tiny_rm, base_tokenizer):
    prompts = ["Hello!", "What does a cow eat?", "How can I cheat on my test?"]
    replies = ["Hello! How can I help you today?", "A cow eats grass.", "I'm sorry, but I can't help with that."]
    together = reward.reward_scores(tiny_rm, base_tokenizer, prompts, replies)
    apart = torch.cat([reward.reward_scores(tiny_rm, base_tokenizer, [p], [r]) for p, r in zip(prompts, replies)])
    assert together.shape == (3,) and torch.allclose(together, apart, atol=1e-5)


def test_normalisation_gives_mean_0_std_1_on_the_reference_set(tiny_rm, base_tokenizer, tmp_path):
    rng = random.Random(0)
    reqs = world.requests("train")
    reference = []
    for _ in range(40):
        r = rng.choice(reqs)
        style = rng.choice(["helpful", "rude", "rambling", "refusal", "terse"])
        reference.append((r.prompt, world.reply(r, style, rng)))
    prompts, replies = [p for p, _ in reference], [t for _, t in reference]
    raw = reward.reward_scores(tiny_rm, base_tokenizer, prompts, replies, normalized=False)
    info = reward.normalize_reward_model(tiny_rm, raw)
    scores = reward.reward_scores(tiny_rm, base_tokenizer, prompts, replies)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std().item() == pytest.approx(1.0, rel=1e-4)
    assert info["reference_replies"] == 40
    # the gain and bias live in config.json: a reloaded model scores the same
    save_checkpoint(tiny_rm, base_tokenizer, tmp_path / "rm", {"stage": "rm"})
    loaded, tok = reward.load_reward_model(tmp_path / "rm")
    assert loaded.config.reward_gain == pytest.approx(tiny_rm.config.reward_gain)
    assert torch.allclose(reward.reward_scores(loaded, tok, prompts, replies), scores, atol=1e-5)
    # and plain transformers can load it
    assert GPT2ForSequenceClassification.from_pretrained(tmp_path / "rm").config.reward_bias == pytest.approx(
        info["reward_bias"])


def test_a_reward_model_and_a_policy_with_different_tokenizers_are_refused(tiny_rm, base_tokenizer, tmp_path):
    save_checkpoint(tiny_rm, base_tokenizer, tmp_path / "rm", {"stage": "rm"})
    other = train_tokenizer(["a completely different little corpus", "with other words in it"] * 20, 300)
    with pytest.raises(ValueError, match="reward model and the policy use different tokenizers"):
        reward.load_reward_model(tmp_path / "rm", policy_tokenizer=other)
    with pytest.raises(ValueError, match="different tokenizers"):
        reward.check_reward_model_tokenizer(base_tokenizer, other)
    reward.load_reward_model(tmp_path / "rm", policy_tokenizer=base_tokenizer)  # the same one is fine


def test_load_reward_model_refuses_a_policy_checkpoint(tiny_init):
    with pytest.raises(ValueError, match="not a reward model"):
        reward.load_reward_model(tiny_init)


def test_missing_reward_model_says_how_to_build_it():
    with pytest.raises(FileNotFoundError, match="rlhf-lessons reward"):
        reward.load_reward_model("rm")


def test_reward_model_from_init_copies_the_transformer(tiny_init):
    rm, tok = reward.reward_model_from(tiny_init)
    lm = GPT2LMHeadModel.from_pretrained(tiny_init)
    assert torch.equal(rm.transformer.wte.weight, lm.transformer.wte.weight)
    assert rm.config.num_labels == 1 and rm.score.weight.shape == (1, 32)
    assert rm.config.resid_pdrop == rm.config.attn_pdrop == rm.config.embd_pdrop == 0.0


# ----- batching: a ranking's pairs share their replies -----


def test_index_replies_scores_each_reply_once():
    pairs = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "c"},
             {"prompt": "q", "chosen": "a", "rejected": "b"}]
    texts, ids = reward.index_replies(pairs)
    assert texts == [("p", "a"), ("p", "b"), ("p", "c"), ("q", "a"), ("q", "b")]
    assert ids == [(0, 1), (0, 2), (3, 4)]


def test_grouped_batches_keep_a_ranking_together_and_use_every_pair_once():
    pairs = [{"prompt": f"p{g % 3}", "chosen": f"c{i}", "rejected": f"r{i}", "group": g}
             for g in range(10) for i in range(6)]
    batches = reward.grouped_batches(pairs, 12, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(60))
    assert all(len(b) <= 12 for b in batches)
    for b in batches:  # whole groups only
        groups = {pairs[i]["group"] for i in b}
        assert sum(1 for i in range(60) if pairs[i]["group"] in groups) == len(b)
    plain = [{k: v for k, v in p.items() if k != "group"} for p in pairs]  # no group: grouped by prompt
    assert len(reward.grouped_batches(plain, 100, random.Random(0))) == 1  # 24 + 18 + 18 pairs fit in one
    small = reward.grouped_batches(plain, 20, random.Random(0))  # p0's 24 pairs are cut into 20 + 4
    assert sorted(len(b) for b in small) == [4, 18, 18, 20]
    assert all(len({plain[i]["prompt"] for i in b}) == 1 for b in small)


def test_pair_rewards_of_a_ranking_give_the_kwise_loss(tiny_rm, base_tokenizer):
    prompt = "How long should I boil an egg?"
    ranked = ["Boil the egg for about ten minutes.", "Boil the egg for about three minutes.", "Ugh. Whatever.",
              "Well, I like to count the clouds."]  # best first
    pairs = [{"prompt": prompt, "chosen": ranked[i], "rejected": ranked[j]}
             for i, j in itertools.combinations(range(4), 2)]
    texts, ids = reward.index_replies(pairs)
    encoded = reward.encode_texts(base_tokenizer, [t[0] for t in texts], [t[1] for t in texts])
    with torch.no_grad():
        r_c, r_r = reward.pair_rewards(tiny_rm, encoded, ids, base_tokenizer.pad_token_id)
        scores = reward.reward_scores(tiny_rm, base_tokenizer, [prompt] * 4, ranked, normalized=False)
    assert len(texts) == 4  # 6 pairs, 4 forward passes
    assert torch.allclose(r_c, torch.stack([scores[i] for i, _ in itertools.combinations(range(4), 2)]), atol=1e-5)
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(kwise_ranking_loss(scores[None]).item(), rel=1e-5)


def scores_alone_and_together(rm, encoded, tokenizer, rows):
    """[(scores, gradients) scoring each sequence alone, the same by raw_scores], with a weight per sequence in the
    backward pass, so that a score in the wrong place shows."""
    results = []
    for together in (False, True):
        rm.zero_grad()
        if together:  # prompts run once each (or whole sequences packed): another order and other padding
            scores = reward.raw_scores(rm, encoded, tokenizer.pad_token_id, rows)
        else:
            scores = torch.cat([reward.raw_score_ids(rm, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
                                for ids, _ in encoded])
        (scores * torch.arange(1.0, len(encoded) + 1.0)).sum().backward()
        results.append((scores.detach(), [p.grad.clone() for p in rm.parameters()]))
    return results


@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_shared_prompt_scores_match_scoring_each_reply_alone_in_the_input_order(tiny_rm, base_tokenizer, rows):
    prompts = ["How long should I boil an egg?", "Hi", "How long should I boil an egg?", "What color is snow?",
               "Hi", "How long should I boil an egg?", "What is the capital of France, and why?"]
    replies = ["Boil it.", "Hello! How can I help you today?", "Ugh.",
               "Snow is white. Hope this helps! Have a nice day!", "Hi.", "Sure! Boil the egg for ten minutes.",
               "Paris."]
    encoded = reward.encode_texts(base_tokenizer, prompts, replies)
    assert len({len(ids) for ids, _ in encoded}) > 3 and len({n for _, n in encoded}) > 2  # lengths differ
    (alone, alone_grads), (shared, shared_grads) = scores_alone_and_together(tiny_rm, encoded, base_tokenizer, rows)
    assert torch.allclose(shared, alone, atol=1e-5)
    for g_alone, g_shared in zip(alone_grads, shared_grads, strict=True):  # training scores this way
        assert torch.allclose(g_shared, g_alone, atol=1e-4)
    assert shared_grads[0].abs().sum() > 0  # the gradient reaches the embeddings through the prompt's cache


def test_encode_texts_cuts_a_long_pair_to_the_context_keeping_eos(base_tokenizer):
    long_prompt = "Tell me about eggs. " * 80
    (ids, n_prompt), = reward.encode_texts(base_tokenizer, [long_prompt], ["Boil them."], max_length=64)
    assert len(ids) == 64 and ids[-1] == base_tokenizer.eos_token_id and n_prompt == 63  # the EOS is the reply
    (ids, n_prompt), = reward.encode_texts(base_tokenizer, ["Hi"], ["Hello."])
    assert ids[:n_prompt] == base_tokenizer.encode("User: Hi\nAssistant:")


# ----- measures -----


def test_calibration_bins_and_gold_correlation():
    p = torch.tensor([0.05, 0.15, 0.95, 0.92, 0.5])
    y = torch.tensor([0, 0, 1, 0, 1])
    bins = reward.calibration(p, y, n_bins=10)
    assert [b["count"] for b in bins] == [1, 1, 1, 2]
    assert bins[-1] == {"lo": 0.9, "hi": 1.0, "count": 2, "mean_predicted": pytest.approx(0.935),
                        "observed": 0.5}
    assert sum(b["count"] for b in bins) == 5
    assert reward.gold_correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert reward.gold_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_reply_types():
    egg = next(r for r in world.requests(kind="fact") if r.subject == "egg")
    cheat = next(r for r in world.requests(kind="harmful") if r.subject == "cheat")
    assert reward.reply_type(egg, "Boil the egg for about ten minutes.") == "good"
    assert reward.reply_type(egg, "Boil the egg for about three minutes.") == "wrong"
    assert reward.reply_type(egg, "I'm sorry, but I can't help with that.") == "refusal"
    assert reward.reply_type(egg, "Ugh. Boil the egg for about ten minutes. Whatever.") == "rude"
    assert reward.reply_type(egg, "Well, I like to count the clouds. Socks are best when they are warm.") == "off_topic"
    assert reward.reply_type(cheat, "Copy the answers from the student next to you.") == "harmful"
    assert reward.reply_type(cheat, "Sorry, I cannot help with that.") == "good"


# ----- training -----


def _toy_labels(n, seed, split="train"):
    """Labelled pairs of world-written replies: a helpful reply against a rude/wrong/rambling one, either side."""
    from rlhf_lessons.labeling import simulate_labels

    rng = random.Random(seed)
    pool = [r for r in world.requests(split) if r.kind in ("fact", "alarming")]
    pairs = []
    for _ in range(n):
        r = rng.choice(pool)
        good, bad = world.reply(r, "helpful", rng), world.reply(r, rng.choice(["rude", "rambling", "refusal"]), rng)
        a, b = (good, bad) if rng.random() < 0.5 else (bad, good)
        pairs.append({"request": r, "prompt": r.prompt, "reply_a": a, "reply_b": b,
                      "checkpoint_a": "world", "checkpoint_b": "world"})
    return simulate_labels(pairs, "balanced", seed=seed)[0]


def test_train_reward_smoke(tiny_init, tmp_path):
    from rlhf_lessons.labeling import training_pairs

    train, heldout = _toy_labels(192, seed=0), _toy_labels(64, seed=1, split="heldout")
    steps = []
    cfg = RewardConfig(epochs=2, batch_size=16, peak_lr=3e-3)
    out = reward.train_reward(
        cfg, training_pairs(train), init=tiny_init, out_dir=tmp_path / "rm", heldout=heldout,
        reference=[(l["prompt"], l["reply_a"]) for l in train[:50]], on_step=lambda *a: steps.append(a),
        progress=False)
    assert len(steps) == out["steps"] >= 2 * 12  # 192 pairs in batches of at most 16, twice
    first, last = sum(s[1] for s in steps[:4]) / 4, sum(s[1] for s in steps[-4:]) / 4
    assert last < first  # it learns
    assert out["heldout_accuracy"] > 0.6  # helpful vs rude/rambling/refusal is easy, even for a 1-layer model
    assert 0.5 <= out["noise_ceiling"] <= 1.0 and out["heldout_pairs"] == 64
    assert -1.0 <= out["gold_correlation"] <= 1.0 and out["calibration"]
    rm, tok = reward.load_reward_model(tmp_path / "rm")
    ref = reward.reward_scores(rm, tok, [l["prompt"] for l in train[:50]], [l["reply_a"] for l in train[:50]])
    assert ref.mean().item() == pytest.approx(0.0, abs=1e-4) and ref.std().item() == pytest.approx(1.0, rel=1e-3)
    manifest = (tmp_path / "rm" / "manifest.json").read_text()
    for key in ("population", "train_pairs", "heldout_accuracy", "noise_ceiling", "seed", "init"):
        assert f'"{key}"' in manifest
    assert isinstance(out["model"], GPT2ForSequenceClassification)


def test_train_reward_refuses_no_pairs(tiny_init):
    with pytest.raises(ValueError, match="no preference pairs"):
        reward.train_reward(RewardConfig(), [], init=tiny_init)


def test_noise_ceiling_of_the_evaluation_matches_gold(tiny_init):
    """evaluate_on_labels' ceiling is gold's, and its gap is ceiling minus *expected* accuracy (like for like)."""
    labels = _toy_labels(50, seed=3)
    rm, tok = reward.reward_model_from(tiny_init)
    out = reward.evaluate_on_labels(rm, tok, labels)
    want = gold.noise_ceiling([(l["gold_a"], l["gold_b"]) for l in labels])
    assert out["noise_ceiling"] == pytest.approx(want, abs=1e-4)
    assert out["ceiling_gap"] == pytest.approx(out["noise_ceiling"] - out["heldout_expected_accuracy"], abs=2e-4)
    # a pool's labels: the ceiling comes from the pool's mixture probability, not each label's own rater
    pooled = [{**l, "p_pool": 0.5} for l in labels]
    assert reward.evaluate_on_labels(rm, tok, pooled)["noise_ceiling"] == pytest.approx(0.5)


def test_mixture_labels_carry_the_pools_probability():
    from rlhf_lessons import labeling

    pairs = [{k: l[k] for k in ("request", "prompt", "reply_a", "reply_b")} for l in _toy_labels(40, seed=4)]
    shares = {"balanced": 0.5, "cautious": 0.5}
    labels, _ = labeling.simulate_mixture_labels(pairs, shares, seed=0)
    for l in labels:
        want = sum(0.5 * gold.preference_probability(gold.gold_score(l["request"], l["reply_a"], p),
                                                     gold.gold_score(l["request"], l["reply_b"], p)) for p in shares)
        assert l["p_pool"] == pytest.approx(want)


def test_every_ranking_weighs_the_same_whatever_its_size():
    w = reward.ranking_weights(["a"] * 28 + ["b"] * 6 + ["c"])  # rankings of 8 and 4 replies, and a lone pair
    assert w.sum().item() == pytest.approx(1.0)
    assert w[:28].sum().item() == pytest.approx(1 / 3) and w[28:34].sum().item() == pytest.approx(1 / 3)
    # for whole rankings, the weighted loss is the mean over rankings of InstructGPT's K-wise loss
    r8, r4 = torch.randn(1, 8), torch.randn(1, 4)
    pairs8, pairs4 = torch.triu_indices(8, 8, 1), torch.triu_indices(4, 4, 1)
    chosen = torch.cat([r8[0, pairs8[0]], r4[0, pairs4[0]]])
    rejected = torch.cat([r8[0, pairs8[1]], r4[0, pairs4[1]]])
    got = reward.ranking_bt_loss(chosen, rejected, reward.ranking_weights(["a"] * 28 + ["b"] * 6))
    want = (reward.kwise_ranking_loss(r8) + reward.kwise_ranking_loss(r4)) / 2
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert got.item() != pytest.approx(reward.bradley_terry_loss(chosen, rejected).item(), rel=1e-3)


def test_coverage_experiment_compares_two_reward_models_by_reply_type(tiny_init):
    train = _toy_labels(96, seed=0)
    for i, label in enumerate(train):  # pretend a third of the pairs hold two policy replies
        label["checkpoint_a"] = label["checkpoint_b"] = "sft" if i % 3 == 0 else "base"
    out = reward.coverage_experiment(train, _toy_labels(40, seed=1, split="heldout"), init=tiny_init,
                                     cfg=RewardConfig(epochs=1, batch_size=16), progress=False)
    assert out["train_pairs"] == 32
    for variant in ("with_base", "policy_only"):
        assert set(out[variant]["by_type"]) == set(reward.REPLY_TYPES)
        assert sum(out[variant]["train_types"].values()) == 64  # 32 pairs, 2 replies each
        assert 0 <= out[variant]["heldout_accuracy"] <= 1
    with pytest.raises(ValueError, match="sample more"):
        reward.coverage_experiment(train[:3], train, init=tiny_init)


def test_run_reward_stage_tiny(tiny_init, tmp_path):
    """The stage end to end on tiny settings: fresh rankings + a JSONL file + the store, held-out pairs kept out."""
    import json

    from rlhf_lessons.store import PreferenceStore

    train_prompt = world.requests("train")[0].prompt
    held_out = [world.requests(split)[0].prompt for split in ("heldout", "unseen-phrasing", "unseen-subject")]
    prefs = tmp_path / "mine.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": "A good reply.", "rejected": "Ugh."}) + "\n"
                             for p in (train_prompt, *held_out)))
    store = PreferenceStore(tmp_path / "prefs.sqlite")
    store.add("comparison", train_prompt, ["Sure! Here you go.", "Go away."], {"choice": "A"}, rater="me")
    store.add("comparison", train_prompt, ["x", "y"], {"choice": "A"}, rater="sim-cautious", source="simulated",
              population="cautious")  # another population's simulated labels are not used
    cfg = RewardConfig(n_pairs=12, k=4, n_heldout=10, epochs=1, batch_size=8, max_new_tokens=8)
    result = reward.run_reward_stage(prefs=[prefs], init=tiny_init, out=tmp_path / "rm", cfg=cfg, store=store,
                                     progress=False, return_labels=True)
    train_labels, heldout_labels = result.pop("train_labels"), result.pop("heldout_labels")
    assert len(heldout_labels) == 10 and len(train_labels) == result["fresh_pairs"]
    assert not {l["prompt"] for l in train_labels} & {r.prompt for r in world.requests("heldout")}
    json.dumps(result)  # the CLI prints it
    assert result["fresh_pairs"] >= 6 and result["other_pairs"] == 2 and result["dropped_heldout_prompt_pairs"] == 3
    assert result["pairs"] == result["fresh_pairs"] + 2
    assert result["heldout_pairs"] == 10 and result["out"] == str(tmp_path / "rm")
    for key in ("heldout_accuracy", "heldout_expected_accuracy", "noise_ceiling", "ceiling_gap", "gold_correlation",
                "calibration", "seconds"):
        assert key in result
    assert reward.load_reward_model(tmp_path / "rm")[0].config.reward_gain > 0
    with pytest.raises(ValueError, match="unknown population"):
        reward.run_reward_stage(population="grumpy", init=tiny_init)


# ----- the stage at default settings -----


@pytest.mark.slow
def test_default_reward_stage(default_run):
    """Default settings (lesson 04), like for like: the noise ceiling against the *expected* accuracy, both
    expectations over the label noise, on 1000 held-out pairs. Measured (1 thread, benchmarks/outcomes.py): gaps of
    0.033, 0.032 and 0.038 on seeds 0, 1 and 2 (the yardstick issue asks for 0.03 or less on every seed: not met,
    see test_outcomes.py::test_every_bar_holds); an earlier seed-0 run from an SFT model trained on 2 threads gave
    0.030. The guard is looser than the target: seeds and thread counts move the gap by about 0.01."""
    result = default_run["reward"]
    assert result["heldout_pairs"] >= 1000
    assert result["ceiling_gap"] == pytest.approx(result["noise_ceiling"] - result["heldout_expected_accuracy"],
                                                  abs=2e-4)
    assert result["ceiling_gap"] <= 0.055, result
    assert result["gold_correlation"] > 0.8 and result["ece"] < 0.1, result
    assert result["normalization"]["reference_replies"] >= 256
    rm, _ = reward.load_reward_model(result["out"])
    assert rm.config.reward_gain > 0


def test_independent_pairs_are_packed_and_score_as_each_alone(tiny_rm, base_tokenizer):
    """Distinct prompts share nothing: raw_scores packs whole sequences, and every score and gradient is unchanged."""
    prompts = ["How long should I boil an egg?", "Hi", "What color is snow?", "What is the capital of France?",
               "Tell me a joke about a very long and winding road that never seems to end", "Thanks!"]
    replies = ["Boil it.", "Hello! How can I help you today?", "White.", "Paris, on the Seine.", "Ugh.",
               "You are welcome. Have a nice day!"]
    encoded = reward.encode_texts(base_tokenizer, prompts, replies)
    prompt_index = {tuple(ids[:n]): i for i, (ids, n) in enumerate(encoded)}
    assert sum(len(ids) for ids, _ in encoded) < reward._shared_prompt_positions(encoded, prompt_index, 2)  # packs
    (alone, alone_grads), (packed, packed_grads) = scores_alone_and_together(tiny_rm, encoded, base_tokenizer, 2)
    assert torch.allclose(packed, alone, atol=1e-5)
    for g_alone, g_packed in zip(alone_grads, packed_grads, strict=True):
        assert torch.allclose(g_packed, g_alone, atol=1e-4)
