"""Pretraining the base model: next-token prediction on the world's mixed-style dialogues.

This is how the shipped `data/base` checkpoint was made (`rlhf-lessons pretrain`). The base model learns the world's
facts and every reply style it saw, good and bad, in the proportions it saw them: it continues a dialogue the way
the internet would, not the way an assistant should.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from . import world
from .config_checks import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, SEED, Bounds, refuse_bad_settings, setting_problems
from .models import CONTEXT, encode_example, format_prompt, save_checkpoint, tiny_config, train_tokenizer
from .optim import check_finite_step, lr_at, make_adamw, set_lr
from .runtime import progress_bar


@dataclass
class PretrainConfig:
    n_dialogues: int = 120_000  # pretraining text: about 3.5M tokens of dialogues
    vocab_size: int = 2048
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128  # tokens per training sequence (dialogues are packed end to end)
    batch_size: int = 32
    steps: int = 1500
    peak_lr: float = 3e-3
    warmup_steps: int = 100
    seed: int = 0


PRETRAIN_BOUNDS = {"n_dialogues": AT_LEAST_ONE, "vocab_size": Bounds(258, note="the 256 bytes and EOS and PAD"),
                   "n_layer": AT_LEAST_ONE, "n_embd": AT_LEAST_ONE, "n_head": AT_LEAST_ONE,
                   "block_size": Bounds(1, CONTEXT, note="the model's context"), "batch_size": AT_LEAST_ONE,
                   "steps": AT_LEAST_ONE, "peak_lr": POSITIVE, "warmup_steps": NON_NEGATIVE, "seed": SEED}


def check_config(cfg: PretrainConfig) -> None:
    """Refuse settings that cannot train (NaN, 0 steps, heads that do not divide the width) before the data is
    prepared, which takes a minute."""
    problems = setting_problems(cfg, PRETRAIN_BOUNDS)
    if not problems and cfg.n_embd % cfg.n_head:
        problems.append(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
    refuse_bad_settings("pretraining", problems)


def dialogue_text(prompt: str, reply: str) -> str:
    return format_prompt(prompt) + " " + reply


def token_stream(tokenizer, dialogues: list[tuple[world.Request, str, str]]) -> torch.Tensor:
    """All dialogues encoded and concatenated: shape (n_tokens,). Each ends with EOS, so the model learns to stop."""
    ids: list[int] = []
    for request, _style, reply in dialogues:
        ids += encode_example(tokenizer, request.prompt, reply)[0]
    return torch.tensor(ids, dtype=torch.long)


def random_blocks(stream: torch.Tensor, batch_size: int, block_size: int, gen: torch.Generator) -> torch.Tensor:
    """A batch of random windows of the stream: shape (batch_size, block_size + 1) (inputs and shifted targets)."""
    starts = torch.randint(0, len(stream) - block_size - 1, (batch_size,), generator=gen)
    return torch.stack([stream[s:s + block_size + 1] for s in starts.tolist()])


def next_token_loss(model, blocks: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from tokens <= t. blocks: (B, T+1)."""
    logits = model(input_ids=blocks[:, :-1]).logits  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), blocks[:, 1:].reshape(-1))


def pretrain(cfg: PretrainConfig, out_dir: str | Path, command: str = "rlhf-lessons pretrain") -> dict:
    """Train tokenizer and base model from scratch; save both to `out_dir`. Returns a summary dict."""
    check_config(cfg)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    dialogues = world.pretraining_dialogues(cfg.n_dialogues, seed=cfg.seed)
    heldout = world.pretraining_dialogues(2_000, seed=cfg.seed + 1, split="heldout")  # for the held-out loss
    tokenizer = train_tokenizer([dialogue_text(r.prompt, reply) for r, _, reply in dialogues[:20_000]],
                                cfg.vocab_size)
    train_ids, eval_ids = token_stream(tokenizer, dialogues), token_stream(tokenizer, heldout)
    model = GPT2LMHeadModel(tiny_config(tokenizer, cfg.n_layer, cfg.n_embd, cfg.n_head))
    optimizer = make_adamw(model, cfg.peak_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    bar = progress_bar(range(cfg.steps), desc="pretraining")
    for step in bar:
        set_lr(optimizer, lr_at(step, cfg.steps, cfg.peak_lr, cfg.warmup_steps))
        loss = next_token_loss(model, random_blocks(train_ids, cfg.batch_size, cfg.block_size, gen))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        check_finite_step("pretraining", f"step {step + 1} of {cfg.steps}", loss, grad_norm,
                          advice=f"try a lower peak_lr (it is {cfg.peak_lr:g})")
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        eval_blocks = eval_ids[: (len(eval_ids) - 1) // cfg.block_size * cfg.block_size + 1]
        n = (len(eval_blocks) - 1) // cfg.block_size
        blocks = torch.stack([eval_blocks[i * cfg.block_size:(i + 1) * cfg.block_size + 1] for i in range(n)])
        eval_loss = next_token_loss(model, blocks).item()
    summary = {"stage": "pretrain", "config": asdict(cfg), "seed": cfg.seed, "steps": cfg.steps,
               "final_train_loss": round(loss.item(), 4), "heldout_loss": round(eval_loss, 4),
               "train_tokens": len(train_ids), "vocab_size": len(tokenizer),
               "data_sha256": hashlib.sha256(train_ids.numpy().tobytes()).hexdigest(), "command": command}
    save_checkpoint(model, tokenizer, out_dir, summary)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["out"] = str(out_dir)
    return summary
