"""Sampling replies, many at once, with a KV cache.

A batch of prompts is *left*-padded so that every prompt ends at the same position and the first new token of each
row is predicted from the same column. Each step feeds only the newest token: the keys and values of everything
before it are kept in the cache, which makes sampling several times faster than re-running the whole sequence.
A row that has said EOS leaves the batch (and the cache): replies are short and uneven, and computing on finished
rows would waste about half of the work.

    p(token) = softmax(logits / temperature)      (top_k = 0: no truncation, as RLHF's PPO samples)

A prompt that several rows ask (the k replies of a ranking, best-of-n's n) is read once and its cache copied to them.
Each step draws one uniform number per row of the whole batch, finished or not, and picks the token where the
cumulative probability first exceeds it (inverse-CDF sampling): a row's reply depends on the generator's state
and the row's own probabilities only, not on which other rows have already finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .models import format_prompt


@dataclass
class Samples:
    """A batch of sampled replies. B = batch, P = padded prompt length, R = longest reply (EOS included)."""

    prompts: list[str]
    prompt_ids: torch.Tensor  # (B, P) left-padded with the pad id
    prompt_mask: torch.Tensor  # (B, P) 1 for real prompt tokens
    reply_ids: torch.Tensor  # (B, R) right-padded; a reply that ended holds its EOS
    reply_mask: torch.Tensor  # (B, R) 1 for reply tokens, EOS included
    ended: torch.Tensor  # (B,) bool: the reply emitted EOS within max_new_tokens
    texts: list[str]  # the replies as text, EOS dropped

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and reply side by side: (B, P + R)."""
        return torch.cat([self.prompt_ids, self.reply_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.reply_mask], dim=1)


def pad_sequences(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (ids (B, T), mask (B, T)) from lists of token ids, padded on the right or on the left."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def left_pad(tokenizer, prompts: list[str], max_new_tokens: int = 0, device="cpu"):
    """Encode formatted prompts, left-padded: (ids (B, P), mask (B, P)). Refuses prompts that leave no room."""
    encoded = [tokenizer.encode(format_prompt(p)) for p in prompts]
    limit = tokenizer.model_max_length
    for prompt, ids in zip(prompts, encoded):
        if len(ids) + max_new_tokens > limit:
            raise ValueError(f"the request {prompt[:60]!r} is {len(ids)} tokens; with {max_new_tokens} new tokens it "
                             f"exceeds the model's context of {limit}. Shorten the request or ask for fewer tokens.")
    ids, mask = pad_sequences(encoded, tokenizer.pad_token_id, side="left")
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token, whatever the left padding: (B, T)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def temperature_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Next-token probabilities softmax(logits / temperature), optionally only over the top_k tokens.

    logits (..., V) -> probabilities (..., V). Temperature < 1 sharpens the distribution, > 1 flattens it.
    """
    logits = logits.float() / temperature
    if top_k > 0:  # keep the k likeliest tokens
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def draw_tokens(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds u.   probs (B, V), u (B,) in [0, 1).

    P(token i) = cdf[i] - cdf[i-1] = p_i, and a token of probability 0 is never drawn (its cdf does not rise).
    """
    cdf = probs.cumsum(-1)
    target = (uniform * cdf[:, -1]).unsqueeze(1)  # scaled by the total, which float sums leave a hair off 1
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.size(1) - 1)


@torch.no_grad()
def sample_replies(model, tokenizer, prompts: list[str], max_new_tokens: int = 40, temperature: float = 1.0,
                   top_k: int = 0, generator: torch.Generator | None = None) -> Samples:
    """Sample one reply per prompt, stopping each row at EOS. Deterministic given `generator`."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use a small value such as 0.01 for near-greedy sampling)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    prompt_ids, prompt_mask = left_pad(tokenizer, prompts, max_new_tokens, device)
    batch = len(prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    cache = DynamicCache(config=model.config)
    mask = prompt_mask
    # Each distinct prompt is read once (a ranking asks one request k times, best-of-n n times), and its keys and
    # values are copied to every row that asks it. Only the last position's logits are needed: the LM head skips
    # the rest of the prompt.
    first_row: dict[str, int] = {}
    for row, prompt in enumerate(prompts):
        first_row.setdefault(prompt, row)
    distinct = torch.tensor(list(first_row.values()), device=device)  # (D,) the first row asking each prompt
    out = model(input_ids=prompt_ids[distinct], attention_mask=mask[distinct], position_ids=positions(mask)[distinct],
                cache=cache, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1, :]  # (D, V)
    if len(distinct) < batch:
        slot = {prompt: d for d, prompt in enumerate(first_row)}
        copy_of = torch.tensor([slot[p] for p in prompts], device=device)  # (B,) each row's distinct prompt
        cache.batch_select_indices(copy_of)
        logits = logits[copy_of]
    next_pos = positions(mask)[:, -1:] + 1
    reply_ids = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # the rows still writing; the cache holds only these
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = 0
    for step in range(max_new_tokens):
        logits[:, pad] = float("-inf")  # padding is layout, never a word the model may say
        probs = temperature_probs(logits, temperature, top_k)
        uniform = torch.rand(batch, generator=generator, device=device)[active]  # a draw for every row, kept or not
        token = draw_tokens(probs, uniform)  # (active,)
        reply_ids[active, step] = token
        steps = step + 1
        ended = token == eos
        finished[active[ended]] = True
        if ended.all():
            break
        if ended.any():  # finished rows leave the batch and the cache
            keep = (~ended).nonzero().squeeze(1)
            active, mask, next_pos, token = active[keep], mask[keep], next_pos[keep], token[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, cache=cache,
                    use_cache=True)
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :]

    reply_ids = reply_ids[:, :steps]  # (B, R)
    reply_mask = (reply_ids != pad).long()
    texts = [tokenizer.decode([t for t in row.tolist() if t not in (eos, pad)]).strip() for row in reply_ids]
    model.train(was_training)
    return Samples(prompts=list(prompts), prompt_ids=prompt_ids, prompt_mask=prompt_mask, reply_ids=reply_ids,
                   reply_mask=reply_mask, ended=finished, texts=texts)


def sample_in_batches(model, tokenizer, prompts: list[str], batch_size: int = 64, seed: int = 0,
                      **kwargs) -> list[str]:
    """Reply texts for many prompts, sampled `batch_size` at a time with one seeded generator."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts += sample_replies(model, tokenizer, prompts[start:start + batch_size], generator=generator,
                                **kwargs).texts
    return texts
