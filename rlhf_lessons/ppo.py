"""PPO with a KL leash: fine-tune the SFT policy to score highly on a reward model without drifting far from SFT.

One file, read top to bottom (CleanRL-style). Each update:

1. **Rollout.** Sample one reply per training request from the current policy (KV-cached, stops at EOS, top_k 0).
2. **Score.** The reward model scores each whole reply once, read at its last token.
3. **Shape.** Every reply token t earns a per-token reward; the score arrives at the last reply token:

       r_t = -beta * (log pi(y_t | s_t) - log ref(y_t | s_t))     + [t = last] * score

   The first term is the KL leash to the frozen reference (SFT). Replies that never emit EOS get a fixed
   penalty instead of a score (a reward model cannot judge half a sentence, and the policy must not learn to ramble).
4. **Advantages.** A value head V(s_t) predicts the return from each reply prefix; GAE (gamma 1, lambda 0.95) turns
   rewards and values into advantages, computed backwards over reply tokens only, then whitened.
5. **Update.** A few epochs of minibatches of the clipped PPO objective for the policy plus a clipped value loss,
   learning rate annealed linearly to 0, gradients clipped.
6. **Leash.** The KL coefficient beta stays fixed, or follows the adaptive controller of Ziegler et al. (2019).

Shapes: B rollouts per update, P padded prompt length, R longest reply (EOS included), V vocabulary, T = P + R.
A `mask` is (B, R), 1 on reply tokens up to and including EOS, 0 after: nothing after EOS counts in any loss.

The implementation details follow "The N Implementation Details of RLHF with PPO" (Huang et al.) and OpenAI's
lm-human-preferences; the value head shares the policy's transformer as in lm-human-preferences, or is a
separate copy of the reward model as in InstructGPT (see `make_value_model`).
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Callable

import torch
import torch.nn as nn

from . import gold, world
from .config_checks import (ANY, AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, SEED, Bounds,
                            refuse_bad_settings, setting_problems)
from .models import load_policy, save_checkpoint
from .optim import check_finite_step
from .packing import hidden_states
from .runtime import pick_device, progress_bar
from .sampling import sample_replies
from .workspace import stage_dir

RewardFn = Callable[[list, list], torch.Tensor]  # reward_fn(requests, reply_texts) -> scores (B,)


@dataclass
class PPOConfig:
    # rollouts
    updates: int = 100  # PPO updates; each samples a fresh batch of replies (about 1 s each on 2 CPU cores)
    batch_size: int = 64  # replies per update (one per request)
    max_new_tokens: int = 32  # longer replies are cut and count as unended
    temperature: float = 1.0  # sampling temperature; log-probs use the same one (logits / temperature)
    # the reward
    kl_coef: float = 0.15  # beta: per-token KL penalty. <= 0.08 lets the policy game the reward model
    target_kl: float | None = None  # set (nats per reply) to let the adaptive controller move beta
    kl_horizon: int = 2_000  # adaptive controller: beta moves by at most 0.2 * batch_size / horizon per update
    #                          (0.6%: OpenAI's 10,000 with 512 replies per update moved it by 1%)
    unended_penalty: float = -1.0  # the score of a reply that never emits EOS
    whiten_scores: bool = False  # optional: whiten scores within each batch (the RM is normalised already)
    calibration_samples: int = 256  # reward_fn scores are normalised on this many reference replies
    # advantages and losses
    gamma: float = 1.0  # no discount: a reply is short and only its end is scored
    lam: float = 0.95  # GAE's bias-variance knob
    clip: float = 0.2  # policy ratio clip
    clip_value: float = 0.2  # value clip around the rollout's values
    vf_coef: float = 0.1  # weight of the value loss
    # optimisation
    epochs: int = 4  # passes over each rollout
    minibatches: int = 2  # minibatches per pass
    lr: float = 1e-4  # annealed linearly to 0 over the updates (5e-5 moved too little in 100 updates)
    adam_eps: float = 1e-5  # as in the references; PyTorch's default 1e-8 takes larger steps where gradients are tiny
    max_grad_norm: float = 1.0
    packed: bool = True  # run the transformers on real tokens only, padding packed away (packing.py); False pads
    value_model: str = "shared"  # "shared": a zero head on the policy's transformer; "reward": a separate copy of
    #                              the reward model (see make_value_model)
    # measurement
    gold_population: str = "balanced"  # the gold rater that judges the replies in the log (never the reward)
    seed: int = 0
    device: str | None = None  # None: cuda, else mps, else cpu (runtime.pick_device)


# --------------------------------------------------------------------------------------------------------------------
# Log-probabilities, entropy and values of reply tokens
# --------------------------------------------------------------------------------------------------------------------

def reply_head_logits(model, hidden: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The LM head on the hidden states that choose each reply token: (B, R, V) from hidden (B, R, n_embd).

    Only where mask (B, R) is 1 (after EOS nothing is scored, so the head is not run there: those logits are 0).
    Divided by the sampling temperature; the pad token gets -inf because the sampler never draws it.
    """
    real = mask.bool()
    scored = model.lm_head(hidden[real]) / temperature  # (number of reply tokens, V)
    logits = scored.new_zeros(*mask.shape, scored.shape[-1])
    logits[real] = scored
    pad = model.config.pad_token_id
    if pad is not None:  # the sampler never draws padding, so neither does the distribution we score
        logits = logits.index_fill(-1, torch.tensor([pad], device=logits.device), float("-inf"))
    return logits


def reply_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int,
                 temperature: float, packed: bool = True) -> torch.Tensor:
    """Logits that predicted each reply token, divided by the sampling temperature: (B, R, V).

    input_ids (B, T) = left-padded prompt (B, P) + right-padded reply (B, R); the hidden state at position t predicts
    token t + 1, so reply token j was predicted at position P - 1 + j. Dividing by the temperature gives the
    distribution the sampler actually drew from. packed: run the transformer on real tokens only (packing.py).
    """
    hidden = hidden_states(model.transformer, input_ids, attention_mask, packed)[:, n_prompt - 1:-1]
    return reply_head_logits(model, hidden, attention_mask[:, n_prompt:], temperature)


def token_logprobs(logits: torch.Tensor, reply_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(y_j) for each reply token: (B, R), 0 where mask is 0. logits (B, R, V), reply_ids and mask (B, R)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, reply_ids[..., None]).squeeze(-1)
    return torch.where(mask.bool(), logp, torch.zeros_like(logp))  # `where`, not `*`: after EOS logp may be -inf


def logprobs_of(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_prompt: int,
                temperature: float = 1.0, packed: bool = True) -> torch.Tensor:
    """Per-token log-probs of the reply under `model` at the sampling temperature: (B, R), R = T - n_prompt.

        logp[b, j] = log softmax(logits[b, P - 1 + j] / temperature)[input_ids[b, P + j]]     (0 after EOS)
    """
    logits = reply_logits(model, input_ids, attention_mask, n_prompt, temperature, packed)
    return token_logprobs(logits, input_ids[:, n_prompt:], attention_mask[:, n_prompt:])


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: (B, R) from logits (B, R, V).  H = -sum_v p_v log p_v."""
    return torch.special.entr(torch.softmax(logits.float(), dim=-1)).sum(-1)  # entr(0) = 0: -inf logits are fine


class ValueModel(nn.Module):
    """A scalar head on every position of a GPT-2: V(s) for every prefix s of the sequence.

    With a `backbone`, its own GPT-2 (a separate network); without one, the head reads the *policy's* last hidden
    states (a shared trunk, as in OpenAI's lm-human-preferences: one forward pass serves policy and value).
    forward(input_ids (B, T), attention_mask (B, T), hidden=None) -> values (B, T). values[:, P - 1 + j] is V(s_j),
    the value of the state before reply token j is chosen (the same position whose logits chose it).
    """

    def __init__(self, n_embd: int, backbone: nn.Module | None = None, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        if head is None:  # a zero head: every value starts at 0, the mean of a normalised score
            head = nn.Linear(n_embd, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.head = head

    @property
    def shared(self) -> bool:
        return self.backbone is None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                hidden: torch.Tensor | None = None, packed: bool = True) -> torch.Tensor:
        if not self.shared:
            hidden = hidden_states(self.backbone, input_ids, attention_mask, packed)
        elif hidden is None:
            raise ValueError("a shared value head reads the policy's hidden states: pass hidden=")
        return self.head(hidden).squeeze(-1)


def policy_and_values(policy, value_model: ValueModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      n_prompt: int, temperature: float, packed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Reply logits (B, R, V) at the temperature and values V(s_j) (B, R) (0 after EOS), in one policy pass.

    With a shared trunk the value head reads the hidden states of that same pass (after the final LayerNorm).
    packed: run the transformers on real tokens only (packing.py).
    """
    hidden = hidden_states(policy.transformer, input_ids, attention_mask, packed)  # (B, T, n_embd)
    mask = attention_mask[:, n_prompt:]
    logits = reply_head_logits(policy, hidden[:, n_prompt - 1:-1], mask, temperature)
    values = value_model(input_ids, attention_mask, hidden if value_model.shared else None, packed)
    return logits, values[:, n_prompt - 1:-1] * mask.to(values.dtype)


def make_value_model(policy, reward_model=None, value_model: str = "shared") -> ValueModel:
    """The critic. Two published choices:

    "shared" (the default): a zero-initialised head on the policy's own transformer (lm-human-preferences). Values
        start at 0, the mean of a normalised score, so the first advantages are simply the shaped rewards to go;
        one forward and backward pass serves both, which halves the cost of an update on a CPU, and `vf_coef`
        keeps the value loss from pushing the policy's features around.
    "reward": a separate copy of the reward model's transformer and score head, the head folded with the RM's
        normalisation (gain, bias) so values start on the normalised score's scale (InstructGPT). Without a reward
        model (a reward function): a separate copy of the policy's transformer with a zero head.
    """
    if value_model not in ("shared", "reward"):
        raise ValueError(f"value_model must be 'shared' or 'reward', not {value_model!r}")
    n_embd = policy.config.n_embd
    if value_model == "shared":
        return ValueModel(n_embd)
    if reward_model is None:
        return ValueModel(n_embd, backbone=copy.deepcopy(policy.transformer))
    gain = getattr(reward_model.config, "reward_gain", 1.0)
    bias = getattr(reward_model.config, "reward_bias", 0.0)
    head = nn.Linear(reward_model.config.n_embd, 1)
    with torch.no_grad():  # value = gain * (w . h) + bias: the RM's normalised score, read at every position
        head.weight.copy_(reward_model.score.weight * gain)
        head.bias.fill_(bias)
    return ValueModel(n_embd, backbone=copy.deepcopy(reward_model.transformer), head=head)


# --------------------------------------------------------------------------------------------------------------------
# Rewards: KL estimators, the KL-shaped per-token reward, the KL controllers
# --------------------------------------------------------------------------------------------------------------------

def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate k1 = log pi - log ref (for tokens sampled from pi). Unbiased; single terms can be < 0."""
    return logp - logp_ref


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate k3 = (ref/pi - 1) - log(ref/pi). Unbiased, never negative, lower variance: for logging."""
    log_ratio = logp_ref - logp
    return torch.expm1(log_ratio) - log_ratio


def kl_shaped_rewards(score: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor,
                      beta: float, ended: torch.Tensor, unended_penalty: float = -1.0) -> torch.Tensor:
    """Per-token rewards (B, R) from scores (B,), log-probs (B, R), mask (B, R) and ended (B,) bool.

        r_t = -beta * (logp_t - logp_ref_t)                        on every reply token (0 after EOS)
        r_last += score         if the reply ended (last = its EOS token)
        r_last += unended_penalty   otherwise (last = its last token): the score is replaced, not added to
    """
    mask = mask.to(logp.dtype)
    rewards = -beta * kl_k1(logp, logp_ref) * mask
    score = torch.where(ended.bool(), score.to(logp.dtype), torch.full_like(score, unended_penalty, dtype=logp.dtype))
    last = mask.sum(1).long() - 1  # index of each reply's last token
    if (last < 0).any():
        raise ValueError("every reply needs at least one token (its mask row is all zeros)")
    rewards[torch.arange(len(rewards), device=rewards.device), last] += score
    return rewards


class FixedKLController:
    """beta stays where it is set (TRL's later PPO): the simplest leash."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019): nudge beta so the KL to the reference drifts towards `target` nats per reply.

        err = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + err * n_steps / horizon)

    n_steps is the number of replies in the update. The clip and a long horizon make beta move slowly: a controller
    that jumps (say 10% per update) chases its own noise, oscillates and can collapse the policy.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10_000):
        if target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs target > 0 and horizon > 0")
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        err = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + err * n_steps / self.horizon


# --------------------------------------------------------------------------------------------------------------------
# Advantages: masked statistics, whitening, GAE
# --------------------------------------------------------------------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (x may hold anything, even inf, where mask is 0)."""
    mask = mask.bool()
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over valid entries only (B, R); 0 where mask is 0. shift_mean=False keeps the mean."""
    mean_x = masked_mean(x, mask)
    var = masked_mean((x - mean_x) ** 2, mask)
    out = (x - mean_x) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean_x
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over reply tokens, as a backward loop. All tensors (B, R).

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t          (no next state after the last reply token)
        A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}      (computed from the last token back to the first)
        returns = A + V                                           (the value model's targets)

    m_{t+1} = 0 past the end of a reply, so nothing after EOS flows back. Returns (advantages, returns), 0 after EOS.
    """
    mask = mask.to(values.dtype)
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(length)):  # backwards: A_t needs A_{t+1}
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros_like(next_advantage)
        next_value = values[:, t + 1] * next_mask if t + 1 < length else torch.zeros_like(next_advantage)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_mask * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def gae_vectorised(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """The same as `gae`, without a loop: A = delta @ D^T with the discount matrix D[t, k] = (gamma lam)^(k - t), k >= t.

    Valid because every mask row is ones then zeros (a reply, then padding). Used to test the loop.
    """
    mask = mask.to(values.dtype)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    steps = torch.arange(rewards.shape[1], device=rewards.device)
    power = (steps[None, :] - steps[:, None]).to(values.dtype)  # power[t, k] = k - t
    discount = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0), torch.zeros_like(power))
    advantages = (deltas @ discount.T) * mask
    return advantages, (advantages + values) * mask


# --------------------------------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------------------------------

def clipped_policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, averaged over valid tokens. Inputs (B, R); returns (loss, clipfrac, approx_kl).

        ratio = exp(logp_new - logp_old)
        loss  = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip, 1 + clip))

    The max of the negated terms is the min of the objectives: the pessimistic bound, so moving the ratio further
    than the clip range earns nothing. clipfrac: share of tokens where the clipped term won.
    approx_kl: k3 estimate of KL(old || new), a sign that a minibatch stepped too far.
    """
    log_ratio = logp_new - logp_old
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def clipped_value_loss(v_new: torch.Tensor, v_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss over valid tokens. Inputs (B, R); returns (loss, clipfrac).

        v_clip = v_old + clip(v_new - v_old, -clip, clip)
        loss   = 0.5 * mean_t max((v_new - R_t)^2, (v_clip - R_t)^2)

    Like the policy, the value model gains nothing by moving further than `clip` from its rollout values.
    """
    v_clipped = v_old + torch.clamp(v_new - v_old, -clip, clip)
    unclipped_sq, clipped_sq = (v_new - returns) ** 2, (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_sq, clipped_sq), mask)
    clipfrac = masked_mean((clipped_sq > unclipped_sq).float(), mask)
    return loss, clipfrac.detach()


# --------------------------------------------------------------------------------------------------------------------
# Rewards as functions of (requests, samples)
# --------------------------------------------------------------------------------------------------------------------

def gold_reward_fn(population: str = "balanced") -> RewardFn:
    """The gold rater as a reward: reward_fn(requests, texts) -> gold scores (B,). An upper bound no real RLHF has."""
    if population not in gold.POPULATIONS:
        raise ValueError(f"unknown population {population!r}; choose from {sorted(gold.POPULATIONS)}")

    def reward_fn(requests, texts):
        return torch.tensor([gold.gold_score(r, t, population) for r, t in zip(requests, texts, strict=True)])

    return reward_fn


def load_reward(reward: str, tokenizer, device="cpu", packed: bool = True):
    """(score_fn(requests, samples) -> (B,), reward model or None) for a reward name.

    `gold` or `gold:POPULATION`: the gold rater. Anything else: a reward model checkpoint (`rm` or a folder) that
    must share the policy's tokenizer; its scores are already normalised (mean 0, std 1 on reference replies).
    """
    if reward == "gold" or reward.startswith("gold:"):
        fn = gold_reward_fn(reward.partition(":")[2] or "balanced")
        return (lambda requests, samples: fn(requests, samples.texts)), None
    from .reward import load_reward_model, score_ids

    rm, _ = load_reward_model(reward, policy_tokenizer=tokenizer, device=device)  # refuses a reward model with another tokenizer
    for p in rm.parameters():
        p.requires_grad_(False)

    @torch.no_grad()
    def score_fn(requests, samples):
        return score_ids(rm, samples.input_ids, samples.attention_mask, packed).float()

    return score_fn, rm


@torch.no_grad()
def calibrate(score_fn, policy, tokenizer, requests: list, cfg: PPOConfig,
              generator: torch.Generator) -> tuple[float, float]:
    """(mean, std) of score_fn on the reference policy's replies, so scores can be normalised to mean 0, std 1.

    Then beta means the same whatever the scale of the reward (detail 3 of the references).
    """
    scores = []
    for start in range(0, len(requests), cfg.batch_size):
        batch = requests[start:start + cfg.batch_size]
        samples = sample_replies(policy, tokenizer, [r.prompt for r in batch], cfg.max_new_tokens,
                                 cfg.temperature, top_k=0, generator=generator)
        scores.append(score_fn(batch, samples).float().cpu())
    scores = torch.cat(scores)
    return scores.mean().item(), max(scores.std().item(), 1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Rollouts and the PPO update
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    """Everything one update learns from. Tensors (B, T) for the sequence, (B, R) for reply tokens, (B,) per reply."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    n_prompt: int
    mask: torch.Tensor  # (B, R) reply tokens, EOS included
    logp: torch.Tensor  # (B, R) policy log-probs at sampling time ("old")
    values: torch.Tensor  # (B, R) value estimates at sampling time
    advantages: torch.Tensor  # (B, R) whitened
    returns: torch.Tensor  # (B, R)
    stats: dict = field(default_factory=dict)


@torch.no_grad()
def make_rollout(policy, reference, value_model, tokenizer, requests: list, score_fn, beta: float, cfg: PPOConfig,
                 generator: torch.Generator, score_norm: tuple[float, float] = (0.0, 1.0)) -> tuple[Rollout, list]:
    """Sample replies, score them, shape the rewards and compute advantages. Returns (rollout, reply texts)."""
    samples = sample_replies(policy, tokenizer, [r.prompt for r in requests], cfg.max_new_tokens, cfg.temperature,
                             top_k=0, generator=generator)
    ids, attn, n_prompt, mask = samples.input_ids, samples.attention_mask, samples.prompt_ids.shape[1], samples.reply_mask
    logits, values = policy_and_values(policy, value_model, ids, attn, n_prompt, cfg.temperature, cfg.packed)
    logp = token_logprobs(logits, samples.reply_ids, mask)  # recomputed in one batch, as the update will
    logp_ref = logprobs_of(reference, ids, attn, n_prompt, cfg.temperature, cfg.packed)

    score = (score_fn(requests, samples).float().to(logp.device) - score_norm[0]) / score_norm[1]
    shaped_score = whiten(score, torch.ones_like(score)) if cfg.whiten_scores else score
    rewards = kl_shaped_rewards(shaped_score, logp, logp_ref, mask, beta, samples.ended, cfg.unended_penalty)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    advantages = whiten(advantages, mask)  # one scale for every batch: the learning rate means the same throughout

    fmask = mask.float()
    scored = torch.where(samples.ended.to(score.device).bool(), score, torch.full_like(score, cfg.unended_penalty))
    stats = {
        "proxy_reward": scored.mean().item(),  # what PPO was paid: an unended reply's score is the penalty
        "rm_score": score.mean().item(),  # the reward model's opinion of every reply, unended ones included
        "kl": (kl_k1(logp, logp_ref) * fmask).sum(1).mean().item(),  # nats per reply
        "kl_k3": (kl_k3(logp, logp_ref) * fmask).sum(1).mean().item(),
        "entropy": masked_mean(entropy_of(logits), mask).item(),  # nats per token
        "reply_length": fmask.sum(1).mean().item(),  # tokens, EOS included
        "ended": samples.ended.float().mean().item(),
        "return": returns[:, 0].mean().item(),
    }
    rollout = Rollout(ids, attn, n_prompt, mask, logp, values, advantages, returns, stats)
    return rollout, samples.texts


def ppo_update(policy, value_model, optimizer: torch.optim.Optimizer, rollout: Rollout, cfg: PPOConfig,
               generator: torch.Generator, update: int | None = None) -> dict:
    """`cfg.epochs` passes of `cfg.minibatches` minibatches over one rollout. Returns mean losses and diagnostics.

    update: the index of this update in the run, named in the message if training diverges.
    """
    batch = rollout.input_ids.shape[0]
    size = math.ceil(batch / cfg.minibatches)
    totals: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [],
                                      "value_clipfrac": []}
    for epoch in range(cfg.epochs):
        order = torch.randperm(batch, generator=generator).to(rollout.input_ids.device)
        for start in range(0, batch, size):
            rows = order[start:start + size]
            ids, attn, mask = rollout.input_ids[rows], rollout.attention_mask[rows], rollout.mask[rows]
            logits, values = policy_and_values(policy, value_model, ids, attn, rollout.n_prompt, cfg.temperature,
                                               cfg.packed)
            logp = token_logprobs(logits, ids[:, rollout.n_prompt:], mask)
            pg_loss, clipfrac, approx_kl = clipped_policy_loss(logp, rollout.logp[rows], rollout.advantages[rows],
                                                               mask, cfg.clip)
            vf_loss, vf_clipfrac = clipped_value_loss(values, rollout.values[rows], rollout.returns[rows], mask,
                                                      cfg.clip_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # one bad minibatch cannot wreck either network; a NaN one stops training before the step spreads it
            policy_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            value_norm = torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.max_grad_norm)
            where = (f"update {update + 1} of {cfg.updates}, " if update is not None else "") + \
                f"epoch {epoch + 1}, minibatch {start // size + 1}"
            check_finite_step("PPO", where, loss, policy_norm, value_norm,
                              advice=f"try a lower lr (it is {cfg.lr:g})")
            optimizer.step()
            for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("clipfrac", clipfrac),
                               ("approx_kl", approx_kl), ("value_clipfrac", vf_clipfrac)):
                totals[key].append(value.item())
    return {key: mean(values) for key, values in totals.items()}


# --------------------------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------------------------

PPO_BOUNDS = {"updates": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE, "max_new_tokens": AT_LEAST_ONE,
              "temperature": POSITIVE, "kl_coef": Bounds(0, note="0 removes the leash"),
              "target_kl": Bounds(0, above=True, note="nats per reply, or None for a fixed kl_coef"),
              "kl_horizon": AT_LEAST_ONE, "unended_penalty": ANY, "calibration_samples": AT_LEAST_ONE,
              "gamma": FRACTION, "lam": FRACTION, "clip": POSITIVE, "clip_value": POSITIVE, "vf_coef": NON_NEGATIVE,
              "epochs": AT_LEAST_ONE, "minibatches": AT_LEAST_ONE, "lr": POSITIVE, "adam_eps": POSITIVE,
              "max_grad_norm": POSITIVE, "seed": SEED}


def check_config(cfg: PPOConfig) -> None:
    """Refuse settings that cannot work, with a message that says what to change (NaN included: `nan < 0` is
    False, so a plain comparison lets it through)."""
    problems = setting_problems(cfg, PPO_BOUNDS)
    if not problems and cfg.minibatches > cfg.batch_size:
        problems.append(f"minibatches ({cfg.minibatches}) cannot exceed batch_size ({cfg.batch_size})")
    if cfg.value_model not in ("shared", "reward"):
        problems.append(f"value_model must be 'shared' or 'reward', not {cfg.value_model!r}")
    if cfg.gold_population not in gold.POPULATIONS:
        problems.append(f"gold_population must be one of {sorted(gold.POPULATIONS)}")
    refuse_bad_settings("PPO", problems)


def build_missing(policy: str = "sft", reward: str | None = "rm") -> None:
    """Train the workspace's SFT model and reward model first if they are asked for by name and missing.

    Lesson 05 then runs on a fresh workspace too; the time this takes is not counted as PPO's.
    """
    if str(policy) == "sft":
        from .sft import ensure_sft

        ensure_sft()
    if str(reward) == "rm" and not (stage_dir("rm") / "config.json").exists():
        from .reward import run_reward_stage

        print(f"No reward model in {stage_dir('rm').parent} yet: training one now (lesson 04's default settings).",
              file=sys.stderr)
        run_reward_stage()


def _request_stream(requests: list, batch_size: int, seed: int):
    """Endless batches of training requests: each pass over the set in a new seeded order."""
    rng = random.Random(seed)
    pool: list = []
    while True:
        while len(pool) < batch_size:
            pool += rng.sample(requests, len(requests))
        yield pool[:batch_size]
        pool = pool[batch_size:]


def train_ppo(cfg: PPOConfig | None = None, policy: str = "sft", reward: str = "rm", out_dir: str | Path | None = None,
              on_update: Callable[[int, dict], None] | None = None, reward_fn: RewardFn | None = None) -> dict:
    """PPO-train checkpoint `policy` against `reward`; save the policy and `log.json` to `out_dir`.

    policy: checkpoint name or folder (the frozen reference is a second copy of it).
    reward: reward model checkpoint (`rm` or a folder), or `gold` / `gold:POPULATION` (the gold rater itself).
    reward_fn: if given, replaces `reward`: reward_fn(requests, reply_texts) -> scores (B,), normalised here on the
        reference policy's replies.
    on_update(update, row) is called after every update with the logged row (notebooks draw live curves).
    Returns a summary dict: proxy_reward, gold_reward, kl, kl_coef (means over the last 10 updates), updates,
    seconds, out, log.
    """
    cfg = cfg or PPOConfig()
    check_config(cfg)
    build_missing(policy, None if reward_fn is not None else reward)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    sample_gen = torch.Generator(device=device).manual_seed(cfg.seed)  # the replies
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)  # the minibatches

    model, tokenizer = load_policy(policy, device=device)
    reference = copy.deepcopy(model)  # frozen: the leash is measured against where we started
    for p in reference.parameters():
        p.requires_grad_(False)
    model.eval()  # eval mode throughout: dropout off, so log-probs at sampling and at update time agree

    train_requests = world.requests("train")
    if reward_fn is not None:
        score_fn = lambda requests, samples: reward_fn(requests, samples.texts)  # noqa: E731
        reward_model, reward_name = None, getattr(reward_fn, "__name__", "reward_fn")
    else:
        score_fn, reward_model = load_reward(reward, tokenizer, device, cfg.packed)
        reward_name = str(reward)
    score_norm = (0.0, 1.0)  # a reward model is normalised already
    if reward_model is None:  # a function's raw scores: normalise them on the reference policy's replies
        cal_rng = random.Random(cfg.seed + 2)
        cal_requests = cal_rng.sample(train_requests, min(cfg.calibration_samples, len(train_requests)))
        score_norm = calibrate(score_fn, reference, tokenizer, cal_requests, cfg,
                               torch.Generator(device=device).manual_seed(cfg.seed + 2))
    value_model = make_value_model(model, reward_model, cfg.value_model).to(device)
    value_model.eval()
    for p in value_model.parameters():
        p.requires_grad_(True)

    # Adam without weight decay: decay would pull the policy towards zero, not towards the reference
    params = list(model.parameters()) + list(value_model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl is not None
              else FixedKLController(cfg.kl_coef))

    stream = _request_stream(train_requests, cfg.batch_size, cfg.seed)
    log: list[dict] = []
    bar = progress_bar(range(cfg.updates), desc="PPO")
    for update in bar:
        lr = cfg.lr * (1 - update / cfg.updates)  # linear annealing to 0
        for group in optimizer.param_groups:
            group["lr"] = lr
        requests = next(stream)
        beta = kl_ctl.value
        rollout, texts = make_rollout(model, reference, value_model, tokenizer, requests, score_fn, beta, cfg,
                                      sample_gen, score_norm)
        losses = ppo_update(model, value_model, optimizer, rollout, cfg, shuffle_gen, update)
        kl_ctl.update(rollout.stats["kl"], cfg.batch_size)
        gold_scores = [gold.gold_score(r, t, cfg.gold_population) for r, t in zip(requests, texts)]
        row = {"update": update, "proxy_reward": rollout.stats["proxy_reward"], "gold_reward": mean(gold_scores),
               "kl": rollout.stats["kl"], "kl_k3": rollout.stats["kl_k3"], "kl_coef": beta,
               "entropy": rollout.stats["entropy"], "clipfrac": losses["clipfrac"],
               "approx_kl": losses["approx_kl"], "policy_loss": losses["policy_loss"],
               "value_loss": losses["value_loss"], "value_clipfrac": losses["value_clipfrac"],
               "reply_length": rollout.stats["reply_length"], "ended": rollout.stats["ended"], "lr": lr,
               "seconds": time.time() - t0}
        row = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
        log.append(row)
        if on_update is not None:
            on_update(update, row)
        bar.set_postfix(proxy=f"{row['proxy_reward']:+.2f}", gold=f"{row['gold_reward']:+.2f}",
                        kl=f"{row['kl']:.2f}")
    bar.close()

    last = log[-10:]
    out = Path(out_dir) if out_dir is not None else stage_dir("ppo")
    summary = {"out": str(out), "updates": cfg.updates,
               "proxy_reward": round(mean(r["proxy_reward"] for r in last), 4),
               "gold_reward": round(mean(r["gold_reward"] for r in last), 4),
               "kl": round(mean(r["kl"] for r in last), 4),
               "kl_coef": round(kl_ctl.value, 5),
               "proxy_reward_start": log[0]["proxy_reward"], "gold_reward_start": log[0]["gold_reward"],
               "seconds": round(time.time() - t0, 1)}
    save_checkpoint(model, tokenizer, out, {"stage": "ppo", "policy": str(policy), "reward": reward_name,
                                            "score_norm": list(score_norm), "config": asdict(cfg), **summary,
                                            "command": "rlhf-lessons ppo"},
                    extra_files={"log.json": json.dumps(log, indent=1) + "\n"})  # swapped in with the model
    return {**summary, "log": log}


def run_ppo_stage(policy: str = "sft", reward: str = "rm", out: str | Path | None = None,
                  kl_coef: float | None = None, target_kl: float | None = None, updates: int | None = None,
                  seed: int = 0, cfg: PPOConfig | None = None, evaluate_n: int | None = None) -> dict:
    """`rlhf-lessons ppo`: train with the defaults (or the options given), then measure on held-out requests.

    Prints nothing on stdout. Returns the training summary (without the per-update log) plus the yardstick of the
    new policy against `policy` on held-out requests: gold_mean, win_rate, harmful_compliance_rate, over_refusal_rate,
    helpful_rate, polite_rate, mean_reply_tokens. `seconds` is this stage's own time, evaluation included.
    """
    from .evaluate import evaluate

    if kl_coef is not None and target_kl is not None:
        raise ValueError("give either kl_coef (a fixed beta) or target_kl (the adaptive controller), not both")
    cfg = copy.deepcopy(cfg) if cfg is not None else PPOConfig()
    cfg.seed = seed
    if kl_coef is not None:
        cfg.kl_coef, cfg.target_kl = kl_coef, None
    if target_kl is not None:
        cfg.target_kl = target_kl
    if updates is not None:
        cfg.updates = updates
    check_config(cfg)
    build_missing(policy, reward)
    t0 = time.time()
    summary = train_ppo(cfg, policy=policy, reward=reward, out_dir=out)
    summary.pop("log")
    figures = evaluate(summary["out"], against=str(policy), n=evaluate_n, seed=seed)
    keep = ("gold_mean", "win_rate", "helpful_rate", "polite_rate", "harmful_compliance_rate", "harmful_evasion_rate",
            "over_refusal_rate", "mean_reply_tokens")
    summary.update({key: figures[key] for key in keep})
    summary["seconds"] = round(time.time() - t0, 1)
    return {"stage": "ppo", "policy": str(policy), "reward": str(reward), **summary}
