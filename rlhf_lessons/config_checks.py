"""Checking a training config's numbers before any work starts: finite, whole where counted, and in range.

`nan < 0` is False, so a test like `if cfg.lr < 0` lets NaN through, and NaN then trains a NaN model. Each config
dataclass (SFTConfig, RewardConfig, PPOConfig, PretrainConfig) lists a `Bounds` for its numbers; `setting_problems`
checks every number of the dataclass against them, and `refuse_bad_settings` raises one ConfigError naming every
setting that is wrong, with its value.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from .errors import ConfigError

# torch.manual_seed takes at most 64 bits, and the stages derive further seeds from a seed (labeling: seed * 1009 +
# ...): 32 bits leave room for that, and match the CLI's --seed
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """The allowed range of one setting: low <= value <= high (strictly above low when `above` is True)."""

    low: float = -math.inf
    high: float = math.inf
    above: bool = False  # True: `low` itself is not allowed (a learning rate must be > 0, not >= 0)
    note: str = ""  # what the range means, shown in the message

    def allows(self, value) -> bool:
        return (value > self.low if self.above else value >= self.low) and value <= self.high

    def describe(self) -> str:
        low = f"> {_show(self.low)}" if self.above else f">= {_show(self.low)}"
        high = f"<= {_show(self.high)}"
        text = low if self.high == math.inf else high if self.low == -math.inf else f"{low} and {high}"
        return f"{text} ({self.note})" if self.note else text


def _show(bound: float) -> str:
    """1 rather than 1.0, and the largest seed in full."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


ANY = Bounds()  # any finite number
POSITIVE = Bounds(0, above=True)  # learning rates, temperatures, norms
NON_NEGATIVE = Bounds(0)  # weight decay, a loss weight, warm-up steps
AT_LEAST_ONE = Bounds(1)  # counts that must do something: epochs, steps, batch sizes
FRACTION = Bounds(0, 1)
SEED = Bounds(0, SEED_MAX)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def setting_problems(cfg, bounds: dict[str, Bounds]) -> list[str]:
    """One line per bad number in the dataclass `cfg`, like "peak_lr must be a finite number (got nan)".

    Every number must be finite; a field whose default is an int must hold a whole number; a field named in
    `bounds` must hold a number in its range (or None, where None is its default: "not set"); a field whose default
    is True or False (a switch such as PPOConfig.packed) must hold True or False.
    """
    problems = []
    for field in fields(cfg):
        name, value, default = field.name, getattr(cfg, field.name), field.default
        if isinstance(default, bool):  # "no" or 0 would otherwise pass silently as a truthy or falsy switch
            if not isinstance(value, bool):
                problems.append(f"{name} must be True or False (got {value!r})")
            continue
        if name not in bounds and not _is_number(value):
            continue  # a string or None: not this check's business
        if value is None and default is None:
            continue
        counted = isinstance(default, int) and not isinstance(default, bool)
        if not _is_number(value) or (counted and not isinstance(value, numbers.Integral)):
            kind = "a whole number" if counted else "a number"
            problems.append(f"{name} must be {kind} (got {value!r})")
        elif not math.isfinite(value):
            problems.append(f"{name} must be a finite number (got {value!r})")
        elif name in bounds and not bounds[name].allows(value):
            problems.append(f"{name} must be {bounds[name].describe()} (got {value!r})")
    return problems


def refuse_bad_settings(what: str, problems: list[str]) -> None:
    """Raise one ConfigError listing every problem, so the user can fix them all at once."""
    if problems:
        raise ConfigError(f"bad {what} settings: " + "; ".join(problems) + ".")
