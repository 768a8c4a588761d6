"""The optimiser and learning-rate schedule shared by every training loop of the course."""

from __future__ import annotations

import math

import torch

from .errors import TrainingDiverged


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_steps: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up to `peak_lr` over `warmup_steps`, then cosine decay to `final_fraction * peak_lr`.

    Warm-up keeps Adam's first, badly estimated steps small; the decay lets training settle at the end.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = final_fraction * peak_lr
    return floor + 0.5 * (peak_lr - floor) * (1 + math.cos(math.pi * progress))


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains or embeddings' norms), as in GPT-2."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite_step(stage: str, where: str, loss: torch.Tensor, *grad_norms: torch.Tensor,
                      advice: str = "lower the learning rate") -> None:
    """Stop training at the first NaN or infinite loss or gradient norm, before the optimiser step spreads it.

    A non-finite loss or gradient turns every weight into NaN at the next step, and a NaN model fails silently
    later (it still samples, scores and saves). `grad_norms` are what clip_grad_norm_ returned (the norm before
    clipping), so the check costs one comparison per step and no extra pass.
    """
    values = torch.stack([loss.detach().float().reshape(()), *(n.float().reshape(()) for n in grad_norms)])
    if not torch.isfinite(values).all():
        loss_value, *norms = values.tolist()
        norm_word = "gradient norms" if len(norms) > 1 else "gradient norm"
        raise TrainingDiverged(f"{stage} training diverged at {where}: the loss is {loss_value:.4g} and the "
                               f"{norm_word} {', '.join(f'{n:.4g}' for n in norms)}. Nothing was saved; {advice}.")
