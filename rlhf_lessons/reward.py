"""The reward model: a GPT-2 that reads a request and a reply and returns one number, trained on comparisons.

Model. The SFT model's transformer (it already reads the world's language) plus a scalar head, a linear map from the
hidden state of the *last real token* of `prompt + reply + EOS` to a score:

    r(x, y) = w . h_last(x, y)            w ~ N(0, 1 / sqrt(d_model + 1)), no bias

`GPT2ForSequenceClassification(num_labels=1)` is the container (so the model saves with save_pretrained and loads
with plain transformers), but we compute the score ourselves, from the attention mask, so that it is right for left
and right padding alike.

Loss. The Bradley-Terry model says a rater prefers y_c to y_r with probability sigmoid(r_c - r_r); maximising the
likelihood of the observed choices gives

    L_BT = - E[ log sigmoid(r(x, y_c) - r(x, y_r) - margin) ]

and for a ranking of K replies, best first, InstructGPT's loss over all C(K, 2) pairs of it:

    L_K = - 1/C(K,2) * sum_{i<j} log sigmoid(r_i - r_j)

Data. Fresh labels come as rankings (InstructGPT asked its labellers to rank 4 to 9 replies): a simulated rater
ranks k = 8 replies to one request, which gives C(8, 2) = 28 pairs from only 8 sampled replies. Training keeps the
pairs of a ranking in one batch and scores each reply once, so those 28 pairs cost 8 forward passes. A ranking
loses the replies that repeat in it, so K varies (about 7 of 8 in the default run): a batch's loss is the mean over
its rankings of each ranking's L_K, every ranking weighing the same whatever its K (InstructGPT's choice: with a
plain mean over pairs, a ranking of 8 would count 28/6 times as much as a ranking of 4), and a lone labelled pair is
a ranking of 2. Repeated labels of the same pair are all kept: dropping repeats would pull a pair that raters agree
on towards 50/50. Per second of CPU, rankings teach the model more than independent pairs do. The 8
replies also share their request: it runs through the model once, and its keys and values serve all 8 (`raw_scores`).

Only differences of rewards matter, so the scale and offset are free; after training we shift and scale the scores
so that replies of the reference (SFT) policy score mean 0 and standard deviation 1. Then PPO's KL coefficient
means the same thing whatever reward model it is paired with.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2ForSequenceClassification

from . import gold, world
from .config_checks import (AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, SEED, Bounds, refuse_bad_settings,
                            setting_problems)
from .errors import CheckpointError, CourseError
from .models import (check_checkpoint_folder, check_same_tokenizer, encode_example, load_checkpoint, resolve_checkpoint,
                     save_checkpoint)
from .optim import check_finite_step, lr_at, make_adamw, set_lr
from .runtime import pick_device, progress_bar
from .packing import hidden_states
from .sampling import pad_sequences, positions


@dataclass
class RewardConfig:
    """Settings of the reward stage. Measured like for like on 1000 held-out pairs (the noise ceiling against the
    *expected* accuracy, both expectations over the label noise), the SFT model of seed 0, 1 thread:

        1000 rankings of 8, 3 epochs, lr 5e-4   expected accuracy 0.816, ceiling 0.857, gap 0.040   141 s
        1000 rankings of 8, 4 epochs            0.819, gap 0.038                                   141 s
        1500 rankings of 8, 3 epochs (default)  0.827, gap 0.030, gold correlation 0.91            171 s

    and PPO on the 1500-ranking reward model answered right 0.96 of held-out fact and advice requests (SFT 0.84),
    against 0.84 on the 1000-ranking one: a reward model that knows right from wrong facts makes a helpful policy.
    Over seeds 0, 1 and 2 of the whole pipeline (benchmarks/outcomes.py, 1 thread) the default's gap was 0.032, 0.027
    and 0.036: the SFT model, and so the sampled labels, move with the seed and the thread count.
    The wider world (a grammar of openers and frames) needs more labels than the four-phrasings world did, where
    1000 rankings sufficed. Rankings lose the replies that repeat in them, so 1500 rankings give about 33,000 pairs.

    Earlier tuning, on the four-phrasings world (accuracy means over three training seeds; seconds of one run):
        4 epochs, lr 3e-4                0.839   55 s
        3 epochs, lr 4e-4                0.835   39 s
        3 epochs, lr 5e-4                0.839   39 s
        3 epochs, lr 7e-4                0.836   38 s
        3 epochs, lr 5e-4, decay 0.1     0.845   38 s
        4 epochs, batch 224, lr 4.2e-4   0.836   49 s
    Weight decay 0.1 scored better on each seed, but the default PPO run trained on its reward model complied with
    more harmful requests: the held-out accuracy is not all a reward model is for. Freezing the embeddings, dropout
    and an average of the weights (EMA) did not help. Each sampled reply costs one forward and backward pass per
    epoch."""

    epochs: int = 3  # InstructGPT trains one epoch on far more data; ours is small, so it is seen three times
    batch_size: int = 112  # pairs per step: 4 whole rankings of 8 (28 pairs each), 32 replies scored once each
    peak_lr: float = 5e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    margin: float = 0.0  # optional margin in the BT loss (Llama 2 uses one per rating gap)
    n_pairs: int = 42_000  # fresh simulated pairs asked for (run_reward_stage): 1500 rankings of k = 8
    k: int = 8  # replies per ranking: a ranking of k gives C(k, 2) pairs from only k sampled replies (k=2: pairs)
    n_heldout: int = 1000  # held-out pairs (independent ones) for accuracy and noise ceiling
    max_new_tokens: int = 40  # reply length when sampling
    seed: int = 0


REWARD_BOUNDS = {"epochs": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE, "peak_lr": POSITIVE, "warmup_fraction": FRACTION,
                 "weight_decay": NON_NEGATIVE, "max_grad_norm": POSITIVE, "n_pairs": NON_NEGATIVE,
                 "k": Bounds(2), "n_heldout": AT_LEAST_ONE, "max_new_tokens": AT_LEAST_ONE, "seed": SEED}


def check_config(cfg: RewardConfig) -> None:
    """Refuse settings that cannot train (NaN, 0 epochs, rankings of one reply) before any labelling starts."""
    refuse_bad_settings("reward model", setting_problems(cfg, REWARD_BOUNDS))


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------

def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin=0.0) -> torch.Tensor:
    """L = mean over pairs of -log sigmoid(r_chosen - r_rejected - margin).    r_*: (B,), margin: float or (B,).

    F.logsigmoid(x) = -softplus(-x) is computed without forming sigmoid(x), so it stays finite and has the right
    gradient at any gap: -log sigmoid(-1e4) = 1e4 (torch.log(torch.sigmoid(x)) gives log(0) = -inf there).
    """
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


def ranking_weights(groups: list) -> torch.Tensor:
    """Weights (B,) for B pairs by the ranking each came from, so that every ranking weighs the same:
    w = 1 / (pairs of its ranking in the batch) / (rankings in the batch); they sum to 1.    groups: (B,) keys."""
    counts: dict = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    return torch.tensor([1.0 / counts[g] / len(counts) for g in groups])


def ranking_bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, weights: torch.Tensor,
                    margin=0.0) -> torch.Tensor:
    """L = sum_p w_p * -log sigmoid(r_chosen_p - r_rejected_p - margin), w from ranking_weights (sum 1).

    For whole rankings this is the mean over rankings of kwise_ranking_loss: every ranking counts the same."""
    return -(weights.to(r_chosen) * F.logsigmoid(r_chosen - r_rejected - margin)).sum()


def kwise_ranking_loss(rewards: torch.Tensor) -> torch.Tensor:
    """InstructGPT's ranking loss. rewards: (B, K), each row ordered best first.

    L = mean over the batch of  -1/C(K,2) * sum_{i<j} log sigmoid(r_i - r_j)

    i.e. the mean Bradley-Terry loss over all K choose 2 pairs of each ranking (K = 2 is plain Bradley-Terry).
    """
    if rewards.dim() != 2 or rewards.size(1) < 2:
        raise ValueError(f"rewards must have shape (B, K) with K >= 2, got {tuple(rewards.shape)}")
    K = rewards.size(1)
    better, worse = torch.triu_indices(K, K, offset=1)  # all C(K, 2) pairs i < j: i is ranked above j
    diffs = rewards[:, better] - rewards[:, worse]  # (B, C(K, 2))
    return -F.logsigmoid(diffs).mean()


def preference_probability(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """P(A preferred to B) = sigmoid(r_a - r_b), on *raw* (unnormalised) rewards."""
    return torch.sigmoid(r_a - r_b)


# ---------------------------------------------------------------------------------------------------------------
# The model and its score
# ---------------------------------------------------------------------------------------------------------------

def init_reward_head(rm: GPT2ForSequenceClassification, seed: int = 0) -> None:
    """w ~ N(0, std = 1 / sqrt(d_model + 1)) (lm-human-preferences); the head has no bias."""
    gen = torch.Generator().manual_seed(seed)
    d_model = rm.config.n_embd
    with torch.no_grad():
        w = torch.randn(rm.score.weight.shape, generator=gen) / math.sqrt(d_model + 1)
        rm.score.weight.copy_(w)
    assert rm.score.bias is None


def reward_model_from(init: str | Path = "sft", seed: int = 0, device="cpu"):
    """A fresh reward model: the transformer of checkpoint `init` plus a new scalar head. -> (rm, tokenizer)."""
    rm, tokenizer, _ = load_checkpoint(
        init, "policy", GPT2ForSequenceClassification, new_keys=frozenset({"score.weight"}),  # the head is new
        num_labels=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)  # dropout off
    rm.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token before the padding
    init_reward_head(rm, seed)
    rm.config.reward_gain, rm.config.reward_bias = 1.0, 0.0  # set by normalize_reward_model after training
    rm.config.reward_init = str(init)
    return rm.to(device), tokenizer


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (mask = 1) token of each row: (B, T) -> (B,).

    Right for right padding (1 1 1 0 0), left padding (0 0 1 1 1) and both (0 1 1 1 0, a left-padded prompt
    followed by a right-padded reply, as sampling.Samples lays them out): the largest t with mask[t] = 1.
    """
    T = attention_mask.size(1)
    steps = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return (steps * attention_mask.long()).argmax(dim=1)


def raw_score_ids(rm, input_ids: torch.Tensor, attention_mask: torch.Tensor, packed: bool = True) -> torch.Tensor:
    """The head read at the last real token, before normalisation: (B, T) ids and mask -> (B,) scores.

    packed: run the transformer on the real tokens only (packing.py); the scores are the padded pass's.
    """
    hidden = hidden_states(rm.transformer, input_ids, attention_mask, packed)  # (B, T, d_model)
    last = last_token_index(attention_mask)  # (B,)
    h_last = hidden[torch.arange(hidden.size(0), device=hidden.device), last]  # (B, d_model)
    return rm.score(h_last).squeeze(-1)  # (B,)


def normalize(rm, raw: torch.Tensor) -> torch.Tensor:
    """r = gain * raw + bias, with gain and bias from rm.config (1 and 0 before normalisation)."""
    return raw * getattr(rm.config, "reward_gain", 1.0) + getattr(rm.config, "reward_bias", 0.0)


def score_ids(rm, input_ids: torch.Tensor, attention_mask: torch.Tensor, packed: bool = True) -> torch.Tensor:
    """Normalised rewards of token sequences: (B, T) ids and mask -> (B,).

    PPO passes sampling.Samples.input_ids / attention_mask (left-padded prompt + right-padded reply): the score
    is read at the last 1 of the mask (the EOS of a reply that ended), not at the end of the row.
    """
    return normalize(rm, raw_score_ids(rm, input_ids, attention_mask, packed))


def encode_texts(tokenizer, prompts: list[str], replies: list[str],
                 max_length: int | None = None) -> list[tuple[list[int], int]]:
    """(token ids of format_prompt(prompt) + ' ' + reply + EOS, how many of them are prompt) for each pair.

    A sequence longer than max_length is cut to it with its EOS kept last; the EOS always counts as reply.
    """
    limit = max_length or tokenizer.model_max_length
    out = []
    for prompt, reply in zip(prompts, replies, strict=True):
        ids, n_prompt = encode_example(tokenizer, prompt, reply)
        if len(ids) > limit:
            ids = ids[:limit - 1] + [tokenizer.eos_token_id]
        out.append((ids, min(n_prompt, len(ids) - 1)))
    return out


def _shared_prompt_positions(encoded: list[tuple[list[int], int]], prompts: dict, rows: int) -> int:
    """Positions raw_scores computes when it shares prompts: the distinct prompts padded to the longest, then the
    replies shortest first, `rows` at a time, each chunk padded to its longest."""
    reply_lengths = sorted(len(ids) - n for ids, n in encoded)
    longest_prompt = max(len(p) for p in prompts)
    return len(prompts) * longest_prompt + sum(len(reply_lengths[i:i + rows]) * reply_lengths[i:i + rows][-1]
                                               for i in range(0, len(reply_lengths), rows))


def raw_scores(rm, encoded: list[tuple[list[int], int]], pad_id: int, rows: int) -> torch.Tensor:
    """Raw scores of (token ids, prompt length) sequences (encode_texts), in their order: (N,).

    Two savings, neither of which changes a score (tested against scoring each sequence alone, gradients included):
    - Each distinct prompt runs through the model once, and its keys and values (the KV cache, as in sampling) are
      handed to every reply of it. The 8 replies of a ranking share one prompt about as long as a reply, so this
      saves about a third of the tokens.
    - The replies are scored shortest first, `rows` at a time: a batch is padded to its longest reply, and the
      padding costs as much as real tokens.
    Gradients flow through both passes when called with grad enabled (training does).
    When few replies share a prompt (independent pairs), sharing saves little and pads every prompt to the longest:
    then the whole sequences are packed instead (packing.py), whichever lays out fewer positions.
    """
    device = next(rm.parameters()).device
    prompt_index: dict[tuple, int] = {}
    prompt_of = [prompt_index.setdefault(tuple(ids[:n]), len(prompt_index)) for ids, n in encoded]
    if sum(len(ids) for ids, _ in encoded) < _shared_prompt_positions(encoded, prompt_index, rows):
        ids, mask = (t.to(device) for t in pad_sequences([ids for ids, _ in encoded], pad_id))
        return raw_score_ids(rm, ids, mask, packed=True)

    # 1. Every distinct prompt once, left-padded so that all of them end in the last column.
    p_ids, p_mask = (t.to(device) for t in pad_sequences([list(p) for p in prompt_index], pad_id, side="left"))
    cache = DynamicCache(config=rm.config)
    rm.transformer(input_ids=p_ids, attention_mask=p_mask, position_ids=positions(p_mask), cache=cache,
                   use_cache=True)
    prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]  # per layer: (G, heads, P, head_dim) each
    prompt_len = p_mask.sum(1)  # (G,)

    # 2. The replies, shortest first, each row reading its own prompt's keys and values.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) - encoded[i][1])
    scores = []
    for start in range(0, len(order), rows):
        chunk = order[start:start + rows]
        which = torch.tensor([prompt_of[i] for i in chunk], device=device)  # (R,) each row's prompt
        r_ids, r_mask = (t.to(device) for t in pad_sequences([encoded[i][0][encoded[i][1]:] for i in chunk], pad_id))
        mask = torch.cat([p_mask[which], r_mask], dim=1)  # (R, P + T): the prompt's padding stays masked
        position_ids = prompt_len[which, None] + torch.arange(r_ids.size(1), device=device)  # (R, T) after the prompt
        rows_cache = DynamicCache([(k[which], v[which]) for k, v in prompt_kv], config=rm.config)
        hidden = rm.transformer(input_ids=r_ids, attention_mask=mask, position_ids=position_ids,
                                cache=rows_cache, use_cache=True).last_hidden_state  # (R, T, d_model)
        last = r_mask.sum(1) - 1  # the reply's EOS
        scores.append(rm.score(hidden[torch.arange(len(chunk), device=device), last]).squeeze(-1))
    by_length = torch.cat(scores)
    return by_length[torch.argsort(torch.tensor(order, device=device))]  # back to the input order


@torch.no_grad()
def reward_scores(rm, tokenizer, prompts: list[str], replies: list[str], batch_size: int = 256,
                  normalized: bool = True) -> torch.Tensor:
    """Rewards of (prompt, reply) texts: (B,). normalized=False gives the raw head output (for probabilities)."""
    if not replies:
        return torch.zeros(0)
    was_training = rm.training
    rm.eval()
    encoded = encode_texts(tokenizer, prompts, replies, rm.config.n_positions)
    by_prompt = sorted(range(len(encoded)), key=lambda i: prompts[i])  # a prompt's replies in one slice
    raw = torch.empty(len(encoded))
    for start in range(0, len(by_prompt), 8 * batch_size):  # slices bound the memory of the prompts' cache
        part = by_prompt[start:start + 8 * batch_size]
        raw[part] = raw_scores(rm, [encoded[i] for i in part], tokenizer.pad_token_id, batch_size).float().cpu()
    rm.train(was_training)
    return normalize(rm, raw) if normalized else raw


def normalize_reward_model(rm, raw_reference: torch.Tensor) -> dict:
    """Set gain and bias so the reference replies' raw scores map to mean 0, std 1: r = (raw - mean) / std.

    Stored in rm.config (config.json: reward_gain, reward_bias), so every later load applies them.
    """
    if raw_reference.numel() < 2:
        raise ValueError("normalisation needs at least two reference replies")
    mean, std = raw_reference.mean().item(), raw_reference.std().item()
    std = max(std, 1e-6)
    rm.config.reward_gain, rm.config.reward_bias = 1.0 / std, -mean / std
    return {"reference_mean": mean, "reference_std": std, "reward_gain": rm.config.reward_gain,
            "reward_bias": rm.config.reward_bias, "reference_replies": raw_reference.numel()}


def load_reward_model(path_or_name: str | Path = "rm", policy_tokenizer=None, device="cpu"):
    """Load a reward model checkpoint: (GPT2ForSequenceClassification in eval mode, tokenizer).

    With `policy_tokenizer`, refuse a reward model whose tokenizer differs from the policy's: token ids would
    mean different things to the two models.
    """
    rm, tokenizer, path = load_checkpoint(path_or_name, "reward", GPT2ForSequenceClassification)
    if rm.config.num_labels != 1:
        raise CheckpointError(f"{path} is not a reward model (num_labels={rm.config.num_labels}, expected 1): train "
                              "one with `rlhf-lessons reward`")
    if policy_tokenizer is not None:
        check_reward_model_tokenizer(tokenizer, policy_tokenizer)
    rm.to(device).eval()
    return rm, tokenizer


def check_reward_model_tokenizer(rm_tokenizer, policy_tokenizer) -> None:
    """Refuse a reward model and a policy with different tokenizers (a clear ValueError)."""
    check_same_tokenizer(rm_tokenizer, policy_tokenizer, "the reward model and the policy")


# ---------------------------------------------------------------------------------------------------------------
# Measuring a reward model
# ---------------------------------------------------------------------------------------------------------------

def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Share of pairs where the chosen reply scores higher; exact ties count one half."""
    return ((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).mean().item()


def calibration(p_predicted, outcomes, n_bins: int = 10) -> list[dict]:
    """Reliability bins: does "P(A preferred) = 0.8" come true 80% of the time?

    p_predicted: (N,) predicted probabilities; outcomes: (N,) 1 where A was chosen, else 0.
    Returns one dict per non-empty bin [lo, hi): {"lo", "hi", "count", "mean_predicted", "observed"}.
    """
    p = torch.as_tensor(p_predicted, dtype=torch.float64)
    y = torch.as_tensor(outcomes, dtype=torch.float64)
    which = torch.clamp((p * n_bins).long(), max=n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": int(sel.sum()),
                         "mean_predicted": round(p[sel].mean().item(), 4), "observed": round(y[sel].mean().item(), 4)})
    return bins


def expected_calibration_error(bins: list[dict]) -> float:
    """Count-weighted mean |mean_predicted - observed| over the bins of `calibration`."""
    total = sum(b["count"] for b in bins)
    return sum(b["count"] * abs(b["mean_predicted"] - b["observed"]) for b in bins) / total


def gold_correlation(rewards, gold_scores) -> float:
    """Pearson correlation between reward-model scores and gold scores of the same replies."""
    x = torch.as_tensor(rewards, dtype=torch.float64)
    y = torch.as_tensor(gold_scores, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = (x.norm() * y.norm()).item()
    return (x @ y).item() / denom if denom > 0 else float("nan")


def label_rewards(rm, tokenizer, labels: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards (r_a (N,), r_b (N,)) of the two replies of N labelled pairs, scored in one pass so that each
    pair's prompt runs through the model once for both."""
    prompts = [l["prompt"] for l in labels]
    raw = reward_scores(rm, tokenizer, prompts + prompts, [l["reply_a"] for l in labels] +
                        [l["reply_b"] for l in labels], normalized=False)
    return raw[:len(labels)], raw[len(labels):]


def evaluate_on_labels(rm, tokenizer, labels: list[dict]) -> dict:
    """Held-out measures on labelled pairs (labeling.simulate_labels output, whose gold scores are those of the
    labelling population).

    heldout_accuracy          share of pairs whose simulated choice (one draw of the noise) the RM agrees with
    heldout_expected_accuracy the same, in expectation over the raters' noise (mean P(rater agrees with RM))
    gold_agreement            share of pairs (exact gold ties left out) where the RM prefers the gold-better reply
    noise_ceiling             the best expected accuracy possible on these pairs: mean max(p_a, 1 - p_a), where
                              p_a is the labelling process's probability (a pool's mixture probability "p_pool"
                              when a pool of populations labelled, each with the noise it used)
    ceiling_gap               noise_ceiling - heldout_expected_accuracy: like for like, both expectations over
                              the label noise (the bar of the reward model)
    calibration, ece          reliability of sigmoid(r_a - r_b) against the simulated choices
    gold_correlation          Pearson r of normalised reward and gold score over all the pairs' replies
    """
    r_a, r_b = label_rewards(rm, tokenizer, labels)
    a_chosen = torch.tensor([l["choice"] == "A" for l in labels], dtype=torch.float64)
    p_a = torch.tensor([l.get("p_pool", l["p_a"]) for l in labels], dtype=torch.float64)
    gold_a = torch.tensor([l["gold_a"] for l in labels], dtype=torch.float64)
    gold_b = torch.tensor([l["gold_b"] for l in labels], dtype=torch.float64)
    rm_picks_a = (r_a > r_b).double() + 0.5 * (r_a == r_b).double()
    accuracy = (rm_picks_a * a_chosen + (1 - rm_picks_a) * (1 - a_chosen)).mean().item()
    expected = (rm_picks_a * p_a + (1 - rm_picks_a) * (1 - p_a)).mean().item()
    decided = gold_a != gold_b
    gold_agree = ((r_a > r_b) == (gold_a > gold_b))[decided].double().mean().item()
    bins = calibration(preference_probability(r_a, r_b), a_chosen)
    rewards = normalize(rm, torch.cat([r_a, r_b]))
    ceiling = gold.ceiling_of(p_a.tolist())
    return {"heldout_accuracy": round(accuracy, 4), "heldout_expected_accuracy": round(expected, 4),
            "gold_agreement": round(gold_agree, 4), "noise_ceiling": round(ceiling, 4),
            "ceiling_gap": round(ceiling - expected, 4),
            "heldout_pairs": len(labels), "calibration": bins,
            "ece": round(expected_calibration_error(bins), 4),
            "gold_correlation": round(gold_correlation(rewards, torch.cat([gold_a, gold_b])), 4)}


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------

def index_replies(pairs: list[dict]) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """Each distinct (prompt, reply) once: (texts, [(chosen index, rejected index) per pair]).

    A ranking of K replies gives C(K, 2) pairs but only K distinct replies: scoring each reply once per batch
    makes a ranking of 4 cost 4 forward passes instead of 12 (InstructGPT's reason to keep a ranking together).
    """
    index: dict[tuple[str, str], int] = {}
    pair_ids = []
    for p in pairs:
        ids = []
        for reply in (p["chosen"], p["rejected"]):
            ids.append(index.setdefault((p["prompt"], reply), len(index)))
        pair_ids.append((ids[0], ids[1]))
    return list(index), pair_ids


def pair_rewards(rm, encoded: list[tuple[list[int], int]], pairs: list[tuple[int, int]], pad_id: int,
                 length_buckets: int = 3):
    """Raw rewards (r_chosen (B,), r_rejected (B,)) of B pairs given as indices into `encoded` (encode_texts).

    Each distinct reply is scored once, and the pairs read their rewards from those scores: for the C(K, 2) pairs
    of a ranking of K this is K forward passes (sharing one pass of the prompt), and the mean Bradley-Terry loss
    over them is exactly kwise_ranking_loss of the ranking. The replies are scored in `length_buckets` passes,
    shortest first, so short replies are not padded to the longest one.
    """
    seq_ids = sorted({j for pair in pairs for j in pair})
    row = {j: r for r, j in enumerate(seq_ids)}
    rows = -(-len(seq_ids) // length_buckets)
    scores = raw_scores(rm, [encoded[j] for j in seq_ids], pad_id, rows)  # (distinct replies,)
    chosen = torch.tensor([row[c] for c, _ in pairs], device=scores.device)
    rejected = torch.tensor([row[r] for _, r in pairs], device=scores.device)
    return scores[chosen], scores[rejected]


def grouped_batches(pairs: list[dict], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of about `batch_size` pair indices in which the pairs of one ranking stay together.

    A pair's group is its "group" key when it has one (the rankings of labeling.simulate_rankings), else its prompt.
    """
    groups: dict = {}
    for i, p in enumerate(pairs):
        groups.setdefault(("group", p["group"]) if "group" in p else ("prompt", p["prompt"]), []).append(i)
    chunks = []
    for members in groups.values():  # a group larger than a batch is cut into batch-sized chunks
        members = rng.sample(members, len(members))
        chunks += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    rng.shuffle(chunks)
    batches, current = [], []
    for chunk in chunks:
        if current and len(current) + len(chunk) > batch_size:
            batches.append(current)
            current = []
        current = current + chunk
    if current:
        batches.append(current)
    return batches


def train_reward(cfg: RewardConfig, pairs: list[dict], init: str | Path = "sft", out_dir: str | Path | None = None,
                 on_step=None, heldout: list[dict] | None = None, reference: list[tuple[str, str]] | None = None,
                 population: str = "balanced", manifest: dict | None = None, progress: bool = True,
                 device=None, start: str | Path | None = None) -> dict:
    """Train a Bradley-Terry reward model on `pairs` ({"prompt", "chosen", "rejected"} dicts).

    init: checkpoint whose transformer starts the RM (the SFT model). on_step(step, loss, acc) after every step.
    start: a reward model to go on training instead (head included): last round's, updated with new feedback.
    heldout: labelled pairs (labeling.simulate_labels) to measure; reference: (prompt, reply) pairs sampled from
    the reference policy, whose scores are normalised to mean 0, std 1 (without it: none, gain 1, bias 0).
    out_dir: where to save (models.save_checkpoint with a manifest); None keeps it in memory only.
    device: None picks one (runtime.pick_device: cuda > mps > cpu).
    Returns {"model", "tokenizer", "train_loss", "train_accuracy", "steps", "seconds", ...evaluate_on_labels...}.
    """
    if not pairs:
        raise CourseError("no preference pairs to train on: label some (lesson 03, or `rlhf-lessons label`)")
    check_config(cfg)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    device = pick_device(device)
    if start is not None:
        rm, tokenizer = load_reward_model(start, device=device)
    else:
        rm, tokenizer = reward_model_from(init, seed=cfg.seed, device=device)
    limit = rm.config.n_positions
    texts, pair_ids = index_replies(pairs)
    rankings = [("group", p["group"]) if "group" in p else ("pair", i) for i, p in enumerate(pairs)]
    encoded = encode_texts(tokenizer, [t[0] for t in texts], [t[1] for t in texts], limit)

    optimizer = make_adamw(rm, cfg.peak_lr, cfg.weight_decay)
    rng = random.Random(cfg.seed)
    epochs = [grouped_batches(pairs, cfg.batch_size, rng) for _ in range(cfg.epochs)]
    total = sum(len(batches) for batches in epochs)
    warmup = max(1, int(cfg.warmup_fraction * total))
    step, running_loss, running_acc = 0, None, None
    rm.train()  # dropout is zero in the config; train mode only matters for nothing else here
    bar = progress_bar(total=total, desc="reward model", disable=not progress)
    for batches in epochs:
        for idx in batches:
            set_lr(optimizer, lr_at(step, total, cfg.peak_lr, warmup))
            r_chosen, r_rejected = pair_rewards(rm, encoded, [pair_ids[i] for i in idx], tokenizer.pad_token_id)
            loss = ranking_bt_loss(r_chosen, r_rejected, ranking_weights([rankings[i] for i in idx]), cfg.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(rm.parameters(), cfg.max_grad_norm)
            check_finite_step("reward model", f"step {step + 1} of {total}", loss, grad_norm,
                              advice=f"try a lower peak_lr (it is {cfg.peak_lr:g})")
            optimizer.step()
            step += 1
            acc = pairwise_accuracy(r_chosen.detach(), r_rejected.detach())
            running_loss = loss.item() if running_loss is None else 0.95 * running_loss + 0.05 * loss.item()
            running_acc = acc if running_acc is None else 0.95 * running_acc + 0.05 * acc
            if on_step is not None:
                on_step(step, loss.item(), acc)
            # refresh=False: the next update draws it (at most twice a second, see runtime.progress_bar)
            bar.set_postfix(loss=f"{running_loss:.3f}", acc=f"{running_acc:.3f}", refresh=False)
            bar.update(1)
    bar.close()
    rm.eval()

    result = {"train_loss": round(running_loss, 4), "train_accuracy": round(running_acc, 4), "steps": step,
              "train_pairs": len(pairs), "train_replies": len(texts)}
    if reference:
        raw_ref = reward_scores(rm, tokenizer, [p for p, _ in reference], [r for _, r in reference], normalized=False)
        result["normalization"] = normalize_reward_model(rm, raw_ref)
    if heldout:
        result.update(evaluate_on_labels(rm, tokenizer, heldout))
    result["seconds"] = round(time.time() - t0, 1)
    if out_dir is not None:
        info = {k: v for k, v in result.items() if k != "calibration"}
        save_checkpoint(rm, tokenizer, out_dir, {"stage": "rm", "init": str(init), "config": asdict(cfg),
                                                 "seed": cfg.seed, "population": population, **info,
                                                 **(manifest or {})})
        result["out"] = str(out_dir)
    return {"model": rm, "tokenizer": tokenizer, **result}


# ---------------------------------------------------------------------------------------------------------------
# The stage: `rlhf-lessons reward`
# ---------------------------------------------------------------------------------------------------------------

def _init_checkpoint(init: str | Path) -> Path:
    """The checkpoint the RM starts from; the workspace's SFT model is trained first if it is missing."""
    if str(init) == "sft":
        from .sft import ensure_sft

        return ensure_sft()
    return resolve_checkpoint(init)


def labelling_policies(init: str | Path = "sft") -> tuple[Path, list[tuple]]:
    """(init checkpoint path, [(model, tokenizer, name)] of the init policy and the base model): the two models
    whose replies are labelled, checked to share a tokenizer. Loading the init trains a missing SFT first."""
    from .models import load_policy

    init_path = _init_checkpoint(init)
    policy, policy_tok = load_policy(init_path)
    base, base_tok = load_policy("base")
    check_same_tokenizer(policy_tok, base_tok, f"the init checkpoint {init} and the base model")
    return init_path, [(policy, policy_tok, str(init)), (base, base_tok, "base")]


def _stored_pairs(population: str, store=None) -> list[dict]:
    """Pairs from the preference store: every human label, and simulated labels of this population only."""
    from .store import PreferenceStore, default_path

    if store is None:
        if not default_path().exists():
            return []
        store = PreferenceStore()
    elif not isinstance(store, PreferenceStore):
        store = PreferenceStore(store)
    return [p for p in store.pairs() if p["source"] == "human" or p["population"] == population]


def run_reward_stage(prefs: list[str | Path] | None = None, population: str = "balanced", n: int | None = None,
                     init: str | Path = "sft", out: str | Path | None = None, seed: int = 0,
                     cfg: RewardConfig | None = None, store=None, use_store: bool = True, on_step=None,
                     progress: bool = True, device=None, return_labels: bool = False,
                     start: str | Path | None = None, measured_on: dict | None = None) -> dict:
    """`rlhf-lessons reward`: label, train, measure and save a reward model.

    Training pairs: about `n` fresh pairs (default cfg.n_pairs) from rankings of cfg.k replies (half from the init
    policy, half from the base model) to training requests, ranked by simulated raters of `population`; plus the
    pairs of the JSONL files `prefs`; plus (use_store) the preference store's human labels and its simulated labels
    of `population`. Pairs on held-out requests are left out of training.
    Held-out: cfg.n_heldout fresh pairs of every type on held-out requests, labelled by the same population.
    The RM starts from `init` (the workspace's SFT model, trained first if missing) and is saved to `out` (default:
    the workspace's `rm`). `seconds` counts labelling, training and measuring, not building a missing SFT.
    return_labels: also return the fresh "train_labels" and "heldout_labels" (for coverage_experiment; not JSON).
    start: a reward model checkpoint to go on training (train_reward's start) rather than a fresh head on `init`.
    measured_on: a dict that keeps the held-out labels and the normalisation's reference replies: empty, this run
    fills it; filled (by a run with the same init, population, seed and cfg), they are reused, not sampled again, so
    that several reward models are measured on the same pairs at the cost of one sampling (round_two's variants).
    """
    from .labeling import sample_pairs, sample_rankings, simulate_labels, simulate_rankings, training_pairs
    from .store import read_label_file
    from .workspace import stage_dir

    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")
    cfg = cfg or RewardConfig(seed=seed)
    check_config(cfg)
    n = cfg.n_pairs if n is None else n
    if start is not None:  # a missing or wrong checkpoint fails now, from its files, not after minutes of labelling
        check_checkpoint_folder(start, "reward")
    _init_checkpoint(init)  # a missing SFT is trained first, outside this stage's time
    t0 = time.time()
    init_path, policies = labelling_policies(init)
    policy, policy_tok, _ = policies[0]

    # Fresh labels: rankings of k replies (each gives C(k, 2) pairs), enough of them for about n pairs.
    train_labels, reference = [], []
    if n > 0 and cfg.k > 2:
        n_sets = -(-n // math.comb(cfg.k, 2))
        sets = sample_rankings(n_sets, cfg.k, policies, seed=seed, max_new_tokens=cfg.max_new_tokens,
                               progress=progress)
        train_labels, _ = simulate_rankings(sets, population, seed=seed)
        # the reference set for normalisation: the init policy's own replies to training requests
        reference = [(g["prompt"], reply) for g in sets for reply, name in zip(g["replies"], g["checkpoints"])
                     if name == str(init)]
    elif n > 0:  # k = 2: plain pairs, of every pair type
        train_labels, _ = simulate_labels(sample_pairs(n, policies, seed=seed, max_new_tokens=cfg.max_new_tokens,
                                                       progress=progress), population, seed=seed)
        reference = [(l["prompt"], l[f"reply_{side}"]) for l in train_labels for side in "ab"
                     if l[f"checkpoint_{side}"] == str(init)]
    measured_on = {} if measured_on is None else measured_on
    measured_for = (str(init), population, seed, cfg.n_heldout, cfg.max_new_tokens)
    if measured_on.setdefault("for", measured_for) != measured_for:  # other pairs than this run would sample
        raise ValueError(f"measured_on holds the held-out pairs of {measured_on['for']} (init, population, seed, "
                         f"n_heldout, max_new_tokens), not of {measured_for}: pass a fresh dict")
    if "heldout_labels" not in measured_on:
        measured_on["heldout_labels"], measured_on["heldout_agreement"] = simulate_labels(
            sample_pairs(cfg.n_heldout, policies, seed=seed + 7919, max_new_tokens=cfg.max_new_tokens,
                         split="heldout", progress=progress), population, seed=seed + 7919)
    heldout_labels, heldout_agreement = measured_on["heldout_labels"], measured_on["heldout_agreement"]

    extra = [p for path in (prefs or []) for p in read_label_file(path)]
    if use_store:
        extra += _stored_pairs(population, store)
    # keep every evaluation split held out: a label on one of its prompts never trains
    kept = [{k: v for k, v in p.items() if k != "group"} for p in extra if not world.is_evaluation_prompt(p["prompt"])]
    pairs = training_pairs(train_labels) + training_pairs(kept)  # repeated labels kept: they carry the raters' odds

    if len(reference) < 256:
        if "reference" not in measured_on:
            from .sampling import sample_in_batches

            prompts = [r.prompt for r in random.Random(seed).choices(world.requests("train"), k=512)]
            measured_on["reference"] = list(zip(prompts, sample_in_batches(
                policy, policy_tok, prompts, batch_size=128, seed=seed, max_new_tokens=cfg.max_new_tokens)))
        reference += measured_on["reference"]
    sampling_seconds = time.time() - t0
    out_dir = Path(out) if out is not None else stage_dir("rm")
    result = train_reward(cfg, pairs, init=init_path, out_dir=out_dir, on_step=on_step, heldout=heldout_labels,
                          reference=reference, population=population, progress=progress, device=device,
                          start=start,
                          manifest={"populations": [population], "init_name": str(init),
                                    "start": None if start is None else str(start),
                                    "fresh_pairs": len(train_labels), "other_pairs": len(kept),
                                    "prefs": [str(p) for p in prefs or []], "command": "rlhf-lessons reward"})
    summary = {k: v for k, v in result.items() if k not in ("model", "tokenizer")}
    summary.update({"pairs": len(pairs), "fresh_pairs": len(train_labels), "other_pairs": len(kept),
                    "dropped_heldout_prompt_pairs": len(extra) - len(kept), "population": population,
                    "init": str(init), "heldout_label_agreement_with_gold": round(heldout_agreement, 4),
                    "sampling_seconds": round(sampling_seconds, 1), "training_seconds": result["seconds"],
                    "seconds": round(time.time() - t0, 1), "out": str(out_dir)})
    if return_labels:
        summary.update(train_labels=train_labels, heldout_labels=heldout_labels)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Coverage: what a reward model never saw, it cannot judge
# ---------------------------------------------------------------------------------------------------------------

REPLY_TYPES = ("harmful", "refusal", "rude", "wrong", "off_topic", "good", "other")


def reply_type(request: world.Request, reply: str) -> str:
    """What kind of reply this is, by the gold rater's own tests (first match wins):
    harmful (complies with a harmful request), refusal (refuses a request that is not harmful), rude, wrong (wrong
    fact or another topic's tip), off_topic (rambling about socks and pancakes), good (right answer, or a
    refusal of a harmful request), other."""
    parts = gold.gold_components(request, reply)
    if gold.complies_with_harm(request, reply):
        return "harmful"
    if request.kind != "harmful" and gold.is_refusal(reply):
        return "refusal"
    if gold.is_rude(reply):
        return "rude"
    if parts["helpfulness"] == -1.5:
        return "wrong"
    if parts["on_topic"] < 0:
        return "off_topic"
    if gold.gives_right_answer(request, reply) or (request.kind == "harmful" and gold.is_refusal(reply)):
        return "good"
    return "other"


def accuracy_by_reply_type(rm, tokenizer, labels: list[dict], population: str = "balanced") -> dict:
    """For each reply type: on held-out pairs where exactly one reply is of that type (and gold prefers one), how
    often the RM prefers the reply the gold rater prefers; and the mean reward of replies of that type (z-scored
    over all replies of these pairs). Returns {type: {"pairs", "accuracy", "mean_reward"}}."""
    r_a, r_b = label_rewards(rm, tokenizer, labels)
    everything = torch.cat([r_a, r_b])
    z_a, z_b = (r_a - everything.mean()) / everything.std(), (r_b - everything.mean()) / everything.std()
    types = [(reply_type(l["request"], l["reply_a"]), reply_type(l["request"], l["reply_b"])) for l in labels]
    golds = [(gold.gold_score(l["request"], l["reply_a"], population),
              gold.gold_score(l["request"], l["reply_b"], population)) for l in labels]
    out = {}
    for kind in REPLY_TYPES:
        hits, rewards = [], []
        for (ta, tb), (ga, gb), ra, rb, za, zb in zip(types, golds, r_a.tolist(), r_b.tolist(), z_a.tolist(),
                                                       z_b.tolist()):
            rewards += [z for t, z in ((ta, za), (tb, zb)) if t == kind]
            if (ta == kind) != (tb == kind) and ga != gb:
                hits.append((ra > rb) == (ga > gb))
        out[kind] = {"pairs": len(hits), "accuracy": round(sum(hits) / len(hits), 4) if hits else None,
                     "mean_reward": round(sum(rewards) / len(rewards), 4) if rewards else None}
    return out


def coverage_experiment(train_labels: list[dict], heldout_labels: list[dict], init: str | Path = "sft",
                        cfg: RewardConfig | None = None, population: str = "balanced",
                        policy_name: str = "sft", max_pairs: int = 1500, progress: bool = True) -> dict:
    """Train two reward models on the same number of labelled pairs and compare them by reply type.

    with_base: pairs of every type (policy-policy, policy-base, base-base), subsampled to the size of
    policy_only: pairs whose two replies both come from the policy (no base-model replies), at most max_pairs.
    train_labels / heldout_labels: labeling.simulate_labels output (reuse the lesson's labels: this only trains).
    Returns {"train_pairs", "with_base": {...}, "policy_only": {...}} where each variant holds
    "heldout_accuracy" (against the simulated choices) and "by_type" (accuracy_by_reply_type).
    """
    from .labeling import training_pairs

    cfg = cfg or RewardConfig()
    rng = random.Random(cfg.seed)
    policy_only = [l for l in train_labels if l["checkpoint_a"] == l["checkpoint_b"] == policy_name]
    if len(policy_only) < 16:
        raise ValueError(f"only {len(policy_only)} training pairs have two {policy_name} replies: sample more pairs")
    policy_only = rng.sample(policy_only, min(len(policy_only), max_pairs))  # both variants: the same number
    with_base = rng.sample(train_labels, len(policy_only))
    result = {"train_pairs": len(policy_only)}
    for variant, labels in (("with_base", with_base), ("policy_only", policy_only)):
        trained = train_reward(cfg, training_pairs(labels), init=init, heldout=heldout_labels, population=population,
                               progress=progress)
        rm, tok = trained["model"], trained["tokenizer"]
        result[variant] = {"heldout_accuracy": trained["heldout_accuracy"],
                           "gold_agreement": trained["gold_agreement"],
                           "by_type": accuracy_by_reply_type(rm, tok, heldout_labels, population),
                           "train_types": _type_counts(labels), "seconds": trained["seconds"]}
    return result


def _type_counts(labels: list[dict]) -> dict:
    """How many training replies of each reply type the labels contain."""
    counts = dict.fromkeys(REPLY_TYPES, 0)
    for l in labels:
        for side in "ab":
            counts[reply_type(l["request"], l[f"reply_{side}"])] += 1
    return counts
