"""Supervised fine-tuning (SFT): teach the base model to reply like the demonstrations.

An example is the formatted request followed by the demonstrated reply and EOS:

    User: How long should I boil an egg?\\nAssistant: Boil the egg for about ten minutes.<|endoftext|>
    |------------------ prompt: label -100 -----------| |------------ reply: learned ------------|

The loss is next-token cross-entropy on reply tokens only (the model should learn to answer, not to ask), with
logits at position t predicting the token at t + 1:

    loss = - sum_{t in reply} log p(x_{t+1} | x_{<=t}) / (number of reply tokens)

Batches are right-padded; padding is masked out of both attention and loss.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from .config_checks import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, SEED, refuse_bad_settings, setting_problems
from .errors import CourseError
from .models import encode_example, load_policy, save_checkpoint
from .optim import check_finite_step, lr_at, make_adamw, set_lr
from .packing import hidden_states
from .runtime import progress_bar
from .workspace import stage_dir

IGNORE = -100  # the label PyTorch's cross_entropy skips


@dataclass
class SFTConfig:
    n_demonstrations: int = 240  # demonstrations are expensive: few of them, a little imperfect
    eval_fraction: float = 0.15  # held out to measure eval_loss
    epochs: int = 5
    batch_size: int = 16
    peak_lr: float = 5e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0


SFT_BOUNDS = {"n_demonstrations": AT_LEAST_ONE, "eval_fraction": FRACTION, "epochs": AT_LEAST_ONE,
              "batch_size": AT_LEAST_ONE, "peak_lr": POSITIVE, "warmup_steps": NON_NEGATIVE,
              "weight_decay": NON_NEGATIVE, "max_grad_norm": POSITIVE, "seed": SEED}


def check_config(cfg: SFTConfig) -> None:
    """Refuse settings that cannot train (NaN, 0 epochs, no demonstrations left to train on) before any work."""
    problems = setting_problems(cfg, SFT_BOUNDS)
    if not problems and cfg.n_demonstrations - max(1, int(cfg.n_demonstrations * cfg.eval_fraction)) < 1:
        problems.append(f"n_demonstrations={cfg.n_demonstrations} with eval_fraction={cfg.eval_fraction} leaves no "
                        "demonstration to train on (one at least is held out): ask for more demonstrations")
    refuse_bad_settings("SFT", problems)


def collate(tokenizer, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded batch of (prompt, reply) examples.

    Returns input_ids (B, T), attention_mask (B, T) with 1 on real tokens, labels (B, T): the token id on reply
    tokens (EOS included) and IGNORE on prompt and padding.
    """
    encoded = [encode_example(tokenizer, prompt, reply) for prompt, reply in examples]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over reply tokens. logits (B, T, V), labels (B, T) with IGNORE where not learned.

    Shift by one: logits[:, t] predict labels[:, t + 1].
    """
    logits, targets = logits[:, :-1, :], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)


def batch_loss(model, batch: dict[str, torch.Tensor], packed: bool = True) -> torch.Tensor:
    """masked_lm_loss of a collated batch.

    packed: the transformer runs on real tokens only (packing.py) and the LM head only where a reply token is
    predicted; the loss is the padded computation's (tests/test_packing.py). False: the plain padded forward pass.
    """
    device = next(model.parameters()).device
    ids, attn, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    if not packed:
        return masked_lm_loss(model(input_ids=ids, attention_mask=attn).logits, labels)
    hidden = hidden_states(model.transformer, ids, attn)[:, :-1]  # position t predicts token t + 1
    targets = labels[:, 1:]
    learned = targets != IGNORE
    return F.cross_entropy(model.lm_head(hidden[learned]), targets[learned])  # the mean over learned tokens


def demonstration_pairs(cfg: SFTConfig, examples: list[tuple[str, str]] | None = None
                        ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, eval) lists of (prompt, reply) demonstrations, split at random by the seed.

    examples: demonstrations to use instead of the world's cfg.n_demonstrations (say, the chosen replies of
    preference pairs: round_two.chosen_demonstrations)."""
    pairs = list(examples) if examples is not None else [(r.prompt, reply)
                                                         for r, reply in world.demonstrations(cfg.n_demonstrations)]
    if len(pairs) < 2:
        raise CourseError(f"{len(pairs)} demonstration(s): SFT needs two at least (one is held out to measure)")
    random.Random(cfg.seed).shuffle(pairs)
    n_eval = max(1, int(len(pairs) * cfg.eval_fraction))
    return pairs[n_eval:], pairs[:n_eval]


@torch.no_grad()
def eval_loss(model, tokenizer, examples: list[tuple[str, str]], batch_size: int = 64) -> float:
    model.eval()
    losses = [batch_loss(model, collate(tokenizer, examples[i:i + batch_size])).item() * len(examples[i:i + batch_size])
              for i in range(0, len(examples), batch_size)]
    return sum(losses) / len(examples)


def train_sft(cfg: SFTConfig | None = None, base: str = "base", out_dir: str | Path | None = None,
              on_step=None, examples: list[tuple[str, str]] | None = None) -> dict:
    """Fine-tune checkpoint `base` on the demonstrations (or on `examples`, (prompt, reply) pairs); save to
    `out_dir` (default: the workspace's `sft`).

    on_step(step, train_loss, eval_loss_or_None) is called after every optimiser step (notebooks draw live curves).
    Returns {"out", "train_loss", "eval_loss", "eval_loss_before", "steps", "seconds"}.
    """
    cfg = cfg or SFTConfig()
    check_config(cfg)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(base)
    train, held = demonstration_pairs(cfg, examples)
    before = eval_loss(model, tokenizer, held)
    optimizer = make_adamw(model, cfg.peak_lr, cfg.weight_decay)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    rng = random.Random(cfg.seed)
    step, running = 0, None
    bar = progress_bar(total=total, desc="SFT")
    for _epoch in range(cfg.epochs):
        order = rng.sample(train, len(train))
        for i in range(0, len(order), cfg.batch_size):
            model.train()
            set_lr(optimizer, lr_at(step, total, cfg.peak_lr, cfg.warmup_steps))
            loss = batch_loss(model, collate(tokenizer, order[i:i + cfg.batch_size]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # one bad batch can't wreck it; a NaN one stops training before the step spreads it
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            check_finite_step("SFT", f"step {step + 1} of {total}", loss, grad_norm,
                              advice=f"try a lower peak_lr (it is {cfg.peak_lr:g})")
            optimizer.step()
            step += 1
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            held_loss = eval_loss(model, tokenizer, held) if step % steps_per_epoch == 0 else None
            if on_step is not None:
                on_step(step, loss.item(), held_loss)
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)  # drawn by update (runtime.progress_bar)
            bar.update(1)
    bar.close()
    final_eval = eval_loss(model, tokenizer, held)
    seconds = round(time.time() - t0, 1)
    out = Path(out_dir) if out_dir is not None else stage_dir("sft")
    summary = {"out": str(out), "train_loss": round(running, 4), "eval_loss": round(final_eval, 4),
               "eval_loss_before": round(before, 4), "steps": step, "train_examples": len(train),
               "seconds": seconds}
    save_checkpoint(model, tokenizer, out, {"stage": "sft", "base": str(base), "config": asdict(cfg), **summary,
                                            "command": "rlhf-lessons sft"})
    return summary


def ensure_sft(quiet: bool = False) -> Path:
    """The workspace's SFT checkpoint, trained now (about half a minute, with a progress bar) if it is missing."""
    path = stage_dir("sft")
    if not (path / "config.json").exists():
        if not quiet:
            print(f"No SFT checkpoint in {path.parent} yet: training one now (lesson 02's default settings).",
                  file=sys.stderr)
        train_sft(SFTConfig())
    return path
