"""Where the course keeps what learners make: checkpoints, labels, logs.

The shipped data (world files, tokenizer, base model) lives in the repository's `data/` folder and is read-only.
Everything a lesson or command produces goes into the *workspace*: `$RLHF_LESSONS_HOME` when set, else
`~/.rlhf-lessons`. Inside it, each stage writes a folder named after itself (`sft/`, `rm/`, `ppo/`) and the
preference store is `preferences.sqlite`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR.parent / "data"  # the repository's shipped data
BASE_MODEL_DIR = DATA_DIR / "base"
WORLD_DIR = DATA_DIR / "world"

STAGE_NAMES = ("sft", "rm", "ppo")  # checkpoint names a learner can pass instead of a path


def workspace_dir() -> Path:
    """The workspace folder (created if missing): $RLHF_LESSONS_HOME or ~/.rlhf-lessons."""
    root = Path(os.environ.get("RLHF_LESSONS_HOME") or Path.home() / ".rlhf-lessons").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def stage_dir(name: str) -> Path:
    """Default folder of a stage's checkpoint in the workspace, e.g. stage_dir('sft')."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}: expected one of {STAGE_NAMES}")
    return workspace_dir() / name
